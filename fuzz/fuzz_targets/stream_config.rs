#![no_main]
//! Fuzz target `stream_config`: see `checks::stream_config`.

#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::stream_config(data));
