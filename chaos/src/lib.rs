//! coraft's Jepsen-style suite, first slice: the operation history that
//! clients record and the checkers that judge it.
//!
//! * [`history`]: invocations and completions on one monotonic clock, with
//!   ok / failed / unknown outcomes, stored as JSON lines.
//! * [`linearizable`]: per-key read/write/compare-and-set registers checked
//!   for linearizability (Wing & Gong search with Lowe's memoization).
//! * [`counter`]: fetch-and-increment counters checked by bounds.
//!
//! Processes, the nemesis and the binary come in later slices.
#![deny(missing_docs)]

pub mod counter;
pub mod history;
pub mod linearizable;

pub use history::{Completion, Event, History, HistoryError, Key, Operation, Outcome, ProcessId, Value};
