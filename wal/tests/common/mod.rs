//! Test support: run a future on a fresh glommio executor, small configs,
//! a log of one group written to real segments, the `coraft-wal` binary.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;

use coraft_wal::recovery::list_segments;
use coraft_wal::{Config, Error, Wal};
use glommio::{LocalExecutorBuilder, Placement};

/// Runs `make()` to completion on a new executor on this thread; the
/// executor (and every task on it) ends when this returns.
pub fn run<T, F: Future<Output = T>>(make: impl FnOnce() -> F) -> T {
    LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .expect("glommio executor")
        .run(make())
}

/// A config with small segments so tests rotate often.
pub fn small_config() -> Config {
    Config {
        segment_bytes: 64 << 10,
        record_bytes_max: 16 << 10,
        batch_bytes_max: 32 << 10,
        pending_bytes_max: 8 << 20,
        ..Config::default()
    }
}

/// A payload that tells which (group, index, term) wrote it.
pub fn payload(group: u64, index: u64, term: u64) -> Vec<u8> {
    let len = ((group * 31 + index * 7) % 200) as usize;
    let mut bytes = format!("g{group}i{index}t{term}").into_bytes();
    bytes.resize(bytes.len() + len, (index % 251) as u8);
    bytes
}

/// Appends entries 1..=count of group 1 (synced every 10), closes, and
/// returns the segment files, oldest first.
pub fn write_log(dir: &Path, count: u64) -> Vec<(u64, PathBuf)> {
    run(|| async {
        let (wal, _) = Wal::open(dir, small_config()).await.unwrap();
        for index in 1..=count {
            wal.append_entry(1, index, 1, 0, &[index as u8; 1000]).unwrap();
            if index % 10 == 0 {
                wal.sync().await.unwrap();
            }
        }
        wal.close().await.unwrap();
    });
    list_segments(dir).unwrap()
}

/// The error opening the WAL in `dir` fails with (panics if it opens).
pub fn open_error(dir: &Path) -> Error {
    run(|| async {
        match Wal::open(dir, small_config()).await {
            Ok(_) => panic!("the WAL opened"),
            Err(error) => error,
        }
    })
}

/// Group 1's last index after opening the WAL in `dir` (0 if none).
pub fn last_index_after_open(dir: &Path) -> u64 {
    run(|| async {
        let (wal, _) = Wal::open(dir, small_config()).await.unwrap();
        let last = wal.group_state(1).map_or(0, |state| state.last_index);
        wal.close().await.unwrap();
        last
    })
}

/// Runs `coraft-wal ARGS`; returns success and stdout + stderr.
pub fn tool(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_coraft-wal"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}
