//! safetensors reader: single files and sharded models, memory-mapped.

use super::{fp8, map_file, TensorInfo, TensorSource};
use crate::dtype::DType;
use crate::error::{Error, ErrorKind, Result};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

struct Entry {
    file: usize,
    range: Range<usize>,
    /// FP8 block scales (file, byte range, dtype, dims) consumed by this tensor.
    scale: Option<(usize, Range<usize>, DType, Vec<u64>)>,
    src_dtype: DType,
}

/// One or more safetensors files seen as one model.
pub struct SafetensorsSource {
    files: Vec<(PathBuf, memmap2::Mmap)>,
    infos: Vec<TensorInfo>,
    entries: Vec<Entry>,
    description: String,
    /// The model folder, when the model was opened as one (its small files are kept).
    model_dir: Option<PathBuf>,
}

struct Raw {
    name: String,
    dims: Vec<u64>,
    dtype: DType,
    file: usize,
    range: Range<usize>,
}

fn read_file(path: &Path, file: usize) -> Result<(memmap2::Mmap, Vec<Raw>)> {
    let map = map_file(path)?;
    let raws = parse_header(&map, file).map_err(|e| e.with_file(path))?;
    Ok((map, raws))
}

fn parse_header(bytes: &[u8], file: usize) -> Result<Vec<Raw>> {
    let (n, meta) = ::safetensors::SafeTensors::read_metadata(bytes).map_err(|e| {
        Error::bad_file(format!(
            "not a valid safetensors file: {}",
            diagnose(bytes).unwrap_or_else(|| e.to_string())
        ))
    })?;
    let base = 8 + n;
    let mut out = Vec::new();
    for (name, info) in meta.tensors() {
        let dt_name = format!("{:?}", info.dtype);
        let dtype = DType::from_name(&dt_name).map_err(|_| {
            Error::new(
                ErrorKind::Unsupported,
                format!("dtype {dt_name} is not supported"),
            )
            .with_tensor(&name)
        })?;
        let (b, e) = info.data_offsets;
        out.push(Raw {
            name,
            dims: info.shape.iter().map(|&d| d as u64).collect(),
            dtype,
            file,
            range: base + b..base + e,
        });
    }
    Ok(out)
}

/// What is wrong with a header the safetensors crate refused, naming the tensor: its messages
/// ("invalid shape, data type, or offset for tensor") do not say which. `None` when the fault is
/// not a tensor's (the header itself).
fn diagnose(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let header = bytes.get(8..8usize.checked_add(usize::try_from(n).ok()?)?)?;
    let v: serde_json::Value = serde_json::from_slice(header).ok()?;
    let data_len = (bytes.len() - 8 - header.len()) as u64;
    let mut spans = Vec::new();
    for (name, t) in v.as_object()? {
        if name == "__metadata__" {
            continue;
        }
        let dtype = t.get("dtype").and_then(|d| d.as_str()).unwrap_or("");
        let shape: Option<Vec<u64>> = t
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|x| x.as_u64()).collect());
        let offsets: Option<Vec<u64>> = t
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|x| x.as_u64()).collect());
        let (Some(shape), Some([b, e])) = (shape, offsets.as_deref()) else {
            return Some(format!("tensor '{name}': no valid shape or data_offsets"));
        };
        let (b, e) = (*b, *e);
        let Ok(dt) = DType::from_name(dtype) else {
            continue; // reported by the reader with the dtype's name
        };
        if b > e || e > data_len {
            return Some(format!(
                "tensor '{name}': data_offsets [{b}, {e}] past the end of the {data_len} data bytes"
            ));
        }
        let want = tpk_format::checked_numel(&shape).and_then(|k| k.checked_mul(dt.size() as u64));
        if want != Some(e - b) {
            return Some(format!(
                "tensor '{name}': shape {shape:?} of {dtype} needs {} bytes, data_offsets give {}",
                want.map_or("too many".to_string(), |w| w.to_string()),
                e - b
            ));
        }
        spans.push((b, e, name.clone()));
    }
    spans.sort();
    let mut at = 0;
    for (b, e, name) in &spans {
        if *b != at {
            return Some(format!(
                "tensor '{name}': data starts at {b}, the previous tensor ends at {at} (gap or overlap)"
            ));
        }
        at = *e;
    }
    (at != data_len).then(|| {
        format!(
            "the tensors' data ends at byte {at} of {data_len}: trailing bytes no tensor covers"
        )
    })
}

/// Pair FP8 weights with their `<name>_scale_inv` block scales: `scale_of[w]` is the index of
/// weight `w`'s scale tensor. A scale of the wrong shape is an error naming the weight (with the
/// index of the scale, to name its file).
fn pair_scales(raws: &[Raw]) -> std::result::Result<Vec<Option<usize>>, (Error, usize)> {
    let by_name: HashMap<&str, usize> = raws
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let mut scale_of = vec![None; raws.len()];
    for (i, r) in raws.iter().enumerate() {
        let Some(&w) = r
            .name
            .strip_suffix("_scale_inv")
            .and_then(|b| by_name.get(b))
        else {
            continue;
        };
        if matches!(raws[w].dtype, DType::F8E4M3 | DType::F8E5M2) {
            fp8::check_shapes(&raws[w].dims, &r.dims, r.dtype)
                .map_err(|e| (e.with_tensor(&raws[w].name), i))?;
            scale_of[w] = Some(i);
        }
    }
    Ok(scale_of)
}

/// Parse safetensors bytes as the reader does, pair FP8 scales, and dequantize every small FP8
/// weight (fuzzing).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_parse(bytes: &[u8], max_elems: u64) -> Result<usize> {
    let raws = parse_header(bytes, 0)?;
    let scale_of = pair_scales(&raws).map_err(|(e, _)| e)?;
    for (w, s) in raws.iter().zip(&scale_of) {
        let Some(s) = s.map(|s| &raws[s]) else {
            continue;
        };
        if tpk_format::checked_numel(&w.dims).is_some_and(|n| n <= max_elems) {
            let (wb, sb) = (&bytes[w.range.clone()], &bytes[s.range.clone()]);
            fp8::dequantize(wb, w.dtype, &w.dims, sb, s.dtype, &s.dims)?;
        }
    }
    Ok(raws.len())
}

impl SafetensorsSource {
    /// Open one or more files as one model (tensor names must be unique across them).
    /// The model was opened as the folder `dir` (or its index): its small files (configs,
    /// tokenizer files, README) go into the `.tpk` with the weights, so that `decompress -o
    /// DIR/` can give back a loadable folder.
    pub fn in_model_dir(mut self, dir: &Path) -> Self {
        self.model_dir = Some(dir.to_path_buf());
        self
    }

    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        let mut raws = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            let (map, r) = read_file(p, i)?;
            files.push((p.clone(), map));
            raws.extend(r);
        }
        let desc = match paths {
            [one] => format!("safetensors {}", file_name(one)),
            _ => format!("safetensors, {} shards", paths.len()),
        };
        Self::build(files, raws, desc)
    }

    /// Open a sharded model from its `model.safetensors.index.json`.
    pub fn open_sharded(index: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(index).map_err(|e| Error::io("read", e).with_file(index))?;
        let (shard_names, wanted) = parse_index(&text).map_err(|e| e.with_file(index))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let paths: Vec<PathBuf> = shard_names.iter().map(|s| dir.join(s)).collect();
        for p in &paths {
            if !p.is_file() {
                return Err(Error::input(format!(
                    "shard {} named by the index is missing",
                    file_name(p)
                ))
                .with_file(index));
            }
        }
        let src = Self::open_files(&paths)?;
        // Every tensor the index names must be in the shard it names.
        let present: HashMap<&str, usize> = src
            .infos
            .iter()
            .zip(&src.entries)
            .map(|(t, e)| (t.name.as_str(), e.file))
            .collect();
        for (name, file) in &wanted {
            let in_file = present.get(name.as_str()).copied().or_else(|| {
                // A consumed FP8 scale is no longer listed; look at the base tensor.
                name.strip_suffix("_scale_inv")
                    .and_then(|b| present.get(b).copied())
            });
            match in_file {
                Some(f) if file_name(&src.files[f].0) == *file => {}
                Some(_) => {
                    return Err(
                        Error::input(format!("tensor '{name}' is not in shard {file}"))
                            .with_file(index),
                    )
                }
                None => {
                    return Err(Error::input(format!(
                        "tensor '{name}' listed in the index is in no shard"
                    ))
                    .with_file(index))
                }
            }
        }
        Ok(SafetensorsSource {
            description: format!("safetensors, {} shards ({})", paths.len(), file_name(index)),
            ..src
        })
    }

    fn build(
        files: Vec<(PathBuf, memmap2::Mmap)>,
        mut raws: Vec<Raw>,
        description: String,
    ) -> Result<Self> {
        raws.sort_by(|a, b| a.name.cmp(&b.name));
        for w in raws.windows(2) {
            if w[0].name == w[1].name {
                return Err(Error::input(format!(
                    "tensor '{}' appears in both {} and {}",
                    w[0].name,
                    file_name(&files[w[0].file].0),
                    file_name(&files[w[1].file].0)
                )));
            }
        }
        let scale_of = pair_scales(&raws).map_err(|(e, r)| e.with_file(&files[raws[r].file].0))?;
        let consumed: Vec<bool> = {
            let mut c = vec![false; raws.len()];
            scale_of.iter().flatten().for_each(|&s| c[s] = true);
            c
        };
        let mut infos = Vec::new();
        let mut entries = Vec::new();
        for (i, r) in raws.iter().enumerate() {
            if consumed[i] {
                continue;
            }
            let mut source_bytes = r.range.len() as u64;
            let (dtype, scale) = match scale_of[i] {
                Some(s) => {
                    let sr = &raws[s];
                    source_bytes += sr.range.len() as u64;
                    (
                        DType::F32,
                        Some((sr.file, sr.range.clone(), sr.dtype, sr.dims.clone())),
                    )
                }
                None => (r.dtype, None),
            };
            infos.push(TensorInfo {
                name: r.name.clone(),
                dims: r.dims.clone(),
                dtype,
                source_dtype: r.dtype.name().to_string(),
                source_bytes,
            });
            entries.push(Entry {
                file: r.file,
                range: r.range.clone(),
                scale,
                src_dtype: r.dtype,
            });
        }
        Ok(SafetensorsSource {
            files,
            infos,
            entries,
            description,
            model_dir: None,
        })
    }
}

/// A `model.safetensors.index.json`: its shard file names (sorted, each once) and the shard
/// each tensor is in. Shard names that leave the folder are refused.
pub fn parse_index(text: &str) -> Result<(Vec<String>, BTreeMap<String, String>)> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::bad_file(format!("invalid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::bad_file("no \"weight_map\" object"))?;
    let mut shard_names: Vec<String> = Vec::new();
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| {
            Error::bad_file(format!("weight_map entry for '{name}' is not a file name"))
        })?;
        if file.is_empty() || file.contains('/') || file.contains('\\') || file.contains("..") {
            return Err(Error::bad_file(format!(
                "shard name '{file}' leaves the model folder"
            )));
        }
        if !shard_names.iter().any(|s| s == file) {
            shard_names.push(file.to_string());
        }
        wanted.insert(name.clone(), file.to_string());
    }
    shard_names.sort();
    Ok((shard_names, wanted))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

impl TensorSource for SafetensorsSource {
    fn describe(&self) -> String {
        self.description.clone()
    }
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }
    fn model_metadata(&self) -> Vec<(String, String)> {
        if let Some(dir) = &self.model_dir {
            return super::folder_files(dir);
        }
        let Some(dir) = self.files.first().and_then(|(p, _)| p.parent()) else {
            return Vec::new();
        };
        ["config.json", "tokenizer.json"]
            .iter()
            .filter_map(|name| {
                let text = std::fs::read_to_string(dir.join(name)).ok()?;
                // Only well-formed JSON of a size the container keeps in one string.
                (text.len() < (64 << 20)
                    && serde_json::from_str::<serde_json::Value>(&text).is_ok())
                .then(|| (format!("hf.{name}"), text))
            })
            .collect()
    }
    fn read(&self, i: usize, first: u64, count: u64, out: &mut Vec<u8>) -> Result<()> {
        let e = &self.entries[i];
        let map = &self.files[e.file].1;
        let info = &self.infos[i];
        let bytes = &map[e.range.clone()];
        out.clear();
        match &e.scale {
            None => {
                let part = super::element_range(bytes, info.dtype, first, count)?;
                out.extend_from_slice(part);
                let at = part.as_ptr() as usize - map.as_ptr() as usize;
                super::release_pages(map, at..at + part.len());
            }
            Some((f, r, sdt, sdims)) => {
                let scales = &self.files[*f].1[r.clone()];
                let part = super::element_range(bytes, e.src_dtype, first, count)?;
                let v = fp8::dequantize_range(
                    part,
                    first,
                    e.src_dtype,
                    &info.dims,
                    scales,
                    *sdt,
                    sdims,
                )
                .map_err(|err| err.with_tensor(&info.name))?;
                *out = v;
                let at = part.as_ptr() as usize - map.as_ptr() as usize;
                super::release_pages(map, at..at + part.len());
            }
        }
        Ok(())
    }
    fn release(&self, i: usize) {
        let e = &self.entries[i];
        super::release_pages(&self.files[e.file].1, e.range.clone());
        if let Some((f, r, _, _)) = &e.scale {
            super::release_pages(&self.files[*f].1, r.clone());
        }
    }
    fn data(&self, i: usize) -> Result<Cow<'_, [u8]>> {
        let e = &self.entries[i];
        let bytes = &self.files[e.file].1[e.range.clone()];
        match &e.scale {
            None => Ok(Cow::Borrowed(bytes)),
            Some((f, r, sdt, sdims)) => {
                let scales = &self.files[*f].1[r.clone()];
                fp8::dequantize(bytes, e.src_dtype, &self.infos[i].dims, scales, *sdt, sdims)
                    .map(Cow::Owned)
                    .map_err(|err| err.with_tensor(&self.infos[i].name))
            }
        }
    }
}
