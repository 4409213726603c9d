//! Multi-file `.tpk` sets (formats-spec/tpk.md §9): a model kept as several ordinary `.tpk` files
//! (`model-00001-of-00003.tpk`, ...) beside an index, `model.tpk.index.json`, shaped like
//! safetensors' `model.safetensors.index.json`: `{"metadata": {"format": "tpk", "total_size":
//! BYTES}, "weight_map": {TENSOR: FILE}}`. Each file holds whole tensors and the model's
//! metadata; the set's tensor order is the files' in name order, each file's in its own order.
//!
//! [`TpkSet`] opens a set, or one plain `.tpk`, as one container: what [`crate::archive::Archive`]
//! reads, so every reader (decompress, eval, inspect, verify, Python) takes either.
//! `tenpak merge --max-shard-size` writes sets (see [`crate::merge`]).

use crate::error::{clip, Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tpk_format::{FormatError, Header, Limits, TensorEntry, TpkFile, VerifyProblem};

/// How an index file's name ends.
pub const INDEX_SUFFIX: &str = ".tpk.index.json";

/// Largest index file read (the tensor names are most of it).
const MAX_INDEX_BYTES: u64 = 256 << 20;

/// Whether `path` names a set's index (`*.tpk.index.json`).
pub fn is_index(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.len() > INDEX_SUFFIX.len() && n.ends_with(INDEX_SUFFIX))
}

/// A parsed index: the files in name order, and each tensor's file (a position in that list).
#[derive(Debug)]
pub struct SetIndex {
    /// File names, sorted.
    pub files: Vec<String>,
    /// Tensor name -> position in `files`.
    pub map: HashMap<String, usize>,
}

/// Parse an index's text. Every file must be a plain `.tpk` name in the index's folder.
pub fn parse_index(text: &str) -> Result<SetIndex> {
    let bad = |why: String| Error::bad_file(format!("set index: {why}"));
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no weight_map object".into()))?;
    let mut by_tensor: BTreeMap<&str, &str> = BTreeMap::new();
    for (t, f) in map {
        let f = f
            .as_str()
            .ok_or_else(|| bad(format!("tensor '{}': file is not a string", clip(t))))?;
        let plain = f.ends_with(".tpk")
            && !f.starts_with('.')
            && !f.contains(['/', '\\', '\0'])
            && Path::new(f).file_name() == Some(std::ffi::OsStr::new(f));
        if !plain {
            return Err(bad(format!(
                "tensor '{}': '{}' is not a .tpk file name in the index's folder",
                clip(t),
                clip(f)
            )));
        }
        by_tensor.insert(t, f);
    }
    if by_tensor.is_empty() {
        return Err(bad("the weight_map is empty".into()));
    }
    let mut files: Vec<String> = by_tensor.values().map(|f| f.to_string()).collect();
    files.sort();
    files.dedup();
    let pos: HashMap<&str, usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.as_str(), i))
        .collect();
    let map = by_tensor
        .into_iter()
        .map(|(t, f)| (t.to_string(), pos[f]))
        .collect();
    Ok(SetIndex { files, map })
}

/// One `.tpk` file, or a set of them read as one.
#[derive(Debug)]
pub struct TpkSet {
    files: Vec<(PathBuf, TpkFile<memmap2::Mmap>)>,
    /// Sets only: every file's tensors, in the set's order (one file: its own list).
    tensors: Option<Vec<TensorEntry>>,
    /// Sets only: each tensor's (file, index in that file).
    at: Vec<(usize, usize)>,
}

impl TpkSet {
    /// One opened `.tpk` file.
    pub fn single(path: &Path, file: TpkFile<memmap2::Mmap>) -> TpkSet {
        TpkSet {
            files: vec![(path.to_path_buf(), file)],
            tensors: None,
            at: Vec::new(),
        }
    }

    /// Open a `.tpk` file, or a set through its index (`*.tpk.index.json`). A set's files must
    /// hold exactly the tensors the index gives them and the same metadata.
    pub fn open_path(path: &Path, limits: &Limits) -> Result<TpkSet> {
        if !is_index(path) {
            let f = TpkFile::open_path(path, limits).map_err(Error::from)?;
            return Ok(TpkSet::single(path, f));
        }
        let io = |e| Error::io("read the set index", e).with_file(path);
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_INDEX_BYTES {
            return Err(Error::bad_file(format!(
                "set index of {len} bytes (at most {MAX_INDEX_BYTES} are read)"
            ))
            .with_file(path));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let index = parse_index(&text).map_err(|e| e.with_file(path))?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let mut files = Vec::with_capacity(index.files.len());
        let mut tensors = Vec::new();
        let mut at = Vec::new();
        for (fi, name) in index.files.iter().enumerate() {
            let p = dir.join(name);
            let f = TpkFile::open_path(&p, limits).map_err(|e| Error::from(e).with_file(&p))?;
            if let Some((first_path, first)) = files.first() {
                let first: &TpkFile<memmap2::Mmap> = first;
                if f.metadata() != first.metadata() {
                    return Err(Error::bad_file(format!(
                        "its metadata differs from {}'s: files of different sets",
                        Path::new(first_path).display()
                    ))
                    .with_file(&p));
                }
            }
            for (ti, t) in f.tensors().iter().enumerate() {
                if index.map.get(&t.name) != Some(&fi) {
                    return Err(Error::bad_file(format!(
                        "tensor '{}' is in this file but the index puts it elsewhere",
                        clip(&t.name)
                    ))
                    .with_file(&p));
                }
                tensors.push(t.clone());
                at.push((fi, ti));
            }
            files.push((p, f));
        }
        if tensors.len() != index.map.len() {
            let here: std::collections::HashSet<&str> =
                tensors.iter().map(|t| t.name.as_str()).collect();
            let missing = index
                .map
                .iter()
                .find(|(t, _)| !here.contains(t.as_str()))
                .map(|(t, &f)| (t.clone(), index.files[f].clone()))
                .unwrap_or_default();
            return Err(Error::bad_file(format!(
                "tensor '{}' is not in {}, where the index puts it",
                clip(&missing.0),
                missing.1
            ))
            .with_file(path));
        }
        Ok(TpkSet {
            files,
            tensors: Some(tensors),
            at,
        })
    }

    /// The files: one, or the set's in order, with their paths.
    pub fn files(&self) -> impl Iterator<Item = (&Path, &TpkFile<memmap2::Mmap>)> {
        self.files.iter().map(|(p, f)| (p.as_path(), f))
    }

    /// The first file's header (a set's files are all written by one tenpak).
    pub fn header(&self) -> &Header {
        self.files[0].1.header()
    }

    /// The metadata, in key order (the same in every file of a set).
    pub fn metadata(&self) -> &[(String, String)] {
        self.files[0].1.metadata()
    }

    /// Value of a metadata key.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.files[0].1.meta(key)
    }

    /// Tensors in order.
    pub fn tensors(&self) -> &[TensorEntry] {
        match &self.tensors {
            Some(t) => t,
            None => self.files[0].1.tensors(),
        }
    }

    /// Bytes of all the files (the index not counted).
    pub fn file_len(&self) -> u64 {
        self.files.iter().map(|(_, f)| f.file_len()).sum()
    }

    fn locate(&self, tensor: usize) -> std::result::Result<(usize, usize), FormatError> {
        if self.tensors.is_none() {
            return Ok((0, tensor));
        }
        self.at
            .get(tensor)
            .copied()
            .ok_or_else(|| FormatError::Malformed(format!("no tensor #{tensor}")))
    }

    /// Payload of chunk `chunk` of tensor `tensor`, CRC-checked.
    pub fn chunk(&self, tensor: usize, chunk: usize) -> std::result::Result<&[u8], FormatError> {
        let (f, t) = self.locate(tensor)?;
        self.files[f].1.chunk(t, chunk)
    }

    /// Let go of the pages chunks `chunks` of tensor `tensor` occupy in this process.
    pub fn release_chunks(&self, tensor: usize, chunks: std::ops::Range<usize>) {
        if let Ok((f, t)) = self.locate(tensor) {
            self.files[f].1.release_chunks(t, chunks);
        }
    }

    /// Every file's padding problems (see [`TpkFile::verify_layout`]), a set's named by file.
    pub fn verify_layout(&self) -> Vec<VerifyProblem> {
        let mut out = Vec::new();
        for (p, f) in &self.files {
            for mut v in f.verify_layout() {
                if self.tensors.is_some() {
                    let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                    v.error = FormatError::Malformed(format!(
                        "{}: {}",
                        name.unwrap_or_default(),
                        v.error
                    ));
                }
                out.push(v);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_stay_in_the_folder() {
        let ok = r#"{"metadata": {"format": "tpk"}, "weight_map": {"a": "m-00002-of-00002.tpk", "b": "m-00001-of-00002.tpk"}}"#;
        let i = parse_index(ok).unwrap();
        assert_eq!(i.files, ["m-00001-of-00002.tpk", "m-00002-of-00002.tpk"]);
        assert_eq!((i.map["a"], i.map["b"]), (1, 0));
        for bad in [
            r#"{"weight_map": {"a": "../x.tpk"}}"#,
            r#"{"weight_map": {"a": "/etc/x.tpk"}}"#,
            r#"{"weight_map": {"a": "x.safetensors"}}"#,
            r#"{"weight_map": {"a": ".tpk"}}"#,
            r#"{"weight_map": {"a": 3}}"#,
            r#"{"weight_map": {}}"#,
            r#"{"metadata": {}}"#,
            "[]",
        ] {
            assert!(parse_index(bad).is_err(), "{bad}");
        }
        assert!(is_index(Path::new("d/m.tpk.index.json")));
        assert!(!is_index(Path::new(".tpk.index.json")));
        assert!(!is_index(Path::new("m.safetensors.index.json")));
    }
}
