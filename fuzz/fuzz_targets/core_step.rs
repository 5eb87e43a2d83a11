//! Fuzzes the consensus core with a peer's messages: a `RaftCore` of a
//! three-voter group runs arbitrary ticks, proposals and persistence, and
//! steps arbitrary well-formed messages through `step_checked`; it must
//! never panic (`coraft::fuzzing::exercise_core`).
#![no_main]

use coraft::fuzzing::exercise_core;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    exercise_core(data);
});
