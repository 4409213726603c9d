//! Input readers: GGUF dequantization against llama.cpp's reference, FP8 block scales, filters.

use crate::common::*;
use std::collections::HashMap;

/// Every quantized GGML type matches gguf-py's dequantization of the same random blocks, bit
/// for bit (golden file generated once with gguf-py 0.19.0, `gguf.quants.dequantize`).
#[test]
fn ggml_dequantization_matches_reference() {
    let text = include_str!("golden/ggml_dequant.json");
    let cases: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
    assert_eq!(cases.len(), 10);
    for c in cases {
        let ty = c["type"].as_u64().unwrap() as u32;
        let bytes: Vec<u8> = c["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        let want: Vec<u32> = c["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let mut y = vec![0f32; want.len()];
        tenpak::input::gguf::dequantize(ty, &bytes, &mut y).unwrap();
        for (i, (g, w)) in y.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                *w,
                "{}[{i}]: {g} vs {}",
                c["name"],
                f32::from_bits(*w)
            );
        }
    }
}

/// An FP8 weight with a `_scale_inv` tensor is dequantized per 128x128 block (partial edge
/// blocks included) and the scale tensor is consumed.
#[test]
fn fp8_scale_inv_is_applied_and_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let (r, c) = (200usize, 300usize);
    let w: Vec<u8> = (0..r * c).map(|i| ((i * 37) % 0x7E) as u8).collect(); // no NaN codes
    let scales = [0.5f32, 2.0, 4.0, 0.25, 1.0, 8.0]; // [2, 3]
    let sb: Vec<u8> = scales.iter().flat_map(|v| v.to_le_bytes()).collect();
    let p = dir.path().join("fp8.safetensors");
    write_st(
        &p,
        vec![
            (
                "layer.weight",
                safetensors::Dtype::F8_E4M3,
                vec![r, c],
                w.clone(),
            ),
            (
                "layer.weight_scale_inv",
                safetensors::Dtype::F32,
                vec![2, 3],
                sb,
            ),
            ("layer.bias", safetensors::Dtype::F32, vec![2], vec![0; 8]),
        ],
    );
    let tpk = dir.path().join("fp8.tpk");
    let rep = tenpak_json(&["compress", s(&p), "-o", s(&tpk), "--codec", "raw", "-q"]);
    let names: Vec<&str> = rep["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["layer.bias", "layer.weight"]);
    let wt = &rep["tensors"][1];
    assert_eq!(wt["source_dtype"], "F8_E4M3");
    assert_eq!(wt["source_bytes"].as_u64().unwrap(), (r * c + 24) as u64);
    let out = dir.path().join("out.safetensors");
    tenpak_ok(&["decompress", s(&tpk), "-o", s(&out), "-q"]);
    let back = read_safetensors(&out);
    let (dt, shape, bytes) = &back["layer.weight"];
    assert_eq!((dt.as_str(), shape.as_slice()), ("F32", &[r, c][..]));
    for (i, v) in bytes.chunks_exact(4).enumerate() {
        let (row, col) = (i / c, i % c);
        let want = tenpak::dtype::f8e4m3_to_f32(w[i]) * scales[(row / 128) * 3 + col / 128];
        assert_eq!(
            f32::from_le_bytes(v.try_into().unwrap()),
            want,
            "[{row},{col}]"
        );
    }
    // A scale of the wrong shape is an error naming the tensor.
    let bad = dir.path().join("bad.safetensors");
    write_st(
        &bad,
        vec![
            ("w", safetensors::Dtype::F8_E4M3, vec![4, 4], vec![0x38; 16]),
            (
                "w_scale_inv",
                safetensors::Dtype::F32,
                vec![2, 2],
                vec![0; 16],
            ),
        ],
    );
    let err = tenpak_fails(
        &[
            "compress",
            s(&bad),
            "-o",
            s(&dir.path().join("b.tpk")),
            "-q",
        ],
        1,
    );
    assert!(
        err.contains("tensor 'w'") && err.contains("scale_inv"),
        "{err}"
    );
}

/// All safetensors dtypes: floats decode, integers and bool stay bit-exact under a lossy codec.
#[test]
fn every_dtype_survives() {
    use safetensors::Dtype as D;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("all.safetensors");
    let bytes = |n: usize| (0..n).map(|i| (i * 13 % 251) as u8).collect::<Vec<u8>>();
    let mut ts = Vec::new();
    for (name, d, size) in [
        ("bool", D::BOOL, 1),
        ("u8", D::U8, 1),
        ("i8", D::I8, 1),
        ("u16", D::U16, 2),
        ("i16", D::I16, 2),
        ("u32", D::U32, 4),
        ("i32", D::I32, 4),
        ("u64", D::U64, 8),
        ("i64", D::I64, 8),
        ("f16", D::F16, 2),
        ("bf16", D::BF16, 2),
        ("f32", D::F32, 4),
        ("f64", D::F64, 8),
        ("e4m3", D::F8_E4M3, 1),
        ("e5m2", D::F8_E5M2, 1),
    ] {
        let b = if name == "bool" {
            vec![0, 1, 1, 0, 1, 0]
        } else {
            bytes(6 * size)
        };
        ts.push((name, d, vec![2, 3], b));
    }
    ts.push(("empty", D::F32, vec![0, 5], vec![]));
    ts.push(("scalar", D::F32, vec![], 1.5f32.to_le_bytes().to_vec()));
    write_st(&p, ts);
    let orig = read_safetensors(&p);
    for codec in ["raw", "byteplane", "zstd"] {
        let tpk = dir.path().join("a.tpk");
        let out = dir.path().join("a.safetensors");
        tenpak_ok(&[
            "compress",
            s(&p),
            "-o",
            s(&tpk),
            "--codec",
            codec,
            "--force",
            "-q",
        ]);
        tenpak_ok(&["verify", s(&tpk), "-q"]);
        tenpak_ok(&["decompress", s(&tpk), "-o", s(&out), "--force", "-q"]);
        assert_eq!(read_safetensors(&out), orig, "{codec}");
    }
    let tpk = dir.path().join("b.tpk");
    let rep = tenpak_json(&["compress", s(&p), "-o", s(&tpk), "--codec", "bf16", "-q"]);
    let codecs: HashMap<&str, &str> = rep["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["codec"].as_str().unwrap()))
        .collect();
    assert_eq!(codecs["i64"], "raw");
    assert_eq!(codecs["bool"], "raw");
    assert_eq!(codecs["f64"], "bf16");
    let out = dir.path().join("b.safetensors");
    tenpak_ok(&["decompress", s(&tpk), "-o", s(&out), "-q"]);
    let back = read_safetensors(&out);
    for k in [
        "bool", "u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64", "bf16", "empty",
    ] {
        assert_eq!(back[k], orig[k], "{k}");
    }
    // Lossy floats come back in their source dtype where tenpak can write it, FP8 as F32.
    assert_eq!(back["f64"].0, "F64");
    assert_eq!(back["e4m3"].0, "F32");
}

#[test]
fn filter_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let tpk = dir.path().join("f.tpk");
    let names = tensor_names;
    let r = tenpak_json(&[
        "compress",
        s(&minilm()),
        "-o",
        s(&tpk),
        "--filter",
        "encoder.layer.1",
        "-q",
    ]);
    let n = names(&r);
    assert_eq!(n.len(), 16);
    assert!(n.iter().all(|x| x.starts_with("encoder.layer.1.")));
    let r = tenpak_json(&[
        "compress",
        s(&minilm()),
        "-o",
        s(&tpk),
        "--filter",
        "LayerNorm",
        "--limit",
        "3",
        "--force",
        "-q",
    ]);
    let n = names(&r);
    assert_eq!(
        n,
        [
            "embeddings.LayerNorm.bias",
            "embeddings.LayerNorm.weight",
            "encoder.layer.0.attention.output.LayerNorm.bias"
        ]
    );
    let o = tenpak(&[
        "compress",
        s(&minilm()),
        "-o",
        s(&tpk),
        "--filter",
        "nothing-matches",
        "--force",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no tensor matches"));
}

/// A file named or marked GGUF is judged as a GGUF, never as a safetensors file; a folder
/// given where a .tpk is expected is named as such.
#[test]
fn gguf_and_folder_refusals_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.tpk");
    for (name, bytes, want) in [
        (
            "a.gguf",
            &b"GGUF\x03\x00\x00\x00garbage"[..],
            "bad GGUF file",
        ),
        ("b.gguf", &b"GGU"[..], "too short for the magic"),
        (
            "c.gguf",
            &b"\x3e\x27\x6a\x19 not a gguf at all"[..],
            "not a GGUF file",
        ),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = tenpak_fails(&["compress", s(&p), "-o", s(&out)], 1);
        assert!(
            e.contains(want) && !e.contains("safetensors"),
            "{name}: {e}"
        );
        assert!(!out.exists());
    }
    for cmd in ["inspect", "verify"] {
        let e = tenpak_fails(&[cmd, s(dir.path())], 1);
        assert!(e.contains("a folder, not a .tpk file"), "{cmd}: {e}");
    }
}

/// A Hugging Face cache folder (`models--org--name`) opens the snapshot `refs/main` names, else
/// the newest; its files may be links into `blobs/`, as the hub client makes them.
#[test]
fn hugging_face_cache_folders_open_their_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("models--org--tiny");
    let blobs = cache.join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    for (commit, tensor) in [("aaa111", "old.weight"), ("bbb222", "new.weight")] {
        let snap = cache.join("snapshots").join(commit);
        std::fs::create_dir_all(&snap).unwrap();
        let blob = blobs.join(format!("{commit}-blob"));
        write_st(
            &blob,
            vec![(tensor, safetensors::Dtype::F32, vec![2, 2], vec![0u8; 16])],
        );
        std::os::unix::fs::symlink(&blob, snap.join("model.safetensors")).unwrap();
    }
    let names = |p: &std::path::Path| tensor_names(&tenpak_json(&["compress", s(p), "--dry-run"]));
    std::fs::create_dir_all(cache.join("refs")).unwrap();
    std::fs::write(cache.join("refs/main"), "aaa111\n").unwrap();
    assert_eq!(names(&cache), ["old.weight"]);
    // No ref: the newest snapshot.
    std::fs::remove_file(cache.join("refs/main")).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let f = std::fs::File::open(cache.join("snapshots/bbb222")).unwrap();
    f.set_modified(old).unwrap();
    assert_eq!(names(&cache), ["old.weight"]);
    let f = std::fs::File::open(cache.join("snapshots/aaa111")).unwrap();
    f.set_modified(old - std::time::Duration::from_secs(60))
        .unwrap();
    assert_eq!(names(&cache), ["new.weight"]);
    // A ref that leaves the cache is not followed.
    std::fs::write(cache.join("refs/main"), "../../elsewhere").unwrap();
    assert_eq!(names(&cache), ["new.weight"]);
    std::fs::remove_dir_all(cache.join("snapshots/aaa111")).unwrap();
    std::fs::remove_dir_all(cache.join("snapshots/bbb222")).unwrap();
    let e = tenpak_fails(&["compress", s(&cache), "--dry-run"], 1);
    assert!(e.contains("no snapshot"), "{e}");
}

/// The evaluation commands' default corpus follows TENPAK_MODELS, as the scripts do.
#[test]
fn default_corpus_follows_tenpak_models() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tenpak"))
        .args(["eval", "ppl", "--help"])
        .env("TENPAK_MODELS", "/srv/tenpak-models")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(
        help.contains("/srv/tenpak-models/corpus/cfi-en.txt"),
        "{help}"
    );
}
