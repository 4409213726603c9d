#![no_main]
//! A sharded model's `model.safetensors.index.json`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::sharded_index(data);
});
