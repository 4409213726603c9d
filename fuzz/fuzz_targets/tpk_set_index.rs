#![no_main]
//! A multi-file `.tpk` set's index (`model.tpk.index.json`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::tpk_set_index(data);
});
