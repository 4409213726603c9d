#![no_main]
//! Compression configs (JSON): parsing, validation, seed resolution.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::config_json(data);
});
