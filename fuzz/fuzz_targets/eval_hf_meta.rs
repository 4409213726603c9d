#![no_main]
//! A Hugging Face `config.json` and `tokenizer.json` (split at the first zero byte), checked
//! and tokenized as `eval` does before loading weights.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak_eval::fuzz_api::hf_meta(data);
});
