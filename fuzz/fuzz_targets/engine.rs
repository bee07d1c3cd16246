//! Fuzz the shard engine with sequences of frames, time steps and snapshot
//! swaps; the program and its invariants are in
//! `tests/engine_harness/fuzz.rs` (also run as a proptest by
//! `tests/engine_rules.rs`, so they run in CI without cargo-fuzz).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/engine_harness/mod.rs"]
mod engine_harness;

fuzz_target!(|data: &[u8]| {
    let _ = engine_harness::fuzz::run(data);
});
