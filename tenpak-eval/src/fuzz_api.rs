//! Entry points for the fuzz targets over what `eval` reads besides the weights: a Hugging
//! Face `config.json` and `tokenizer.json`, and a GGUF's architecture and tokenizer metadata.
//! Each runs the checks a model goes through before its weights are loaded
//! ([`crate::model::precheck`]) and, when they pass, tokenizes a short text. Errors are fine;
//! panics, hangs and runaway allocations are what the fuzzer looks for.

use crate::model::{precheck, Meta};

/// A short text with the cases tokenizers special-case: spaces, punctuation, digits, bytes
/// outside ASCII.
const TEXT: &str = "Hello, world! 12 345  tabs\tand ünïcödé — 漢字\n";

/// `config.json`, a zero byte, `tokenizer.json` (either part may be missing or empty).
pub fn hf_meta(data: &[u8]) {
    let (config, tokenizer) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let (Ok(config), Ok(tokenizer)) = (std::str::from_utf8(config), std::str::from_utf8(tokenizer))
    else {
        return;
    };
    let mut pairs = vec![("hf.config.json", config)];
    if !tokenizer.is_empty() {
        pairs.push(("hf.tokenizer.json", tokenizer));
    }
    if let Ok(meta) = Meta::from_pairs(pairs) {
        run(&meta);
    }
}

/// A GGUF file's bytes: its metadata (tensor data need not be present).
pub fn gguf_meta(data: &[u8]) {
    let Ok(meta) = tenpak::input::gguf::metadata_of(data) else {
        return;
    };
    let json: Vec<(String, String)> = meta
        .iter()
        .map(|(k, v)| (format!("gguf.{k}"), v.to_json().to_string()))
        .collect();
    if let Ok(meta) = Meta::from_pairs(json.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        run(&meta);
    }
}

fn run(meta: &Meta) {
    if precheck(meta, "fuzz").is_err() {
        return;
    }
    match meta.architecture().as_deref() {
        Ok("llama") => {
            if let Ok(tok) = crate::tokenizer::TextTokenizer::from_meta(meta) {
                let _ = tok.encode(TEXT);
            }
        }
        Ok("bert") => {
            if let Ok(tok) = crate::bert::tokenizer(meta, 64) {
                let _ = tok.encode(TEXT, true);
            }
        }
        _ => {}
    }
}
