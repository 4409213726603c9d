//! `tenpak analyze` and compression configs on the real MiniLM.

use crate::common::*;

/// The report's rows match what `compress` writes for the same tensor and format, its files are
/// all there, and the summary aggregates the rows.
#[test]
fn analyze_matches_compress_and_writes_results() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("res");
    let m = minilm();
    let j = tenpak_json(&[
        "analyze",
        s(&m),
        "encoder.layer.1.attention",
        "-c",
        "bfp8",
        "-c",
        "nvfp4",
        "-c",
        "fp0",
        "--out",
        s(&out),
    ]);
    let rows = j["rows"].as_array().unwrap();
    // 4 weights + 4 biases + LayerNorm weight and bias of attention.output: 10 tensors x 3.
    assert_eq!(rows.len(), 30, "{rows:?}");
    for f in [
        "table.txt",
        "table.csv",
        "table.json",
        "compression_config.used.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let csv = std::fs::read_to_string(out.join("table.csv")).unwrap();
    assert_eq!(csv.lines().count(), 31);
    let used: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("compression_config.used.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(used["algorithm"], "none");
    assert_eq!(used["seed_source"], "none");
    // fp0 has no PCC; its MAE is the mean magnitude.
    let fp0 = rows.iter().find(|r| r["format"] == "fp0").unwrap();
    assert!(fp0["pcc"].is_null());
    assert_eq!(fp0["encoded_bytes"], 0);
    // Same numbers as compress for a matrix.
    let name = "encoder.layer.1.attention.self.value.weight";
    for fmt in ["bfp8", "nvfp4"] {
        let tpk = dir.path().join("x.tpk");
        let c = tenpak_json(&[
            "compress",
            s(&m),
            "-o",
            s(&tpk),
            "--filter",
            name,
            "--codec",
            fmt,
            "--force",
        ]);
        let t = &c["tensors"][0];
        let r = rows
            .iter()
            .find(|r| r["tensor"] == name && r["format"] == fmt)
            .unwrap();
        assert_eq!(r["encoded_bytes"], t["encoded_bytes"], "{fmt}");
        assert_eq!(r["pcc"], t["metrics"]["pcc"], "{fmt}");
        assert_eq!(r["mae"], t["metrics"]["mae"], "{fmt}");
        assert_eq!(r["atol"], t["metrics"]["max_abs"], "{fmt}");
        // 384 x 384: 144 tiles.
        let tb = if fmt == "bfp8" { 1088 } else { 576 };
        assert_eq!(r["encoded_bytes"], 144 * tb);
        assert_eq!(
            r["bits_per_weight"],
            8.0 * (144 * tb) as f64 / (384.0 * 384.0)
        );
    }
    let summary = j["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 3);
    for sr in summary {
        let f = sr["format"].as_str().unwrap();
        let sum: u64 = rows
            .iter()
            .filter(|r| r["format"] == f)
            .map(|r| r["encoded_bytes"].as_u64().unwrap())
            .sum();
        assert_eq!(sr["encoded_bytes"].as_u64().unwrap(), sum);
        assert_eq!(sr["tensors"], 10);
    }
    // --summary prints only the summary table.
    let text = tenpak_ok(&[
        "analyze",
        s(&m),
        name,
        "-c",
        "bfp4",
        "--summary",
        "--no-files",
    ]);
    assert!(text.contains("summary") && !text.contains(name), "{text}");
}

/// A config runs the `none` baseline and its algorithm; transposing changes which elements share
/// an exponent, so the numbers differ, and the seed is recorded.
#[test]
fn analyze_with_transpose_config() {
    let dir = tempfile::tempdir().unwrap();
    let root = crate::common::repo();
    let cfg = root.join("compression_configs/compression_config.transpose.example.json");
    let out = dir.path().join("res");
    let j = tenpak_json(&[
        "analyze",
        s(&minilm()),
        "encoder.layer.0.intermediate.dense.weight",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
    ]);
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8); // 2 runs x 4 formats
    assert_eq!(j["config"]["seed"], 123);
    assert_eq!(j["config"]["seed_source"], "config");
    let get = |alg: &str, f: &str| {
        rows.iter()
            .find(|r| r["algorithm"] == alg && r["format"] == f)
            .unwrap()
            .clone()
    };
    let (a, b) = (get("none", "bfp4"), get("transpose", "bfp4"));
    assert_ne!(a["mae"], b["mae"]);
    // [1536, 384]: 48 x 12 tiles either way.
    assert_eq!(a["encoded_bytes"], b["encoded_bytes"]);
}

/// Every shipped config parses and dry-runs; the seed analyzer's own example configs are read
/// unchanged, extra params warned about by name.
#[test]
fn shipped_and_seed_configs() {
    let root = crate::common::repo().join("compression_configs");
    let mut n = 0;
    for e in std::fs::read_dir(&root).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        n += 1;
        tenpak_ok(&[
            "analyze",
            s(&minilm()),
            "pooler.dense",
            "--config",
            s(&p),
            "--no-files",
            "-q",
        ]);
        // And its compression plan, over the whole model.
        let plan: serde_json::Value = serde_json::from_str(&tenpak_ok(&[
            "compress",
            s(&minilm()),
            "--config",
            s(&p),
            "--dry-run",
            "--json",
        ]))
        .unwrap();
        assert_eq!(
            plan["tensors"].as_array().unwrap().len(),
            104,
            "{}",
            p.display()
        );
    }
    assert!(n >= 3);
    let dir = tempfile::tempdir().unwrap();
    // The seed's examples, verbatim.
    let greedy = r#"{
  "algorithm": "mixed-tile-greedy",
  "quantization_formats": ["mxfp4", "nvfp4", "bf16", "bfp8", "bfp4", "bfp2", "fp0"],
  "params": {"metric": "pcc", "threshold": 0.999, "cluster": "kmeans", "k": 10}
}"#;
    let minimal = r#"{"algorithm": "none", "params": {}}"#;
    let full = r#"{
  "algorithm": "mixed-tile-threshold",
  "quantization_formats": ["bf16", "bfp8", "bfp4", "bfp2", "fp0"],
  "seed": 123,
  "random_seed": false,
  "params": {"metric": "pcc", "threshold": 0.94}
}"#;
    let transpose_extra = r#"{"algorithm": "transpose", "params": {"cluster": "kmeans", "k": 10}}"#;
    for (name, text, ok) in [
        ("greedy", greedy, true),
        ("minimal", minimal, true),
        ("full", full, true),
        ("transpose_extra", transpose_extra, true),
    ] {
        let p = dir.path().join(format!("{name}.json"));
        std::fs::write(&p, text).unwrap();
        let o = tenpak(&[
            "analyze",
            s(&minilm()),
            "pooler.dense.weight",
            "--config",
            s(&p),
            "--no-files",
            "-q",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        if ok {
            assert!(o.status.success(), "{name}: {err}");
            if name == "transpose_extra" || name == "greedy" {
                assert!(err.contains("ignores params 'cluster', 'k'"), "{err}");
            }
            if name == "greedy" || name == "full" {
                assert!(String::from_utf8_lossy(&o.stdout).contains("MIXED"));
            }
        } else {
            assert!(!o.status.success());
        }
    }
    // A wrong value names its field.
    let p = dir.path().join("bad.json");
    std::fs::write(&p, r#"{"quantization_formats": ["bfp8", "bfp5"]}"#).unwrap();
    let o = tenpak(&["analyze", s(&minilm()), "--config", s(&p), "--no-files"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("quantization_formats[1]"));
}

/// `compress --config` applies the algorithm to tile codecs and records the resolved config.
#[test]
fn compress_records_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let root = crate::common::repo();
    let cfg = root.join("compression_configs/compression_config.transpose.example.json");
    let tpk = dir.path().join("t.tpk");
    tenpak_ok(&[
        "compress",
        s(&minilm()),
        "-o",
        s(&tpk),
        "--filter",
        "pooler.dense.weight",
        "--codec",
        "bfp4",
        "--config",
        s(&cfg),
        "-q",
    ]);
    let j = tenpak_json(&["inspect", s(&tpk)]);
    let c: serde_json::Value =
        serde_json::from_str(j["metadata"]["tenpak.config"].as_str().unwrap()).unwrap();
    assert_eq!(c["algorithm"], "transpose");
    assert_eq!(c["seed"], 123);
    let o: serde_json::Value =
        serde_json::from_str(j["metadata"]["tenpak.options"].as_str().unwrap()).unwrap();
    assert_eq!(o["transpose"], true);
}

/// `plot staircase` and `analyze --plots` write real PNGs (and nothing is left half-written).
#[test]
fn plots_are_pngs() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("stair.png");
    tenpak_ok(&[
        "plot",
        "staircase",
        "-c",
        "bfp8",
        "-c",
        "mxfp4",
        "--rand-samples",
        "3",
        "--out",
        s(&png),
    ]);
    let b = std::fs::read(&png).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR width and height.
    assert_eq!(u32::from_be_bytes(b[16..20].try_into().unwrap()), 1200);
    let out = dir.path().join("res");
    tenpak_ok(&[
        "analyze",
        s(&minilm()),
        "pooler.dense",
        "-c",
        "bfp4",
        "-c",
        "nvfp4",
        "--plots",
        "--out",
        s(&out),
        "-q",
    ]);
    for t in ["pooler.dense.weight", "pooler.dense.bias"] {
        let b = std::fs::read(out.join("plots").join(format!("{t}.png"))).unwrap();
        assert_eq!(&b[..4], b"\x89PNG");
    }
    let stray: Vec<_> = std::fs::read_dir(out.join("plots"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(stray.is_empty());
    let bad = tenpak(&["plot", "staircase", "-c", "bfp9", "--out", s(&png)]);
    assert_eq!(bad.status.code(), Some(2));
}
