//! Deltas against a base model (formats-spec/delta.md) on a real pair: MiniLM as the base and a
//! synthetic fine-tune of it (noise on every query matrix, a rank-8 update of one MLP matrix, a
//! new head), lossless and quantized, with the base checked by fingerprint.

use crate::common::*;
use std::path::{Path, PathBuf};

/// MiniLM with small structured changes, and one tensor the base lacks.
fn fine_tune(dir: &Path) -> PathBuf {
    let src = read_safetensors(&minilm());
    let mut x = 0x1234_5678_9ABC_DEF1u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    let mut out: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, (dt, shape, bytes)) in &src {
        if dt != "F32" {
            assert_eq!(dt, "I64", "MiniLM's other tensor is position_ids");
            out.push((
                name.clone(),
                safetensors::Dtype::I64,
                shape.clone(),
                bytes.clone(),
            ));
            continue;
        }
        let mut v = f32s(bytes);
        if name.ends_with("attention.self.query.weight") {
            for w in v.iter_mut() {
                *w += 2e-3 * rnd();
            }
        }
        if name == "encoder.layer.3.intermediate.dense.weight" {
            let (r, c) = (shape[0], shape[1]);
            let a: Vec<f32> = (0..r * 8).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..8 * c).map(|_| rnd()).collect();
            for i in 0..r {
                for j in 0..c {
                    v[i * c + j] += 1e-3 * (0..8).map(|k| a[i * 8 + k] * b[k * c + j]).sum::<f32>();
                }
            }
        }
        out.push((
            name.clone(),
            safetensors::Dtype::F32,
            shape.clone(),
            v.iter().flat_map(|f| f.to_le_bytes()).collect(),
        ));
    }
    out.push((
        "extra.head.weight".into(),
        safetensors::Dtype::F32,
        vec![4, 384],
        (0..4 * 384).flat_map(|_| rnd().to_le_bytes()).collect(),
    ));
    let p = dir.join("ft.safetensors");
    write_st(
        &p,
        out.iter()
            .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
            .collect(),
    );
    p
}

#[test]
fn delta_roundtrips_and_checks_its_base() {
    let dir = tempfile::tempdir().unwrap();
    let base = minilm();
    let ft = fine_tune(dir.path());
    let want = read_safetensors(&ft);
    // Lossless: XOR through byteplane, bit-exact, a fraction of the full file.
    let d = dir.path().join("d.tpk");
    let j = tenpak_json(&[
        "compress",
        s(&ft),
        "--base",
        s(&base),
        "-o",
        s(&d),
        "--force",
    ]);
    let full = dir.path().join("full.tpk");
    let jf = tenpak_json(&["compress", s(&ft), "-o", s(&full), "--force"]);
    let (db, fb) = (
        j["file_bytes"].as_u64().unwrap(),
        jf["file_bytes"].as_u64().unwrap(),
    );
    assert!(db * 5 < fb, "delta {db} vs full {fb}");
    let rows = j["tensors"].as_array().unwrap();
    assert!(rows
        .iter()
        .filter(|t| t["name"] != "extra.head.weight")
        .all(|t| t["delta"] == "xor"));
    let head = rows
        .iter()
        .find(|t| t["name"] == "extra.head.weight")
        .unwrap();
    assert!(
        head.get("delta").is_none(),
        "a tensor the base lacks is stored whole"
    );
    tenpak_ok(&["verify", s(&d)]);
    let back = dir.path().join("back.safetensors");
    tenpak_ok(&[
        "decompress",
        s(&d),
        "--base",
        s(&base),
        "-o",
        s(&back),
        "--force",
        "-q",
    ]);
    assert_eq!(read_safetensors(&back), want, "lossless delta round trip");
    // Without the base, or with the wrong one: a clear error naming the tensor, nothing written.
    std::fs::remove_file(&back).unwrap();
    let e = tenpak_fails(&["decompress", s(&d), "-o", s(&back), "-q"], 1);
    assert!(e.contains("pass --base"), "{e}");
    let e = tenpak_fails(
        &["decompress", s(&d), "--base", s(&ft), "-o", s(&back), "-q"],
        1,
    );
    assert!(
        e.contains("encoder.layer.0.attention.self.query.weight") && e.contains("different"),
        "{e}"
    );
    assert!(!back.exists());
    // Quantized: the f32 difference through int8; metrics are of base + difference.
    let q = dir.path().join("q.tpk");
    let jq = tenpak_json(&[
        "compress",
        s(&ft),
        "--base",
        s(&base),
        "-o",
        s(&q),
        "--codec",
        "int8_g64",
        "--force",
    ]);
    tenpak_ok(&[
        "decompress",
        s(&q),
        "--base",
        s(&base),
        "-o",
        s(&back),
        "--force",
        "-q",
    ]);
    let got = read_safetensors(&back);
    for t in jq["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        if want[name].0 != "F32" {
            assert_eq!(got[name], want[name], "{name}");
            continue;
        }
        let (x, y) = (f32s(&want[name].2), f32s(&got[name].2));
        if x == y {
            // Exact (an unchanged tensor, or an all-zero one whose textbook PCC is 0/0).
            assert_eq!(t["metrics"]["pcc"], 1.0, "{name}");
            continue;
        }
        let (pcc, mae) = pcc_mae(&x, &y);
        assert!(
            (pcc - t["metrics"]["pcc"].as_f64().unwrap()).abs() < 1e-9,
            "{name}: {pcc} vs {}",
            t["metrics"]["pcc"]
        );
        assert!(
            (mae - t["metrics"]["mae"].as_f64().unwrap()).abs() <= 1e-9 * mae.max(1e-12),
            "{name}"
        );
        if name.ends_with("query.weight") {
            assert_eq!(t["delta"], "sub");
            // int8 of a 2e-3 difference: errors far below the weights' own int8 error.
            assert!(mae < 1e-5, "{name}: {mae}");
        }
        assert_ne!(t["delta"], "xor", "{name}: unchanged tensors stay exact");
    }
    assert!(jq["file_bytes"].as_u64().unwrap() < db);
}
