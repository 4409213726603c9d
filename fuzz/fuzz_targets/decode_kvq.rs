#![no_main]
//! The kvq decoder: outlier gaps and values, group parameters, packed or zstd codes.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::decode_codec("kvq", data);
});
