#![no_main]
//! The GGUF reader and dequantizers.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::input_gguf(data);
});
