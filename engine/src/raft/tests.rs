//! Unit tests of the core: one per rule, each citing the paper.
