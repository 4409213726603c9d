//! Mixed-tile assignment end to end on MiniLM: every algorithm writes a real `mixed` tensor whose
//! decoded values give exactly the metric the search reported, within its threshold or budget;
//! the stored assignment reads back; whole-model budgets hold over the model.

use crate::common::*;
use std::path::Path;

fn config(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.json"));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn every_algorithm_writes_what_it_measured() {
    let dir = tempfile::tempdir().unwrap();
    let m = minilm();
    let src = read_safetensors(&m);
    let formats = r#"["bf16", "bfp8", "bfp4", "bfp2", "fp0"]"#;
    let cases = [
        (
            "threshold",
            format!(
                r#"{{"algorithm": "mixed-tile-threshold", "params": {{"threshold": 0.999, "formats": {formats}}}}}"#
            ),
        ),
        (
            "greedy",
            format!(
                r#"{{"algorithm": "mixed-tile-greedy", "seed": 3, "params": {{"threshold": 0.999, "formats": {formats}}}}}"#
            ),
        ),
        (
            "random",
            format!(
                r#"{{"algorithm": "mixed-tile-random", "seed": 3, "params": {{"threshold": 0.99, "iters": 8, "formats": {formats}}}}}"#
            ),
        ),
        (
            "optimal",
            format!(
                r#"{{"algorithm": "mixed-tile-optimal", "params": {{"threshold": 0.999, "formats": {formats}}}}}"#
            ),
        ),
        (
            "mae",
            r#"{"algorithm": "mixed-tile-optimal", "params": {"metric": "mae", "threshold": 0.004, "formats": ["bfp8", "bfp4", "mxfp4", "nvfp4", "bfp2"]}}"#.to_string(),
        ),
        (
            "budget",
            format!(
                r#"{{"algorithm": "mixed-tile-optimal", "params": {{"target_bpw": 4.5, "formats": {formats}}}}}"#
            ),
        ),
    ];
    for (name, text) in cases {
        let cfg = config(dir.path(), name, &text);
        let tpk = dir.path().join(format!("{name}.tpk"));
        let j = tenpak_json(&[
            "compress",
            s(&m),
            "-o",
            s(&tpk),
            "--config",
            s(&cfg),
            "--filter",
            "encoder.layer.1.",
            "--force",
        ]);
        tenpak_ok(&["verify", s(&tpk)]);
        let back = dir.path().join(format!("{name}.safetensors"));
        tenpak_ok(&["decompress", s(&tpk), "-o", s(&back), "--force", "-q"]);
        let got = read_safetensors(&back);
        let ins = tenpak_json(&["inspect", s(&tpk)]);
        let mut mixed = 0;
        for t in j["tensors"].as_array().unwrap() {
            let tn = t["name"].as_str().unwrap();
            let Some(mx) = t.get("mixed") else {
                // Vectors keep --codec (byteplane by default): lossless.
                assert_eq!(got[tn].2, src[tn].2, "{name} {tn}");
                continue;
            };
            mixed += 1;
            let x = f32s(&src[tn].2);
            let y = f32s(&got[tn].2);
            let (pcc, mae) = pcc_mae(&x, &y);
            let rep = &t["metrics"];
            let pred = &mx["predicted"];
            let (rp, rm) = (rep["pcc"].as_f64().unwrap(), rep["mae"].as_f64().unwrap());
            // The file's metric is the decoded tensor's; the search's agrees with it.
            assert!(
                (pcc - rp).abs() <= (1e-3 * (1.0 - pcc)).max(1e-12),
                "{name} {tn}: {pcc} vs {rp}"
            );
            assert!((mae - rm).abs() <= 1e-5 * mae, "{name} {tn}: {mae} vs {rm}");
            assert!(
                (pred["pcc"].as_f64().unwrap() - rp).abs() <= 1e-9,
                "{name} {tn}"
            );
            assert!(
                (pred["mae"].as_f64().unwrap() - rm).abs() <= 1e-9 * rm.max(1e-30),
                "{name} {tn}"
            );
            match name {
                "greedy" | "optimal" => assert!(pcc >= 0.999 - 1e-12, "{name} {tn}: {pcc}"),
                "mae" => assert!(mae <= 0.004 * (1.0 + 1e-9), "{name} {tn}: {mae}"),
                "budget" => {
                    let bpw = 8.0 * t["encoded_bytes"].as_f64().unwrap() / x.len() as f64;
                    assert!(bpw <= 4.5, "{name} {tn}: {bpw}");
                }
                _ => {}
            }
            // Tiles and bytes per format: inspect reads them back from the file.
            let it = ins["tensors"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == tn)
                .unwrap();
            assert_eq!(it["mixed"], mx["formats"], "{name} {tn}");
            let tiles: u64 = mx["formats"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["tiles"].as_u64().unwrap())
                .sum();
            let shape = &t["shape"];
            let (r, c) = (shape[0].as_u64().unwrap(), shape[1].as_u64().unwrap());
            assert_eq!(tiles, r.div_ceil(32) * c.div_ceil(32));
        }
        assert_eq!(mixed, 6, "{name}: the six matrices of a layer");
    }
    // The optimal search needs fewer bytes than greedy at the same threshold.
    let size = |n: &str| {
        std::fs::metadata(dir.path().join(format!("{n}.tpk")))
            .unwrap()
            .len()
    };
    assert!(
        size("optimal") < size("greedy"),
        "{} {}",
        size("optimal"),
        size("greedy")
    );
}

#[test]
fn stored_assignment_exports_and_model_budget_holds() {
    let dir = tempfile::tempdir().unwrap();
    let m = minilm();
    let cfg = config(
        dir.path(),
        "model",
        r#"{"algorithm": "mixed-tile-optimal", "params": {"target_bpw": 4.25, "scope": "model", "formats": "bf16,bfp8,bfp4,bfp2,fp0"}}"#,
    );
    let tpk = dir.path().join("m.tpk");
    let j = tenpak_json(&[
        "compress",
        s(&m),
        "-o",
        s(&tpk),
        "--config",
        s(&cfg),
        "--filter",
        "encoder.layer.2.",
        "--force",
    ]);
    let (mut bytes, mut n) = (0u64, 0u64);
    let mut per_tensor_bpw = Vec::new();
    for t in j["tensors"].as_array().unwrap() {
        if t.get("mixed").is_some() {
            let e = t["encoded_bytes"].as_u64().unwrap();
            let k: u64 = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .product();
            bytes += e;
            n += k;
            per_tensor_bpw.push(8.0 * e as f64 / k as f64);
        }
    }
    assert!(8.0 * bytes as f64 / n as f64 <= 4.25);
    // Bytes went where they buy the most: tensors do not all get the same rate.
    let (lo, hi) = per_tensor_bpw
        .iter()
        .fold((f64::MAX, 0f64), |(a, b), &v| (a.min(v), b.max(v)));
    assert!(hi - lo > 0.1, "{per_tensor_bpw:?}");
    // The assignment reads back as npy + json, consistent with inspect.
    let out = dir.path().join("asg");
    let name = "encoder.layer.2.intermediate.dense.weight";
    let a = tenpak_json(&["assignment", s(&tpk), name, "-o", s(&out)]);
    let npy = std::fs::read(out.join("assignment.npy")).unwrap();
    assert_eq!(&npy[..8], b"\x93NUMPY\x01\x00");
    let hl = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    assert_eq!((10 + hl) % 64, 0);
    let header = std::str::from_utf8(&npy[10..10 + hl]).unwrap();
    // [1536, 384]: 48 tile rows of 12 tiles.
    assert!(
        header.contains("'shape': (48, 12)") && header.contains("'|u1'"),
        "{header}"
    );
    let codes = &npy[10 + hl..];
    assert_eq!(codes.len(), 48 * 12);
    let want: Vec<u64> = a["assignment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(codes.iter().map(|&c| c as u64).collect::<Vec<_>>(), want);
    let mapping: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("assignment_mapping.json")).unwrap())
            .unwrap();
    // The stored table holds only the formats in use, in candidate order.
    let table: Vec<&str> = (0..mapping["codes"].as_object().unwrap().len())
        .map(|i| mapping["codes"][i.to_string()].as_str().unwrap())
        .collect();
    let order = ["bf16", "bfp8", "bfp4", "bfp2", "fp0"];
    let pos: Vec<usize> = table
        .iter()
        .map(|f| order.iter().position(|o| o == f).unwrap())
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{table:?}");
    assert!(codes.iter().all(|&c| (c as usize) < table.len()));
    for (i, _) in table.iter().enumerate() {
        assert!(codes.contains(&(i as u8)), "format {i} is unused");
    }
    assert_eq!(mapping["tile_size"], 32);
    // Not a mixed tensor: a clear error.
    let e = tenpak_fails(
        &[
            "assignment",
            s(&tpk),
            "encoder.layer.2.output.LayerNorm.bias",
        ],
        1,
    );
    assert!(e.contains("not a mixed tensor"), "{e}");
}

#[test]
fn analyze_reports_mixed_rows_and_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::common::repo()
        .join("compression_configs/compression_config.mixed_tile_random.example.json");
    let out = dir.path().join("res");
    let j = tenpak_json(&[
        "analyze",
        s(&minilm()),
        "encoder.layer.3.attention.self.query.weight",
        "-c",
        "bfp8",
        "-c",
        "bfp4",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
    ]);
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2]["format"], "MIXED");
    assert_eq!(rows[2]["algorithm"], "mixed-tile-random");
    let t = out.join("mixed_tile_random/encoder.layer.3.attention.self.query.weight");
    for f in [
        "assignment.npy",
        "assignment_mapping.json",
        "encoder.layer.3.attention.self.query.weight_assignment.png",
        "size_vs_accuracy.png",
        "encoder.layer.3.attention.self.query.weight.csv",
        "encoder.layer.3.attention.self.query.weight_samples.png",
    ] {
        let b = std::fs::read(t.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        if f.ends_with(".png") {
            assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{f}");
        }
    }
    let csv =
        std::fs::read_to_string(t.join("encoder.layer.3.attention.self.query.weight.csv")).unwrap();
    assert_eq!(csv.lines().count(), 51, "a header and 50 samples");
    let summary = j["summary"].as_array().unwrap();
    assert!(summary.iter().any(|r| r["format"] == "MIXED"));
}

/// `--transpose` with a mixed-tile config is refused by name, before anything is written.
#[test]
fn transpose_with_a_mixed_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.tpk");
    let cfg = repo().join("compression_configs/compression_config.mixed_tile_optimal.json");
    let e = tenpak_fails(
        &[
            "compress",
            s(&minilm()),
            "-o",
            s(&out),
            "--config",
            s(&cfg),
            "--transpose",
        ],
        2,
    );
    assert!(
        e.contains("--transpose does not apply to a mixed-tile config"),
        "{e}"
    );
    assert!(!out.exists());
}
