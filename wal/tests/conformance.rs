//! The WAL passes the log-storage conformance suite.

mod common;

use coraft_wal::{conformance, Wal};

#[test]
fn the_wal_passes_the_log_storage_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    common::run(|| conformance::run_all::<Wal>(dir.path()));
}
