//! Test support: run a future on a fresh glommio executor, small configs.
#![allow(dead_code)]

use std::future::Future;

use coraft_wal::Config;
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
