#![no_main]
//! The float conversion decoders (f32, f16, bf16).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for c in ["f32", "f16", "bf16"] { tenpak::fuzz_api::decode_codec(c, data); }
});
