#![no_main]
//! KV policy files and method specs (`kv compress --policy`, `--lossy`, `eval ppl --kv`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::kv_policy(data);
});
