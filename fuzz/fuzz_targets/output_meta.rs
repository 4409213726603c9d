#![no_main]
//! Metadata that decompress -o DIR/ and merge read: kept files and part descriptions.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::output_meta(data);
});
