#![no_main]
//! KV caches in a safetensors file (LMCache's [layers, 2, tokens, kv_heads, head_dim]).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak::fuzz_api::kv_safetensors(data);
});
