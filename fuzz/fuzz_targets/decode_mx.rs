#![no_main]
//! The microscaling FP4 decoders (mxfp4, nvfp4).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for c in ["mxfp4", "nvfp4"] { tenpak::fuzz_api::decode_codec(c, data); }
});
