//! Examples to learn coraft from, each run as real processes in separate
//! terminals (`docs/examples.md`):
//!
//! - [`counter`]: SOFAJRaft's counter — a replicated `i64` that clients add
//!   to and read linearizably — as `counter-server` (one per node) and
//!   `counter-client`.
#![deny(missing_docs)]

pub mod cli;
pub mod counter;
