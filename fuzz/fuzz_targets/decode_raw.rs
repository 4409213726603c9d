#![no_main]
//! The raw decoder on arbitrary params and payloads.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::decode_codec("raw", data);
});
