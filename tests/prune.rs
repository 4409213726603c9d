//! Pruning with sparse storage on MiniLM: what is pruned is exactly what the rule says, the
//! rest decodes as the value codec decodes it, metrics are measured against the unpruned
//! weights, inspect reports the sparsity, and the index costs what formats-spec/sparse.md says.

use crate::common::*;

#[test]
fn pruned_tensors_decode_as_promised() {
    let dir = tempfile::tempdir().unwrap();
    let m = minilm();
    let src = read_safetensors(&m);
    let name = "encoder.layer.5.intermediate.dense.weight";
    for (rule, codec, sparsity) in [
        ("magnitude:0.5", "byteplane", 0.5),
        ("magnitude:0.9", "f16", 0.9),
        ("rows:0.25", "int8_g64", 0.25),
        ("cols:0.5", "bf16+zstd", 0.5),
    ] {
        let tpk = dir.path().join("p.tpk");
        let j = tenpak_json(&[
            "compress",
            s(&m),
            "-o",
            s(&tpk),
            "--codec",
            codec,
            "--prune",
            rule,
            "--filter",
            "encoder.layer.5.",
            "--force",
        ]);
        tenpak_ok(&["verify", s(&tpk)]);
        let back = dir.path().join("p.safetensors");
        tenpak_ok(&["decompress", s(&tpk), "-o", s(&back), "--force", "-q"]);
        let got = read_safetensors(&back);
        let t = j["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap();
        let x = f32s(&src[name].2);
        let y = f32s(&got[name].2);
        let n = x.len();
        let pruned = t["pruned"].as_u64().unwrap();
        assert_eq!(pruned, (sparsity * n as f64).floor() as u64, "{rule}");
        let zeros = y.iter().filter(|v| **v == 0.0).count() as u64;
        assert!(zeros >= pruned, "{rule}: {zeros} zeros < {pruned} pruned");
        // Lossless values: every kept weight is bit-exact.
        if codec == "byteplane" {
            let kept = x
                .iter()
                .zip(&y)
                .filter(|(a, b)| a.to_bits() == b.to_bits())
                .count();
            assert_eq!(kept as u64, n as u64 - pruned);
            // Magnitude: the kept ones are the largest.
            let small = x
                .iter()
                .zip(&y)
                .filter(|(_, b)| **b == 0.0)
                .map(|(a, _)| a.abs())
                .fold(0f32, f32::max);
            let large = x
                .iter()
                .zip(&y)
                .filter(|(_, b)| **b != 0.0)
                .map(|(a, _)| a.abs())
                .fold(f32::MAX, f32::min);
            assert!(small <= large);
        }
        // Metrics are against the unpruned weights.
        let (pcc, mae) = pcc_mae(&x, &y);
        let rep = &t["metrics"];
        assert!((pcc - rep["pcc"].as_f64().unwrap()).abs() < 1e-9, "{rule}");
        assert!(
            (mae - rep["mae"].as_f64().unwrap()).abs() < 1e-9 * mae,
            "{rule}"
        );
        // inspect reads the sparsity back.
        let ins = tenpak_json(&["inspect", s(&tpk)]);
        let it = ins["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap();
        assert_eq!(
            it["sparsity"]["zero_count"].as_u64().unwrap(),
            pruned,
            "{rule}"
        );
        assert_eq!(it["sparsity"]["total"].as_u64().unwrap(), n as u64);
        // Vectors are left dense.
        let v = j["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "encoder.layer.5.output.LayerNorm.weight")
            .unwrap();
        assert!(v.get("pruned").is_none());
    }
    // 90% magnitude pruning of f16 values against dense f16 on the same tensor: the index
    // (gaps, about one byte per kept value here) makes it ~6.5x rather than 10x.
    let size = |extra: &[&str]| {
        let tpk = dir.path().join("s.tpk");
        let mut a = vec![
            "compress",
            s(&m),
            "-o",
            s(&tpk),
            "--codec",
            "f16",
            "--filter",
            name,
            "--force",
        ];
        a.extend_from_slice(extra);
        tenpak_json(&a)["tensors"][0]["encoded_bytes"]
            .as_u64()
            .unwrap() as f64
    };
    let (dense, half, tenth) = (
        size(&[]),
        size(&["--prune", "magnitude:0.5"]),
        size(&["--prune", "magnitude:0.9"]),
    );
    let (r50, r90) = (dense / half, dense / tenth);
    assert!((1.7..2.0).contains(&r50), "{r50}");
    assert!((6.0..8.0).contains(&r90), "{r90}");
}

#[test]
fn prune_errors_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let m = minilm();
    let out = dir.path().join("x.tpk");
    let e = tenpak_fails(
        &[
            "compress",
            s(&m),
            "-o",
            s(&out),
            "--codec",
            "bfp8",
            "--prune",
            "magnitude:0.5",
            "--filter",
            "encoder.layer.0.",
            "--force",
        ],
        2,
    );
    assert!(e.contains("row-major value codec"), "{e}");
    // Groupings that follow the tensor's shape are refused as asked, not quietly changed
    // (sparse.md §1): kept values have no rows, axes or channels.
    for codec in ["int8_row", "int4_axis0", "int8_tensor"] {
        let e = tenpak_fails(
            &[
                "compress",
                s(&m),
                "-o",
                s(&out),
                "--codec",
                codec,
                "--prune",
                "magnitude:0.5",
                "--filter",
                "encoder.layer.0.",
                "--force",
            ],
            2,
        );
        assert!(e.contains("use group=N"), "{codec}: {e}");
    }
    let e = tenpak_fails(
        &[
            "compress",
            s(&m),
            "-o",
            s(&out),
            "--prune",
            "magnitude:2",
            "--force",
        ],
        2,
    );
    assert!(e.contains("--prune 'magnitude:2'"), "{e}");
    assert!(!out.exists());
    let cfg = dir.path().join("c.json");
    std::fs::write(
        &cfg,
        r#"{"algorithm": "none", "params": {"prune": "rows:0.5"}}"#,
    )
    .unwrap();
    let j = tenpak_json(&[
        "compress",
        s(&m),
        "-o",
        s(&out),
        "--codec",
        "f16",
        "--config",
        s(&cfg),
        "--filter",
        "pooler.",
        "--force",
    ]);
    let t = &j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "pooler.dense.weight")
        .unwrap();
    assert_eq!(t["pruned"].as_u64().unwrap(), 192 * 384);
    std::fs::write(
        &cfg,
        r#"{"algorithm": "none", "params": {"prune": "half"}}"#,
    )
    .unwrap();
    let e = tenpak_fails(
        &[
            "compress",
            s(&m),
            "-o",
            s(&out),
            "--config",
            s(&cfg),
            "--force",
        ],
        2,
    );
    assert!(e.contains("params.prune"), "{e}");
}
