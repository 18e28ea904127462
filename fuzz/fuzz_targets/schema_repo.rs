#![no_main]
//! Fuzz target `schema_repo`: see `checks::schema_repo`.

#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::schema_repo(data));
