//! A model for evaluation: its f32 weights in memory and its metadata, read from a GGUF file, a
//! Hugging Face folder (`config.json`, `tokenizer.json`, safetensors) or a `.tpk` made from
//! either (decoded in memory, never written out).

use rayon::prelude::*;
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
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && magic == tpk_format::MAGIC
}

fn dims_usize(dims: &[u64]) -> Vec<usize> {
    dims.iter().map(|&d| d as usize).collect()
}

impl Model {
    /// Load MODEL: a GGUF file, a Hugging Face folder or safetensors file, or a `.tpk`.
    /// `base` is the base model a delta `.tpk` was made against.
    pub fn load(path: &Path, base: Option<&Path>) -> Result<Model> {
        if path.is_file() && is_tpk(path) {
            return Self::load_tpk(path, base);
        }
        let source = tenpak::input::open(path)?;
        let meta = Meta::from_pairs(
            source
                .model_metadata()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .map_err(|e| e.with_file(path))?;
        let infos = source.tensors();
        let tensors = (0..infos.len())
            .into_par_iter()
            .map(|i| {
                let t = &infos[i];
                let bytes = source.data(i)?;
                let mut v = Vec::new();
                dtype::to_f32(t.dtype, &bytes, &mut v);
                Ok((t.name.clone(), (dims_usize(&t.dims), v)))
            })
            .collect::<Result<HashMap<_, _>>>()
            .map_err(|e: Error| e.with_file(path))?;
        Ok(Model {
            description: source.describe(),
            meta,
            tensors,
        })
    }

    fn load_tpk(path: &Path, base: Option<&Path>) -> Result<Model> {
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
        let mut tensors = HashMap::new();
        for (i, t) in archive.file.tensors().iter().enumerate() {
            let (dt, bytes) = archive.decode_tensor(i).map_err(|e| e.with_file(path))?;
            let mut v = Vec::new();
            dtype::to_f32(dt, &bytes, &mut v);
            drop(bytes);
            tensors.insert(t.name.clone(), (dims_usize(&t.dims), v));
        }
        Ok(Model {
            description: format!(
                "tpk {}",
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            meta,
            tensors,
        })
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
