#![no_main]
//! The safetensors reader and FP8 scale_inv dequantization.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::input_safetensors(data);
});
