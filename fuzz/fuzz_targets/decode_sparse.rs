#![no_main]
//! The sparse storage decoder: inner codec params, bitmap or gap indices, inner payload.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::decode_codec("sparse", data);
});
