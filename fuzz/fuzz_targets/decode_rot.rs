#![no_main]
//! The rot wrapper: block, seed, the inner codec's params, then the inner payload rotated back.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::decode_codec("rot", data);
});
