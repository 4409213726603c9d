#![no_main]
//! The vq decoder: codebooks in the params or the payload, packed indices.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::decode_codec("vq", data);
});
