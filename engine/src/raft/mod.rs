//! The pure Raft core.
