#![no_main]
//! Open a .tpk, check its layout, decode every chunk.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::container_open(data);
});
