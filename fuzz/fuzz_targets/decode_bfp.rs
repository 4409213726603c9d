#![no_main]
//! The Tenstorrent block-float decoders (bfp8, bfp4, bfp2) and fp0.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for c in ["bfp8", "bfp4", "bfp2", "fp0"] { tenpak::fuzz_api::decode_codec(c, data); }
});
