#![no_main]
//! The calibration statistics reader (safetensors with tenpak.calibration metadata) and GPTQ's factorisation of what it reads.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::calibration(data);
});
