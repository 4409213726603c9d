#![no_main]
//! The byteplane decoder (plane headers, dictionaries, Huffman tables and streams, zstd planes).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::decode_codec("byteplane", data);
});
