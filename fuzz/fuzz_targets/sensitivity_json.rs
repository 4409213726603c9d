#![no_main]
//! The sensitivity file parser.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::sensitivity_json(data);
});
