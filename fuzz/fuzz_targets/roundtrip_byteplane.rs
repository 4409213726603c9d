#![no_main]
//! byteplane must give back every input bit-exact.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::roundtrip("byteplane:zstd=always", data); tenpak::fuzz_api::roundtrip("byteplane", data);
});
