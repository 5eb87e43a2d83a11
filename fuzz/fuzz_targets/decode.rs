//! Fuzzes the frame decoder: arbitrary bytes, cut into arbitrary read sizes,
//! must only ever produce validated frames or an error, never a panic. Every
//! frame handed out is read through its accessors, as the engine would.
#![no_main]

use coraft_net::fuzzing::exercise_decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    exercise_decoder(data);
});
