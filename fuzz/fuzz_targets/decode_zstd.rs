#![no_main]
//! The zstd byte stage, capped at the expected size.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::decode_codec("zstd", data);
});
