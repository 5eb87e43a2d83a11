//! Polled I/O: by default the WAL keeps its segment writes off glommio's
//! IOPOLL ring, where an in-flight write keeps the executor spinning.
//! Checked with glommio's own per-ring I/O counters, on the real file system.

mod common;

use coraft_wal::{Config, Wal, POLL_PROBE_FILE_NAME};

use common::run;

/// Appends and syncs a few entries; returns the file writes glommio counted
/// on its (main, poll) rings meanwhile.
async fn writes_per_ring(config: Config) -> (u64, u64) {
    let dir = tempfile::tempdir().expect("a temp dir");
    // Counters start from here (reading them resets them).
    let _ = glommio::executor().io_stats();
    let (wal, _) = Wal::open(dir.path(), config).await.expect("open");
    for index in 1..=20u64 {
        wal.append_entry(1, index, 1, 0, &[7u8; 100]).expect("append");
        wal.sync().await.expect("sync");
    }
    wal.close().await.expect("close");
    let stats = glommio::executor().io_stats();
    assert!(
        !dir.path().join(POLL_PROBE_FILE_NAME).exists(),
        "the probe file is removed"
    );
    (stats.main_ring.file_writes().0, stats.poll_ring.file_writes().0)
}

#[test]
fn segment_writes_stay_off_the_poll_ring_by_default() {
    let (main, poll) = run(|| writes_per_ring(Config::default()));
    assert_eq!(poll, 0, "no write went to the polled ring");
    assert!(main >= 20, "the writes went to the main ring: {main}");
}

#[test]
fn polled_io_lets_glommio_choose_and_the_log_still_reads_back() {
    // Whether glommio then uses its poll ring depends on the kernel and the
    // device; what must hold either way is that every write lands.
    let config = Config {
        polled_io: true,
        ..Config::default()
    };
    let (main, poll) = run(|| writes_per_ring(config));
    assert!(main + poll >= 20, "main {main}, poll {poll}");
}
