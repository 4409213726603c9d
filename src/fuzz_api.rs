//! Entry points shared by the `cargo fuzz` targets in `fuzz/` and the stable test that replays
//! the committed seeds and crash files (`tests/tests.rs`, module `fuzz_replay`). Each must return
//! normally for every input: errors are fine, panics and huge allocations are bugs.
//! Not a stable API.

use crate::codec::{entry_by_name, Codec, Pipeline, REGISTRY};
use crate::dtype::DType;
use tpk_format::{Limits, TpkFile};

/// Decoded-size cap while fuzzing.
const MAX_BYTES: u64 = 1 << 20;

/// Open a `.tpk` from bytes, check the layout, decode every chunk of every tensor.
pub fn container_open(data: &[u8]) {
    let limits = Limits::small();
    let Ok(f) = TpkFile::open(data, &limits) else {
        return;
    };
    let _ = f.verify_layout();
    for (i, t) in f.tensors().iter().enumerate() {
        let Ok(dtype) = DType::from_name(&t.dtype) else {
            continue;
        };
        let Ok(p) = Pipeline::from_stages(&t.stages) else {
            continue;
        };
        for (c, ch) in t.chunks.iter().enumerate() {
            if let Ok(payload) = f.chunk(i, c) {
                let _ = p.decode(
                    payload,
                    dtype,
                    ch.elem_count.min(1 << 20) as usize,
                    MAX_BYTES,
                );
            }
        }
    }
}

/// Input layout for the decoder targets: `[dtype index][n: u16 LE][params len][params][payload]`.
pub fn decode_codec(codec: &str, data: &[u8]) {
    let Some(entry) = entry_by_name(codec) else {
        return;
    };
    if data.len() < 4 {
        return;
    }
    let dtype = DType::ALL[data[0] as usize % DType::ALL.len()];
    let n = u16::from_le_bytes([data[1], data[2]]) as usize;
    let plen = (data[3] as usize).min(data.len() - 4);
    let (params, payload) = data[4..].split_at(plen);
    match (entry.from_params)(params) {
        Ok(Codec::Tensor(t)) => {
            let _ = Pipeline::from(t).decode(payload, dtype, n, MAX_BYTES);
        }
        Ok(Codec::Bytes(b)) => {
            let _ = b.decode(payload, n * 8);
        }
        Err(_) => {}
    }
}

/// Encode then decode with a lossless pipeline; the bytes must come back exactly.
/// Input: `[dtype index][elements...]`.
pub fn roundtrip(spec: &str, data: &[u8]) {
    let Some((&d, rest)) = data.split_first() else {
        return;
    };
    let dtype = DType::ALL[d as usize % DType::ALL.len()];
    let n = rest.len() / dtype.size();
    let bytes = &rest[..n * dtype.size()];
    let p = Pipeline::parse(spec).expect("fuzz spec parses");
    assert!(p.lossless());
    let enc = p
        .encode(dtype, bytes)
        .expect("encode never fails on valid elements");
    let dec = p
        .decode(&enc, dtype, n, u64::MAX)
        .expect("own output decodes");
    assert_eq!(dec, bytes, "{spec} did not round-trip");
}

/// Parse GGUF bytes and dequantize every (small) tensor.
pub fn input_gguf(data: &[u8]) {
    let _ = crate::input::gguf::fuzz_parse(data, 1 << 16);
}

/// Parse safetensors bytes as tenpak does (header, dtypes, FP8 scale pairing, dequantization).
pub fn input_safetensors(data: &[u8]) {
    let _ = crate::input::safetensors::fuzz_parse(data, 1 << 16);
}

/// Parse a sharded model's `model.safetensors.index.json`.
pub fn sharded_index(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok((shards, wanted)) = crate::input::safetensors::parse_index(text) {
            assert!(wanted.values().all(|f| shards.contains(f)));
            assert!(shards.iter().all(|s| !s.contains('/') && !s.contains("..")));
        }
    }
}

/// A multi-file `.tpk` set's index (`*.tpk.index.json`): every file it names stays in the
/// index's folder, and every tensor points at one of its files.
pub fn tpk_set_index(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(index) = crate::set::parse_index(text) {
            assert!(index.map.values().all(|&f| f < index.files.len()));
            for f in &index.files {
                let p = std::path::Path::new(f);
                assert!(p.components().count() == 1 && !f.starts_with('.'), "{f}");
            }
        }
    }
}

/// Parse a compression config (JSON) and resolve it; when it parses, its resolved form too.
pub fn config_json(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = crate::config::Config::parse(text, "fuzz.json") {
            let _ = c.used_json();
        }
    }
}

/// Parse and check a KV dump's meta JSON.
pub fn kv_meta(data: &[u8]) {
    if let Ok(m) = crate::kv::dump::DumpMeta::parse(data) {
        let _ = m.bin_bytes();
    }
}

/// Read the KV tensors of a safetensors file's bytes (LMCache layout).
pub fn kv_safetensors(data: &[u8]) {
    if let Ok(ts) = crate::kv::dump::lmcache_tensors(data) {
        for t in ts {
            let _ = t.shape.iter().product::<usize>();
        }
    }
}

/// Parse a KV policy file, or a method spec when the bytes are not JSON.
pub fn kv_policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(base) = crate::kv::method::Policy::new("gear-auto", 2, None) else {
        return;
    };
    match crate::kv::method::Policy::from_json(text, base) {
        Ok(p) => {
            let _ = p.to_json();
            let _ = p.method(3, crate::kv::method::Which::K);
        }
        Err(_) => {
            let _ = crate::kv::method::Method::parse(text);
        }
    }
}

/// Open a calibration statistics file from bytes, read every weight's statistics, and run
/// GPTQ's factorisation on the small second moments.
pub fn calibration(data: &[u8]) {
    let Ok(c) = crate::calib::Calibration::from_bytes(data.to_vec()) else {
        return;
    };
    for w in c.info.inputs.keys() {
        if let Some(t) = c.get(w) {
            let _ = t.column_weights();
            if let Some(h) = &t.hessian {
                if t.cols() <= 64 {
                    let _ = crate::calib::Gptq::new(h, t.cols());
                }
            }
        }
    }
}

/// Parse a sensitivity file.
pub fn sensitivity_json(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::allocate::Sensitivity::parse(text);
    }
}

/// Names of the registered codecs, for seed generation.
pub fn codec_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// What `decompress -o DIR/`, `-o model.gguf` and `merge` read from a `.tpk`'s metadata: a key
/// and value (split at the first zero byte) as a kept file (never a path outside the folder),
/// as a part file's `tenpak.part`, and, with the `tenpak.gguf` layout after a second zero byte,
/// as the GGUF metadata section (a written value reads back as a GGUF value of its type).
pub fn output_meta(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == 0);
    let (k, v, layout) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next(),
    );
    let (Ok(k), Ok(v)) = (std::str::from_utf8(k), std::str::from_utf8(v)) else {
        return;
    };
    let mut meta = vec![(k.to_string(), v.to_string())];
    if let Some(Ok(l)) = layout.map(std::str::from_utf8) {
        meta.push((crate::input::gguf::LAYOUT_KEY.to_string(), l.to_string()));
    }
    if let Ok(section) = crate::decompress::gguf::metadata_section(&meta) {
        // A GGUF header around the section must parse.
        let n_kv = meta.iter().filter(|(k, _)| k.starts_with("gguf.")).count() as u64;
        let mut file = b"GGUF".to_vec();
        file.extend_from_slice(&3u32.to_le_bytes());
        file.extend_from_slice(&0u64.to_le_bytes());
        file.extend_from_slice(&n_kv.to_le_bytes());
        file.extend_from_slice(&section);
        if let Err(e) = crate::input::gguf::metadata_of(&file) {
            panic!("written GGUF metadata does not read back: {e}");
        }
    }
    let dir = std::path::Path::new("out");
    if let Ok(files) = crate::decompress::kept_files(&[(k.to_string(), v.to_string())], dir) {
        for (p, _) in files {
            assert_eq!(p.parent(), Some(dir), "{p:?} leaves the folder");
        }
    }
    let _ = serde_json::from_str::<crate::merge::Part>(v);
}
