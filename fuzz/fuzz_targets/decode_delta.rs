#![no_main]
//! The delta decoder: mode, base fingerprint, the value codec's params and payload.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::decode_codec("delta", data);
});
