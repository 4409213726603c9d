//! `decompress -o model.gguf`: metadata with its types, native GGML blocks where the decoded
//! values are on their grid, floats elsewhere, refusals. (llama.cpp itself loads the files in
//! tenpak-py/tests/test_gguf.py.)

use crate::common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tenpak::archive::Archive;
use tenpak::input::gguf::GgufSource;
use tenpak::input::TensorSource;

/// Each tensor's GGML type name in a GGUF file.
fn types(p: &Path) -> BTreeMap<String, String> {
    let g = GgufSource::open(p).unwrap();
    g.tensors()
        .iter()
        .map(|t| (t.name.clone(), t.source_dtype.clone()))
        .collect()
}

/// Every tensor of the GGUF, dequantized by the GGUF reader, equals the .tpk's decoded values
/// bit for bit (converted to the written float type where that is not f32).
fn assert_same_values(gguf: &Path, tpk: &Path) {
    let g = GgufSource::open(gguf).unwrap();
    let ar = Archive::open(tpk).unwrap();
    assert_eq!(g.tensors().len(), ar.file.tensors().len());
    for (i, t) in g.tensors().iter().enumerate() {
        let j = ar.find(&t.name).unwrap();
        let (dt, dec) = ar.decode_tensor(j).unwrap();
        let want = tenpak::decompress::convert(dt, dec, t.dtype).unwrap();
        let got = g.data(i).unwrap();
        assert!(got[..] == want[..], "{}: values differ", t.name);
    }
}

fn counts(t: &BTreeMap<String, String>) -> BTreeMap<&str, usize> {
    let mut n = BTreeMap::new();
    for v in t.values() {
        *n.entry(v.as_str()).or_default() += 1;
    }
    n
}

/// Compress `src` with `codec` into `dir/m.tpk`, then decompress it to `dir/m.gguf` with `extra`
/// options (both overwritten); the paths and the decompress report.
fn to_gguf(
    dir: &Path,
    src: &Path,
    codec: &str,
    extra: &[&str],
) -> (PathBuf, PathBuf, serde_json::Value) {
    let (tpk, out) = (dir.join("m.tpk"), dir.join("m.gguf"));
    tenpak_ok(&[
        "compress",
        s(src),
        "-o",
        s(&tpk),
        "--codec",
        codec,
        "--force",
        "-q",
    ]);
    let mut args = vec!["decompress", s(&tpk), "-o", s(&out), "--force"];
    args.extend_from_slice(extra);
    let r = tenpak_json(&args);
    (tpk, out, r)
}

/// A GGUF through a lossless codec comes back byte for byte: metadata types and order, tensor
/// order, Q4_1/Q8_0 blocks, alignment padding.
#[test]
fn lossless_tpk_gives_back_the_gguf_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let src = smollm2();
    let (_, out, r) = to_gguf(dir.path(), &src, "byteplane", &[]);
    assert_eq!(r["warnings"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(r["gguf_types"].as_array().unwrap().len(), 272);
    assert!(std::fs::read(&src).unwrap() == std::fs::read(&out).unwrap());

    // A synthetic GGUF with u32, f32, string and string-array metadata, a matrix and a vector.
    let m = dir.path().join("s.gguf");
    let mat: Vec<f32> = (0..64 * 96).map(|i| (i as f32 * 0.37).sin()).collect();
    write_gguf(
        &m,
        &[
            ("general.architecture", Gv::Str("toy")),
            ("toy.block_count", Gv::U32(2)),
            ("toy.eps", Gv::F32(1e-5)),
            ("tok.list", Gv::Strs(&["a", "b c", ""])),
        ],
        &[("w", vec![96, 64], mat), ("n", vec![7], vec![1.5; 7])],
    );
    for codec in ["zstd", "raw", "byteplane"] {
        let (_, out, _) = to_gguf(dir.path(), &m, codec, &[]);
        assert!(
            std::fs::read(&m).unwrap() == std::fs::read(&out).unwrap(),
            "{codec}"
        );
    }
}

/// int4_g32_asym on SmolLM2 (its layers' own Q4_1 grid): every matrix is written as Q4_1 (the
/// Q8_0 embedding too, through the codec's grid), the layers' blocks are the source's, the
/// norms stay F32, the metadata is the source's, and the values are the .tpk's.
#[test]
fn same_grid_codec_writes_native_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let src = smollm2();
    let (tpk, out, r) = to_gguf(dir.path(), &src, "int4_g32_asym", &[]);
    assert_eq!(r["warnings"].as_array().unwrap().len(), 0, "{r}");
    let t = types(&out);
    assert_eq!(
        counts(&t),
        BTreeMap::from([("F32", 61), ("Q4_1", 211)]),
        "{t:?}"
    );
    assert_eq!(t["token_embd.weight"], "Q4_1");
    let (a, b) = (
        GgufSource::open(&src).unwrap(),
        GgufSource::open(&out).unwrap(),
    );
    assert_eq!(a.metadata(), b.metadata());
    assert_same_values(&out, &tpk);
    // int8: the layers' Q4_1 values are not on Q8_0's grid but int8's output is; file type 7.
    let (tpk, out, r) = to_gguf(dir.path(), &src, "int8", &[]);
    let w = r["warnings"].to_string();
    assert!(w.contains("general.file_type set to 7 (was 3)"), "{w}");
    assert_eq!(
        counts(&types(&out)),
        BTreeMap::from([("F32", 61), ("Q8_0", 211)])
    );
    assert_same_values(&out, &tpk);
}

/// Synthetic f32 matrices: each int codec with groups of 32 lands on its GGML type; off-grid
/// codecs and `--dtype` give floats; the values are the .tpk's in every case.
#[test]
fn int_codecs_map_to_their_ggml_types() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("s.gguf");
    let mat: Vec<f32> = (0..64 * 96)
        .map(|i| (i as f32 * 0.37).sin() * 0.1)
        .collect();
    write_gguf(
        &m,
        &[
            ("general.architecture", Gv::Str("toy")),
            ("general.file_type", Gv::U32(0)),
        ],
        &[
            ("w", vec![96, 64], mat.clone()),
            ("w2", vec![64, 96], mat.iter().map(|v| v * 3.0).collect()),
            ("n", vec![32], vec![0.25; 32]),
        ],
    );
    for (codec, ty, ftype) in [
        ("int8", "Q8_0", 7),
        ("int4_g32", "Q4_0", 2),
        ("int4_g32_asym", "Q4_1", 3),
        ("int5_g32", "Q5_0", 8),
        ("int5_g32_asym", "Q5_1", 9),
        ("bfp8", "F32", 0),
        ("int4_g64_asym", "F32", 0),
    ] {
        let (tpk, out, r) = to_gguf(dir.path(), &m, codec, &[]);
        let t = types(&out);
        assert_eq!(t["w"], ty, "{codec}");
        assert_eq!(t["n"], "F32", "{codec}: vectors are never blocks");
        assert_same_values(&out, &tpk);
        assert_eq!(t["w2"], ty, "{codec}");
        let g = GgufSource::open(&out).unwrap();
        let ft = g.meta("general.file_type").unwrap().as_u64();
        assert_eq!(ft, Some(ftype), "{codec}: the most common type written");
        // No type was tried and failed: nothing to warn about but the file type.
        let w = r["warnings"].to_string();
        assert!(!w.contains("off the grid"), "{codec}: {w}");
    }
    // --dtype f16: every float tensor as F16, no blocks.
    let (tpk, out, _) = to_gguf(dir.path(), &m, "int8", &["--dtype", "f16"]);
    let t = types(&out);
    assert_eq!(counts(&t), BTreeMap::from([("F16", 3)]));
    assert_same_values(&out, &tpk);
}

/// A .tpk of a safetensors model gives a GGUF of tensors only, with a warning; integer
/// tensors keep their type; the GGUF package's reader and ours agree on it (pytest).
#[test]
fn safetensors_model_gives_tensors_only() {
    let dir = tempfile::tempdir().unwrap();
    let (tpk, out, r) = to_gguf(dir.path(), &minilm(), "int8", &[]);
    assert!(
        r["warnings"].to_string().contains("no GGUF metadata"),
        "{r}"
    );
    let t = types(&out);
    let n = counts(&t);
    assert!(n["Q8_0"] >= 36, "{n:?}");
    assert!(t
        .values()
        .all(|v| ["Q8_0", "F32", "I64"].contains(&v.as_str())));
    assert_same_values(&out, &tpk);
}

/// Output names and options that contradict each other are refused before anything is
/// written, exit 2; nothing is left behind.
#[test]
fn gguf_output_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let tpk = dir.path().join("m.tpk");
    tenpak_ok(&[
        "compress",
        s(&smollm2()),
        "-o",
        s(&tpk),
        "--filter",
        "blk.0.",
        "-q",
    ]);
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let e = tenpak_fails(
        &[
            "decompress",
            s(&tpk),
            "-o",
            &p("x.gguf"),
            "--format",
            "safetensors",
        ],
        2,
    );
    assert!(e.contains("name it .safetensors"), "{e}");
    let e = tenpak_fails(
        &[
            "decompress",
            s(&tpk),
            "-o",
            &p("x.safetensors"),
            "--format",
            "gguf",
        ],
        2,
    );
    assert!(e.contains("name it .gguf"), "{e}");
    let e = tenpak_fails(
        &["decompress", s(&tpk), "-o", &p("d/"), "--format", "gguf"],
        2,
    );
    assert!(e.contains("folder"), "{e}");
    let e = tenpak_fails(
        &[
            "decompress",
            s(&tpk),
            "-o",
            &p("x.gguf"),
            "--max-shard-size",
            "1MB",
        ],
        2,
    );
    assert!(e.contains("one file"), "{e}");
    // --format gguf with a name without extension is taken as given; an existing output needs
    // --force.
    tenpak_ok(&[
        "decompress",
        s(&tpk),
        "-o",
        &p("plain"),
        "--format",
        "gguf",
        "-q",
    ]);
    assert!(types(Path::new(&p("plain"))).len() == 9);
    tenpak_fails(
        &["decompress", s(&tpk), "-o", &p("plain"), "--format", "gguf"],
        2,
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(left, ["m.tpk", "plain"]);
}

/// A GGUF of one Q4_K matrix (2 rows of 256) and one Q8_0 matrix (2 rows of 32), no metadata.
fn write_kquant_gguf(path: &Path) {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    // Q4_K block: d, dmin (f16), 12 scale bytes, 128 bytes of nibbles.
    let mut k = Vec::new();
    for b in 0..2u8 {
        k.extend(half::f16::from_f32(0.01).to_le_bytes());
        k.extend(half::f16::from_f32(0.002).to_le_bytes());
        k.extend((0..12).map(|i| (i * 5 + b) & 63));
        k.extend((0..128u32).map(|i| (i * 37 + b as u32) as u8));
    }
    // Q8_0 block: d (f16), 32 codes.
    let mut q = Vec::new();
    for b in 0..2i8 {
        q.extend(half::f16::from_f32(0.5).to_le_bytes());
        q.extend((0..32i8).map(|i| (i * 3 - 40 + b) as u8));
    }
    let tensors: [(&str, [u64; 2], u32, &[u8]); 2] =
        [("k", [256, 2], 12, &k[..]), ("q", [32, 2], 8, &q[..])];
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(2u64.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    let mut offset = 0u64;
    for (name, ne, ty, data) in &tensors {
        string(&mut out, name);
        out.extend(2u32.to_le_bytes());
        for d in ne {
            out.extend(d.to_le_bytes());
        }
        out.extend(ty.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (data.len() as u64).next_multiple_of(32);
    }
    out.resize(out.len().next_multiple_of(32), 0);
    for (_, _, _, data) in &tensors {
        out.extend(*data);
        out.resize(out.len().next_multiple_of(32), 0);
    }
    std::fs::write(path, out).unwrap();
}

/// Block types tenpak does not write (k-quants) come back as floats with a warning that says
/// so; legacy blocks beside them come back as themselves.
#[test]
fn kquants_come_back_as_floats_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("k.gguf");
    write_kquant_gguf(&m);
    let (tpk, out, r) = to_gguf(dir.path(), &m, "byteplane", &[]);
    let w = r["warnings"].to_string();
    assert!(
        w.contains(
            "1 tensor stored from GGML block types tenpak does not write (first: 'k', Q4_K)"
        ),
        "{w}"
    );
    let t = types(&out);
    assert_eq!((t["k"].as_str(), t["q"].as_str()), ("F32", "Q8_0"));
    assert_same_values(&out, &tpk);
}
