//! The forget-group record (format version 3) on real segment files: a
//! forgotten group stays gone after a reopen, no longer holds segments
//! back, and a directory of version-2 segments still opens, with new
//! records going to a version-3 segment.

mod common;

use std::path::Path;

use common::{run, small_config, tool};
use coraft_wal::format::{decode_segment_header, encode_segment_header, FORMAT_VERSION, FORMAT_VERSION_MIN};
use coraft_wal::recovery::list_segments;
use coraft_wal::{HardState, Wal};

/// Group 1 writes a few entries and a hard state first; group 2 then fills
/// several segments and purges below its last entry, so only group 1 holds
/// the oldest segments.
async fn fill(wal: &Wal) {
    for index in 1..=5 {
        wal.append_entry(1, index, 1, 0, &[1; 500]).unwrap();
    }
    let state = HardState {
        term: 1,
        vote: 1,
        commit: 5,
    };
    wal.append_hard_state(1, state).unwrap();
    for index in 1..=300 {
        wal.append_entry(2, index, 1, 0, &[2; 1000]).unwrap();
        if index % 10 == 0 {
            wal.sync().await.unwrap();
        }
    }
    wal.purge(2, 299, 1).unwrap();
    wal.sync().await.unwrap();
}

fn segment_versions(dir: &Path) -> Vec<u32> {
    list_segments(dir)
        .unwrap()
        .iter()
        .map(|(_, path)| decode_segment_header(&std::fs::read(path).unwrap()).unwrap().version)
        .collect()
}

#[test]
fn a_forgotten_group_stays_gone_after_reopen_and_no_longer_holds_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (held, forgot_at) = run(|| async {
        let (wal, _) = Wal::open(&path, small_config()).await.unwrap();
        fill(&wal).await;
        // Before: group 1's records keep every segment.
        let segments = list_segments(&path).unwrap().len();
        assert!(segments > 3, "{segments} segments");
        assert_eq!(wal.delete_obsolete_segments().await.unwrap(), Vec::<u64>::new());
        assert_eq!(wal.oldest_holder().map(|holder| holder.group), Some(1));
        let forgot_at = wal.forget_group(1).unwrap();
        assert_eq!(wal.group_state(1), None);
        wal.close().await.unwrap();
        (segments, forgot_at)
    });
    run(|| async {
        let (wal, _) = Wal::open(&path, small_config()).await.unwrap();
        assert_eq!(wal.group_state(1), None, "the reopened WAL brought group 1 back");
        assert_eq!(wal.forgotten_groups(), [(1, forgot_at)]);
        assert!(wal.entries(1, 1..2, usize::MAX).is_err());
        assert_eq!(wal.group_state(2).unwrap().last_index, 300);
        let deleted = wal.delete_obsolete_segments().await.unwrap();
        assert!(!deleted.is_empty(), "group 1's segments were not deleted");
        assert_eq!(list_segments(&path).unwrap().len(), held - deleted.len());
        // The forget record is in the newest segment, which stays.
        assert_eq!(wal.forgotten_groups(), [(1, forgot_at)]);
        // Group 1 may write again: a new log, at any index.
        wal.append_entry(1, 40, 7, 0, b"again").unwrap();
        wal.close().await.unwrap();
    });
    run(|| async {
        let (wal, _) = Wal::open(&path, small_config()).await.unwrap();
        let state = wal.group_state(1).unwrap();
        assert_eq!((state.first_index, state.last_index, state.hard_state), (40, 40, None));
        wal.close().await.unwrap();
    });
}

#[test]
fn inspect_lists_removed_groups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(|| async {
        let (wal, _) = Wal::open(&path, small_config()).await.unwrap();
        wal.append_entry(4, 1, 1, 0, b"x").unwrap();
        wal.append_entry(5, 1, 1, 0, b"y").unwrap();
        wal.forget_group(4).unwrap();
        wal.close().await.unwrap();
    });
    let (ok, text) = tool(&["inspect", path.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains("groups: 1\n"), "{text}");
    assert!(
        text.contains("removed groups: 1\n  group 4: forgotten at lsn 3\n"),
        "{text}"
    );
    assert!(text.contains(&format!("format {FORMAT_VERSION}")), "{text}");
}

#[test]
fn version_2_segments_open_and_new_records_go_to_a_new_version_3_segment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(|| async {
        let (wal, _) = Wal::open(&path, small_config()).await.unwrap();
        for index in 1..=100 {
            wal.append_entry(1, index, 1, 0, &[index as u8; 1000]).unwrap();
        }
        wal.close().await.unwrap();
    });
    // What version-2 code wrote: the same layout, version 2 in the header.
    for (_, segment) in list_segments(&path).unwrap() {
        let bytes = std::fs::read(&segment).unwrap();
        let header = decode_segment_header(&bytes).unwrap();
        let old = encode_segment_header(&coraft_wal::format::SegmentHeader {
            version: FORMAT_VERSION_MIN,
            ..header
        });
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&segment).unwrap();
        file.write_all_at(&old, 0).unwrap();
    }
    let old_segments = list_segments(&path).unwrap().len();
    assert!(segment_versions(&path).iter().all(|&v| v == 2));
    run(|| async {
        let (wal, _) = Wal::open(&path, small_config()).await.unwrap();
        assert_eq!(wal.group_state(1).unwrap().last_index, 100);
        wal.append_entry(1, 101, 1, 0, b"new").unwrap();
        wal.forget_group(9).unwrap();
        wal.close().await.unwrap();
    });
    let versions = segment_versions(&path);
    assert_eq!(versions.len(), old_segments + 1, "{versions:?}");
    assert!(versions[..old_segments].iter().all(|&v| v == 2), "{versions:?}");
    assert_eq!(versions[old_segments], FORMAT_VERSION);
    run(|| async {
        let (wal, _) = Wal::open(&path, small_config()).await.unwrap();
        let entries = wal.entries(1, 99..102, usize::MAX).unwrap();
        assert_eq!(&*entries[0].payload, &[99u8; 1000][..]);
        assert_eq!(&*entries[2].payload, b"new");
        assert_eq!(wal.forgotten_groups().len(), 1);
        wal.close().await.unwrap();
    });
}
