//! Tokenizers for evaluation, built with the `tokenizers` crate: byte-level BPE from a GGUF's
//! `tokenizer.ggml.*` metadata (as llama.cpp reads it), or a Hugging Face `tokenizer.json`.

use crate::model::Meta;
use tenpak::error::{Error, Result};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{PreTokenizerWrapper, Tokenizer};

/// Text to token ids, no BOS added and special tokens not parsed.
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl TextTokenizer {
    /// The model's own tokenizer: GGUF metadata (`gguf.tokenizer.ggml.*`) or `tokenizer.json`.
    pub fn from_meta(meta: &Meta) -> Result<TextTokenizer> {
        match meta {
            Meta::Gguf(_) => Self::from_gguf(meta),
            Meta::Hf { tokenizer, .. } => {
                let json = tokenizer.as_deref().ok_or_else(|| {
                    Error::input("the model has no tokenizer.json (and none is stored in the .tpk)")
                })?;
                let inner = parse_json(json)?;
                Ok(TextTokenizer { inner })
            }
        }
    }

    fn from_gguf(meta: &Meta) -> Result<TextTokenizer> {
        let model = meta.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::new(
                tenpak::ErrorKind::Unsupported,
                format!(
                    "GGUF tokenizer model '{model}': only byte-level BPE ('gpt2') is supported"
                ),
            ));
        }
        let tokens = meta.strings("tokenizer.ggml.tokens")?;
        let merges = meta.strings("tokenizer.ggml.merges")?;
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| Error::bad_file(format!("merge '{m}' has no space")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| Error::bad_file(format!("GGUF tokenizer: {e}")))?;
        // llama.cpp's pre-tokenizer for this family: every \p{N} alone, then GPT-2's byte-level
        // regex with no prefix space.
        let pre = match meta.str("tokenizer.ggml.pre").unwrap_or("default") {
            "smollm" | "default" | "gpt-2" | "gpt2" => Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, true)),
            ]),
            other => {
                return Err(Error::new(
                    tenpak::ErrorKind::Unsupported,
                    format!("GGUF pre-tokenizer '{other}' is not supported (smollm is)"),
                ))
            }
        };
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre));
        inner.with_decoder(Some(ByteLevel::default()));
        Ok(TextTokenizer { inner })
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| Error::input(format!("tokenize: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The underlying tokenizer (for encoders that need attention masks and truncation).
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

/// A `tokenizer.json`, parsed by the tokenizers crate. Some malformed files make that crate
/// panic rather than fail (fuzzing found `expect("Helper")` on a bad `decoder`); the panic is
/// caught and reported as the input error it is. The panic hook is silenced meanwhile, so the
/// user sees one error line, not a backtrace.
pub fn parse_json(json: &str) -> Result<Tokenizer> {
    let tok = match quietly(|| Tokenizer::from_bytes(json.as_bytes())) {
        Some(Ok(t)) => t,
        Some(Err(e)) => return Err(Error::input(format!("tokenizer.json: {e}"))),
        None => {
            return Err(Error::input(
                "tokenizer.json: malformed (the tokenizers library could not read it)",
            ))
        }
    };
    // A file can parse and still panic on every encode (a post-processor template naming a
    // token the vocabulary lacks, also found by fuzzing): one trial sentence refuses it now
    // rather than mid-evaluation.
    match quietly(|| tok.encode("Hello, world! 12 tokens.", true)) {
        Some(_) => Ok(tok),
        None => Err(Error::input(
            "tokenizer.json: malformed (encoding a test sentence failed inside the tokenizers library)",
        )),
    }
}

/// `f()`, or `None` if it panicked, with the panic hook silenced meanwhile (called before any
/// worker thread runs, so the hook swap is not raced).
fn quietly<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> Option<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(f);
    std::panic::set_hook(hook);
    r.ok()
}
