//! A model for evaluation: its f32 weights in memory and its metadata, read from a GGUF file, a
//! Hugging Face folder (`config.json`, `tokenizer.json`, safetensors) or a `.tpk` made from
//! either (decoded in memory, never written out).

use std::collections::HashMap;
use std::path::Path;
use tenpak::dtype;
use tenpak::error::{Error, Result};
use tenpak::input::gguf::MetaValue;

/// Where a model's architecture and tokenizer are described.
pub enum Meta {
    /// GGUF metadata (keys without the `gguf.` prefix a `.tpk` stores them under).
    Gguf(HashMap<String, MetaValue>),
    /// A Hugging Face `config.json` and, if present, `tokenizer.json`.
    Hf {
        /// Parsed `config.json`.
        config: serde_json::Value,
        /// `tokenizer.json` text.
        tokenizer: Option<String>,
    },
}

impl Meta {
    /// Build from `.tpk`-style metadata pairs (`gguf.<key>` = JSON, `hf.config.json`, ...).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Meta> {
        let mut gguf = HashMap::new();
        let (mut config, mut tokenizer) = (None, None);
        for (k, v) in pairs {
            if let Some(key) = k.strip_prefix("gguf.") {
                let json: serde_json::Value = serde_json::from_str(v)
                    .map_err(|e| Error::bad_file(format!("metadata {k}: {e}")))?;
                let mv = MetaValue::from_json(&json)
                    .ok_or_else(|| Error::bad_file(format!("metadata {k}: not a GGUF value")))?;
                gguf.insert(key.to_string(), mv);
            } else if k == "hf.config.json" {
                config = Some(
                    serde_json::from_str(v)
                        .map_err(|e| Error::bad_file(format!("config.json: {e}")))?,
                );
            } else if k == "hf.tokenizer.json" {
                tokenizer = Some(v.to_string());
            }
        }
        if !gguf.is_empty() {
            Ok(Meta::Gguf(gguf))
        } else if let Some(config) = config {
            Ok(Meta::Hf { config, tokenizer })
        } else {
            Err(Error::input(
                "no model description: neither GGUF metadata nor a config.json (a .tpk made by an older tenpak lacks them; compress the model again)",
            ))
        }
    }

    fn gguf_value(&self, key: &str) -> Result<&MetaValue> {
        match self {
            Meta::Gguf(m) => m
                .get(key)
                .ok_or_else(|| Error::input(format!("GGUF metadata has no '{key}'"))),
            Meta::Hf { .. } => Err(Error::input(format!("'{key}' is GGUF metadata"))),
        }
    }

    /// A GGUF string value.
    pub fn str(&self, key: &str) -> Result<&str> {
        self.gguf_value(key)?
            .as_str()
            .ok_or_else(|| Error::bad_file(format!("GGUF metadata '{key}' is not a string")))
    }

    /// A GGUF array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<&str>> {
        self.gguf_value(key)?
            .as_array()
            .and_then(|a| a.iter().map(MetaValue::as_str).collect())
            .ok_or_else(|| Error::bad_file(format!("GGUF metadata '{key}' is not a string array")))
    }

    /// A numeric value: GGUF `key`, or `config.json`'s `hf_key`.
    pub fn num(&self, key: &str, hf_key: &str) -> Result<f64> {
        match self {
            Meta::Gguf(_) => self
                .gguf_value(key)?
                .as_f64()
                .ok_or_else(|| Error::bad_file(format!("GGUF metadata '{key}' is not a number"))),
            Meta::Hf { config, .. } => config
                .get(hf_key)
                .and_then(|v| v.as_f64())
                .ok_or_else(|| Error::input(format!("config.json has no number '{hf_key}'"))),
        }
    }

    /// The architecture: GGUF `general.architecture`, or `config.json`'s `model_type`.
    pub fn architecture(&self) -> Result<String> {
        match self {
            Meta::Gguf(_) => Ok(self.str("general.architecture")?.to_string()),
            Meta::Hf { config, .. } => config
                .get("model_type")
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| Error::input("config.json has no model_type")),
        }
    }
}

/// A model's weights as f32, by name, with its metadata.
pub struct Model {
    /// One line: what was loaded.
    pub description: String,
    /// Architecture and tokenizer.
    pub meta: Meta,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

fn is_tpk(path: &Path) -> bool {
    if tenpak::set::is_index(path) {
        return true;
    }
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && magic == tpk_format::MAGIC
}

fn dims_usize(dims: &[u64]) -> Vec<usize> {
    dims.iter().map(|&d| d as usize).collect()
}

/// A model opened but not loaded: its metadata read, no weight decoded. Callers check the
/// architecture and the tokenizer here, so a model they cannot run is refused at once.
pub struct ModelFile {
    /// One line: what is being loaded.
    pub description: String,
    /// Architecture and tokenizer.
    pub meta: Meta,
    path: std::path::PathBuf,
    weights: Weights,
}

enum Weights {
    Tpk(Box<tenpak::archive::Archive>),
    Source(Box<dyn tenpak::input::TensorSource>),
}

impl ModelFile {
    /// Open MODEL: a GGUF file, a Hugging Face folder or safetensors file, or a `.tpk`. `base`
    /// is the base model a delta `.tpk` was made against.
    pub fn open(path: &Path, base: Option<&Path>) -> Result<ModelFile> {
        if path.is_file() && is_tpk(path) {
            let mut archive = tenpak::archive::Archive::open(path)?;
            if let Some(b) = base {
                archive = archive.with_base(b)?;
            }
            let meta = Meta::from_pairs(
                archive
                    .file
                    .metadata()
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .map_err(|e| e.with_file(path))?;
            return Ok(ModelFile {
                description: format!(
                    "tpk {}",
                    path.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
                meta,
                path: path.to_path_buf(),
                weights: Weights::Tpk(Box::new(archive)),
            });
        }
        let source = tenpak::input::open(path)?;
        let meta = Meta::from_pairs(
            source
                .model_metadata()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .map_err(|e| e.with_file(path))?;
        Ok(ModelFile {
            description: source.describe(),
            meta,
            path: path.to_path_buf(),
            weights: Weights::Source(source),
        })
    }

    /// Decode every weight to f32. Each tensor is decoded (or read) piece by piece straight
    /// into its own f32 buffer and the file's pages are let go of as they are read, so memory
    /// peaks at the f32 model plus a few pieces.
    pub fn load(self) -> Result<Model> {
        let path = self.path;
        let tensors = match self.weights {
            Weights::Tpk(archive) => {
                let mut tensors = HashMap::new();
                for (i, t) in archive.file.tensors().iter().enumerate() {
                    let n = t.numel().unwrap_or(0) as usize;
                    let mut v = vec![0f32; n];
                    let mut piece = Vec::new();
                    let dt = archive.decoded_dtype(i).map_err(|e| e.with_file(&path))?;
                    let mut got = 0usize;
                    archive
                        .decode_pieces(i, &mut |first, bytes| {
                            // Widened a slice at a time: no f32 copy of the whole piece.
                            let es = dt.size();
                            for (k, part) in bytes.chunks(es * PIECE_ELEMS as usize).enumerate() {
                                dtype::to_f32(dt, part, &mut piece);
                                let at = first as usize + k * PIECE_ELEMS as usize;
                                let dst = v.get_mut(at..at + piece.len()).ok_or_else(|| {
                                    Error::internal("a decoded piece past the tensor's end")
                                })?;
                                dst.copy_from_slice(&piece);
                                got += piece.len();
                            }
                            Ok(())
                        })
                        .map_err(|e| e.with_file(&path))?;
                    if got != n {
                        return Err(Error::internal(format!(
                            "tensor '{}': {got} of {n} elements decoded",
                            t.name
                        )));
                    }
                    tensors.insert(t.name.clone(), (dims_usize(&t.dims), v));
                }
                tensors
            }
            Weights::Source(source) => {
                // One tensor after another on this thread: the buffers then come from one
                // allocator arena, whose space the architecture's later rearranging reuses
                // (loaded from worker threads, the freed originals stayed resident, +60 %).
                let mut tensors = HashMap::new();
                for (i, t) in source.tensors().iter().enumerate() {
                    // Read a piece at a time (file pages let go of as read), widened into v.
                    let mut v = Vec::new();
                    tenpak::values::Values::Source(&*source, i)
                        .f32s(t, 0, t.numel(), &mut v)
                        .map_err(|e| e.with_file(&path))?;
                    tensors.insert(t.name.clone(), (dims_usize(&t.dims), v));
                }
                tensors
            }
        };
        Ok(Model {
            description: self.description,
            meta: self.meta,
            tensors,
        })
    }
}

/// Refuse, from the metadata alone, a model that `task` cannot run: an architecture other than
/// llama and BERT, a llama whose hyperparameters or tokenizer tenpak does not handle (say, a
/// SentencePiece GGUF), a BERT config it cannot follow or without a readable tokenizer.json. Called before any weight is decoded.
pub fn precheck(meta: &Meta, task: &str) -> Result<()> {
    match meta.architecture()?.as_str() {
        "llama" => {
            crate::llama::LlamaConfig::from_meta(meta)?;
            crate::tokenizer::TextTokenizer::from_meta(meta)?;
            Ok(())
        }
        "bert" => {
            let cfg = crate::bert::BertConfig::from_meta(meta)?;
            crate::bert::tokenizer(meta, cfg.max_positions).map(|_| ())
        }
        a => Err(Error::new(
            tenpak::ErrorKind::Unsupported,
            format!("architecture '{a}': {task} runs llama and bert models"),
        )),
    }
}

/// Elements read from a source file at a time while loading.
const PIECE_ELEMS: u64 = 1 << 20;

impl Model {
    /// Load MODEL: a GGUF file, a Hugging Face folder or safetensors file, or a `.tpk`.
    /// `base` is the base model a delta `.tpk` was made against.
    pub fn load(path: &Path, base: Option<&Path>) -> Result<Model> {
        ModelFile::open(path, base)?.load()
    }

    /// Take tensor `name` out of the model, checking its shape.
    pub fn take(&mut self, name: &str, dims: &[usize]) -> Result<Vec<f32>> {
        let (d, v) = self
            .tensors
            .remove(name)
            .ok_or_else(|| Error::input(format!("the model has no tensor '{name}'")))?;
        if d != dims {
            return Err(Error::input(format!(
                "tensor '{name}' has shape {d:?}, the architecture needs {dims:?}"
            ))
            .with_tensor(name));
        }
        Ok(v)
    }

    /// Whether the model has tensor `name`.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Parameter count of the remaining tensors.
    pub fn params(&self) -> u64 {
        self.tensors.values().map(|(_, v)| v.len() as u64).sum()
    }
}
