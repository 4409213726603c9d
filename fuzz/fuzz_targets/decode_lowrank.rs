#![no_main]
//! The lowrank and tenpakx decoders: factors, codebook, the int residual's params and payload.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for c in ["lowrank", "tenpakx"] {
        tenpak::fuzz_api::decode_codec(c, data);
    }
});
