#![no_main]
//! Fuzz target `intake_body`: see `checks::intake_body`.

#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::intake_body(data));
