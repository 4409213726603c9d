#![no_main]
//! raw+zstd must give back every input bit-exact.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::roundtrip("zstd:level=1", data);
});
