#![no_main]
//! The grid decoder: level tables, f16 group scales, packed codes.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::decode_codec("grid", data);
});
