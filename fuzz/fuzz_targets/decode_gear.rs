#![no_main]
//! The gear decoder: mode byte, plane frames, the token-axis prefix sum.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::decode_codec("gear", data);
});
