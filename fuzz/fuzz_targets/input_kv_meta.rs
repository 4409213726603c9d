#![no_main]
//! KV dump meta JSON: parsing and the consistency checks.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::kv_meta(data);
});
