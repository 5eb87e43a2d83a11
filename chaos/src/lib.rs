//! coraft's Jepsen-style suite: real `coraft-node` processes hosting the KV
//! store, concurrent clients recording an operation history, a nemesis
//! killing and pausing nodes, and checkers that judge the history
//! (`docs/reliability.md`).
//!
//! * [`history`]: invocations and completions on one monotonic clock, with
//!   ok / failed / unknown outcomes, stored as JSON lines.
//! * [`linearizable`]: per-key read/write/compare-and-set registers checked
//!   for linearizability (Wing & Gong search with Lowe's memoization).
//! * [`second_opinion`]: the same registers judged again by `todc-utils`'s
//!   Wing–Gong–Lowe checker from crates.io; a disagreement fails the run.
//! * [`counter`]: fetch-and-increment counters checked by bounds.
//! * [`list_append`]: list-append histories checked for one order per key
//!   and no lost, duplicated or invented append.
//!
//! * [`cluster`]: the `coraft-node` processes of a run.
//! * [`workload`]: the client threads and the history recorder.
//! * [`nemesis`]: faults on a seeded schedule.
//! * [`storage`]: damage to a stopped node's WAL (the `storage` fault).
//! * [`netns`]: network namespaces for partitions.
//! * [`proxy`]: a fault-injecting TCP proxy per link (delay, reordering, resets, stalls).
//! * [`run`]: one whole run and its report (what `coraft-chaos` runs).
//! * [`soak`]: back-to-back checked rounds of random faults (`--soak`).
//! * [`campaign`]: every fault kind run many times, added up per kind (`campaign`).
//! * [`plot`]: the run's SVG (throughput and latency over time, faults marked).
#![deny(missing_docs)]

pub mod campaign;
pub mod cluster;
pub mod counter;
pub mod history;
pub mod linearizable;
pub mod list_append;
pub mod nemesis;
pub mod netns;
pub mod plot;
pub mod proxy;
pub mod rng;
pub mod run;
pub mod second_opinion;
pub mod soak;
pub mod storage;
pub mod workload;

/// Why a run could not be carried out (a violation is not an error: it is
/// in the [`run::RunReport`]).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The run could not be set up or the cluster did not recover.
    #[error("{0}")]
    Setup(String),
}

pub use history::{Completion, Event, History, HistoryError, Key, Operation, Outcome, ProcessId, Value};
