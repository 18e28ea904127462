#![no_main]
//! Fuzz target `batch_decode`: see `checks::batch_decode`.

#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::batch_decode(data));
