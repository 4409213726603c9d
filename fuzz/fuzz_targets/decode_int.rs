#![no_main]
//! The integer quantization decoders: `int` (every width, grouping and scale type the params
//! name) and `int4_residual`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for c in ["int", "int4_residual"] {
        tenpak::fuzz_api::decode_codec(c, data);
    }
});
