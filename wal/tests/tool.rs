//! The `coraft-wal` binary: inspect, verify and dump a real WAL directory.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::process::Command;

use common::{run, small_config};
use coraft_wal::format::BLOCK_BYTES;
use coraft_wal::recovery::list_segments;
use coraft_wal::Wal;

fn tool(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_coraft-wal"))
        .args(args)
        .output()
        .expect("run coraft-wal");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

fn write_log(dir: &std::path::Path) {
    run(|| async {
        let (wal, _) = Wal::open(dir, small_config()).await.unwrap();
        for index in 1..=1200 {
            wal.append_entry(index % 2, index / 2 + 1, 3, 1, &[index as u8; 100])
                .unwrap();
            if index % 100 == 0 {
                wal.sync().await.unwrap();
            }
        }
        wal.close().await.unwrap();
    });
}

#[test]
fn inspect_lists_segments_and_group_ranges() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let (ok, text) = tool(&["inspect", dir.path().to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains("last_lsn: 1200"), "{text}");
    assert!(text.contains("group 0: entries 2..=601"), "{text}");
    assert!(text.contains("group 1: entries 1..=600"), "{text}");
}

#[test]
fn verify_passes_a_healthy_log_and_names_the_segment_and_offset_of_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let path = dir.path().to_str().unwrap();
    let (ok, text) = tool(&["verify", path]);
    assert!(ok, "{text}");
    assert!(text.contains("1200 records"), "{text}");
    let first = &list_segments(dir.path()).unwrap()[0].1;
    let file = OpenOptions::new().write(true).open(first).unwrap();
    file.write_all_at(&[0xee], BLOCK_BYTES as u64 + 200).unwrap();
    let (ok, text) = tool(&["verify", path]);
    assert!(!ok, "{text}");
    // The flush marker (60 bytes), then 136-byte records: the second one.
    assert!(
        text.contains("segment 1 (file 00000000000000000001.wal) at offset 4292"),
        "{text}"
    );
}

#[test]
fn dump_prints_the_requested_entries_of_a_group() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let path = dir.path().to_str().unwrap();
    let (ok, text) = tool(&["dump", path, "--group", "1", "--from", "10", "--to", "12"]);
    assert!(ok, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("group 1 index 10 term 3 type 1"), "{text}");
}

#[test]
fn verify_reports_a_flipped_bit_in_a_synced_record_of_a_cleanly_stopped_log_as_corruption() {
    // The scenario: a cleanly closed log whose only segment was all
    // synced; one bit flipped near its middle.
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let config = coraft_wal::Config {
            segment_bytes: 1 << 20,
            ..small_config()
        };
        let (wal, _) = Wal::open(dir.path(), config).await.unwrap();
        for index in 1..=280 {
            wal.append_entry(1, index, 2, 0, &[index as u8; 100]).unwrap();
            if index % 10 == 0 {
                wal.sync().await.unwrap();
            }
        }
        wal.close().await.unwrap();
    });
    let segments = list_segments(dir.path()).unwrap();
    assert_eq!(segments.len(), 1);
    let path = &segments[0].1;
    let file = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, 20_000).unwrap();
    file.write_all_at(&[byte[0] ^ 0x10], 20_000).unwrap();
    let (ok, text) = tool(&["verify", dir.path().to_str().unwrap()]);
    assert!(!ok, "{text}");
    assert!(text.contains("corruption"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(!text.contains("torn tail"), "{text}");
}

#[test]
fn inspect_names_the_group_holding_segment_deletion_back_until_it_purges() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        for index in 1..=600 {
            for group in [4, 5, 6] {
                wal.append_entry(group, index, 1, 0, &[index as u8; 100]).unwrap();
            }
        }
        // Groups 4 and 6 purge most of their log; group 5 never does.
        wal.purge(4, 550, 1).unwrap();
        wal.purge(6, 590, 1).unwrap();
        assert_eq!(wal.delete_obsolete_segments().await.unwrap(), Vec::<u64>::new());
        wal.close().await.unwrap();
    });
    let (ok, text) = tool(&["inspect", path]);
    assert!(ok, "{text}");
    assert!(
        text.contains(
            "segment 1 (file 00000000000000000001.wal) held by group 5: needs entry 1 (lsn 2), never purged, \
             1800 records behind the newest purge"
        ),
        "{text}"
    );
    // Group 5 alone holds the oldest segment.
    let oldest_lines = text.lines().filter(|line| line.starts_with("  segment 1 (")).count();
    assert_eq!(oldest_lines, 1, "{text}");

    let deleted = run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        wal.purge(5, 600, 1).unwrap();
        let deleted = wal.delete_obsolete_segments().await.unwrap();
        wal.close().await.unwrap();
        deleted
    });
    assert_eq!(deleted.first(), Some(&1), "deleted {deleted:?}");
    let (ok, text) = tool(&["inspect", path]);
    assert!(ok, "{text}");
    assert!(!text.contains("00000000000000000001.wal"), "{text}");
    // Group 4's entry 551 is now the oldest record any group needs; group 5
    // holds only the current segment (its purge marker), never deleted anyway.
    let oldest = list_segments(dir.path()).unwrap()[0].0;
    let oldest_prefix = format!("  segment {oldest} (");
    assert!(
        !text
            .lines()
            .any(|line| line.starts_with(&oldest_prefix) && line.contains("held by group 5")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "segment {oldest} (file {oldest:020}.wal) held by group 4: needs entry 551"
        )),
        "{text}"
    );
}

#[test]
fn help_lists_every_command_and_option_and_bad_values_are_refused_by_name() {
    let output = Command::new(env!("CARGO_BIN_EXE_coraft-wal"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{help}");
    for command in ["inspect", "verify", "dump"] {
        assert!(
            help.lines().any(|line| line.trim_start().starts_with(command)),
            "--help lacks {command}:\n{help}"
        );
    }
    let (ok, help) = tool(&["dump", "--help"]);
    assert!(ok, "{help}");
    for option in [
        "--group <G>",
        "--from <I>",
        "--to <J>",
        "<DIR>",
        "first entry",
        "last entry",
    ] {
        assert!(help.contains(option), "dump --help lacks {option}:\n{help}");
    }
    let (ok, help) = tool(&["verify", "--help"]);
    assert!(ok && help.contains("--strict"), "{help}");

    let output = Command::new(env!("CARGO_BIN_EXE_coraft-wal"))
        .args(["dump", "/tmp", "--group", "one"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--group <G>") && stderr.contains("invalid digit"),
        "{stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_coraft-wal"))
        .args(["dump", "/tmp"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--group <G>") && stderr.contains("required"),
        "{stderr}"
    );
}
