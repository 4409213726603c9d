#![no_main]
//! A GGUF's metadata: architecture, hyperparameters and tokenizer, checked and tokenized as
//! `eval` does before loading weights.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tenpak_eval::fuzz_api::gguf_meta(data);
});
