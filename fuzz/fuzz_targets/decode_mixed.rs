#![no_main]
//! The mixed per-tile decoder: format table params, tile codes, per-format tile payloads.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::decode_codec("mixed", data);
});
