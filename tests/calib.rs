//! Calibration, sensitivity and allocation on SmolLM2 (formats-spec/calibration.md): the
//! statistics come from the tokens after the evaluation slice, GPTQ lowers the output error the
//! statistics predict, the allocation keeps its budget and follows the sensitivities, and every
//! refusal names the problem.

use crate::common::*;
use std::path::Path;
use tenpak::calib::Calibration;

/// Calibrate SmolLM2 on `windows` windows of `ctx` tokens into `out`.
fn calibrate(out: &Path, windows: &str, ctx: &str) -> serde_json::Value {
    tenpak_json(&[
        "calibrate",
        s(&smollm2()),
        "-o",
        s(out),
        "--windows",
        windows,
        "--ctx",
        ctx,
        "--corpus",
        s(&corpus()),
        "--force",
        "-q",
    ])
}

fn decode(tpk: &Path, name: &str) -> Vec<f32> {
    let ar = tenpak::archive::Archive::open(tpk).unwrap();
    let (dt, b) = ar.decode_tensor(ar.find(name).unwrap()).unwrap();
    let mut v = Vec::new();
    tenpak::dtype::to_f32(dt, &b, &mut v);
    v
}

/// `tr((W - Q) H (W - Q)^T)`: the squared output error the second moment predicts.
fn output_error(w: &[f32], q: &[f32], h: &[f32], cols: usize) -> f64 {
    let mut e = 0f64;
    for (rw, rq) in w.chunks(cols).zip(q.chunks(cols)) {
        let d: Vec<f64> = rw.iter().zip(rq).map(|(a, b)| (a - b) as f64).collect();
        for i in 0..cols {
            let hi = &h[i * cols..(i + 1) * cols];
            e += d[i] * d.iter().zip(hi).map(|(x, &y)| x * y as f64).sum::<f64>();
        }
    }
    e
}

#[test]
fn calibration_statistics_come_from_after_the_evaluation_slice() {
    let dir = tempfile::tempdir().unwrap();
    let cal = dir.path().join("cal.safetensors");
    let r = calibrate(&cal, "2", "64");
    let info = &r["info"];
    assert_eq!(info["slice"]["first_token"], 32704, "{r}");
    assert_eq!(info["slice"]["windows"], 2);
    assert_eq!(info["rows"], 128, "two windows of 64 positions");
    assert!(info["slice"]["disjoint_from"]
        .as_str()
        .unwrap()
        .contains("evaluation"));
    // 30 layers x 4 inputs + the head; every matrix (and the tied embedding/head) covered.
    assert_eq!(r["inputs"], 121);
    let c = Calibration::open(&cal).unwrap();
    assert_eq!(c.info.inputs.len(), 211);
    assert_eq!(c.info.inputs["blk.7.attn_v.weight"], "blk.7.attn_q.weight");
    assert_eq!(c.info.inputs["token_embd.weight"], "token_embd.weight");
    for (w, cols) in [
        ("blk.3.ffn_down.weight", 1536),
        ("blk.3.attn_k.weight", 576),
    ] {
        let t = c.get(w).unwrap();
        assert_eq!(t.cols(), cols);
        let h = t.hessian.unwrap();
        // E[x^2] is the diagonal of E[x x^T]; the second moment is symmetric.
        for j in 0..cols {
            let d = h[j * cols + j];
            assert!(
                (d - t.importance[j]).abs() <= 1e-4 * d.abs().max(1e-6),
                "{w} channel {j}: {d} vs {}",
                t.importance[j]
            );
            let k = (j * 7 + 3) % cols;
            assert!((h[j * cols + k] - h[k * cols + j]).abs() <= 1e-4 * d.abs().max(1e-3));
        }
        assert!(t.importance.iter().all(|&v| v >= 0.0) && t.importance.iter().any(|&v| v > 0.0));
    }
    // Without second moments the file is small and GPTQ refuses it by name.
    let small = dir.path().join("small.safetensors");
    tenpak_ok(&[
        "calibrate",
        s(&smollm2()),
        "-o",
        s(&small),
        "--windows",
        "1",
        "--ctx",
        "32",
        "--no-hessian",
        "-q",
        "--corpus",
        s(&corpus()),
    ]);
    assert!(std::fs::metadata(&small).unwrap().len() < 2_000_000);
    let out = dir.path().join("x.tpk");
    let e = tenpak_fails(
        &[
            "compress",
            s(&smollm2()),
            "-o",
            s(&out),
            "--filter",
            "blk.0.",
            "--codec",
            "int4_g32",
            "--calibration",
            s(&small),
            "--gptq",
        ],
        2,
    );
    assert!(e.contains("second moments"), "{e}");
    assert!(!out.exists(), "nothing written on a refused plan");
    // The calibration slice must exist in the corpus.
    let e = tenpak_fails(
        &[
            "calibrate",
            s(&smollm2()),
            "-o",
            s(&small),
            "--windows",
            "500",
            "--force",
            "--corpus",
            s(&corpus()),
        ],
        2,
    );
    assert!(e.contains("after the 32704"), "{e}");
    // An existing output is not replaced silently.
    let e = tenpak_fails(
        &[
            "calibrate",
            s(&smollm2()),
            "-o",
            s(&small),
            "--windows",
            "1",
        ],
        2,
    );
    assert!(e.contains("--force"), "{e}");
}

#[test]
fn gptq_lowers_the_output_error_and_keeps_the_payload_format() {
    let dir = tempfile::tempdir().unwrap();
    let cal = dir.path().join("cal.safetensors");
    calibrate(&cal, "4", "128");
    let c = Calibration::open(&cal).unwrap();
    let plain = dir.path().join("plain.tpk");
    let model = smollm2();
    let mut runs = Vec::new();
    for (out, extra) in [
        (&plain, vec![]),
        (
            &dir.path().join("w.tpk"),
            vec!["--calibration", s(&cal), "--weighted"],
        ),
        (&dir.path().join("g.tpk"), vec!["--calibration", s(&cal)]),
    ] {
        let mut args = vec![
            "compress",
            s(&model),
            "-o",
            s(out),
            "--filter",
            "blk.2.",
            "--codec",
            "int3_g32_asym",
            "--force",
            "-q",
        ];
        args.extend(extra);
        let r = tenpak_json(&args);
        runs.push((out.to_path_buf(), r));
    }
    // Same sizes (the codec's own payload), labelled where calibrated.
    let sizes: Vec<u64> = runs
        .iter()
        .map(|(_, r)| r["file_bytes"].as_u64().unwrap())
        .collect();
    let t = |r: &serde_json::Value, n: &str| -> serde_json::Value {
        r["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == n)
            .unwrap()
            .clone()
    };
    let name = "blk.2.ffn_down.weight";
    assert!(t(&runs[0].1, name).get("calibrated").is_none());
    assert_eq!(t(&runs[1].1, name)["calibrated"], "weighted");
    assert_eq!(t(&runs[2].1, name)["calibrated"], "gptq");
    assert_eq!(
        t(&runs[2].1, "blk.2.attn_norm.weight").get("calibrated"),
        None
    );
    assert!(
        sizes
            .iter()
            .all(|&b| (b as i64 - sizes[0] as i64).abs() < 4096),
        "{sizes:?}"
    );
    // The files are ordinary: verify decodes every chunk; metadata says calibrated.
    for (p, _) in &runs[1..] {
        tenpak_ok(&["verify", s(p)]);
        let meta = tenpak_json(&["inspect", s(p)]);
        assert!(meta.to_string().contains("tenpak.calibration"), "{p:?}");
    }
    // The output error under the calibration's second moment: weighted < plain, GPTQ < weighted.
    let src = tenpak::input::open(&smollm2()).unwrap();
    for (w, cols) in [(name, 1536usize), ("blk.2.attn_v.weight", 576)] {
        let i = src.tensors().iter().position(|x| x.name == w).unwrap();
        let mut orig = Vec::new();
        tenpak::dtype::to_f32(src.tensors()[i].dtype, &src.data(i).unwrap(), &mut orig);
        let h = c.get(w).unwrap().hessian.unwrap();
        let e: Vec<f64> = runs
            .iter()
            .map(|(p, _)| output_error(&orig, &decode(p, w), &h, cols))
            .collect();
        assert!(
            e[1] < e[0] && e[2] < 0.8 * e[1],
            "{w}: plain, weighted, gptq {e:?}"
        );
    }
    // Same bytes whatever the thread count.
    let one = dir.path().join("g1.tpk");
    tenpak_ok(&[
        "--threads",
        "1",
        "compress",
        s(&smollm2()),
        "-o",
        s(&one),
        "--filter",
        "blk.2.",
        "--codec",
        "int3_g32_asym",
        "--calibration",
        s(&cal),
        "-q",
    ]);
    assert_eq!(
        std::fs::read(&one).unwrap(),
        std::fs::read(&runs[2].0).unwrap(),
        "GPTQ output depends on the thread count"
    );
    // grid takes GPTQ too; nvfp4 weighted block scales (GPTQ does not apply to its tiles), which
    // lower the importance-weighted error.
    let r = tenpak_json(&[
        "compress",
        s(&smollm2()),
        "-o",
        s(&one),
        "--filter",
        "blk.2.attn_v",
        "--codec",
        "grid:n=16,group=32",
        "--calibration",
        s(&cal),
        "--force",
        "-q",
    ]);
    assert_eq!(r["tensors"][0]["calibrated"], "gptq");
    let plain_nv = dir.path().join("nv.tpk");
    tenpak_ok(&[
        "compress",
        s(&smollm2()),
        "-o",
        s(&plain_nv),
        "--filter",
        "blk.2.ffn_up",
        "--codec",
        "nvfp4",
        "-q",
    ]);
    let r = tenpak_json(&[
        "compress",
        s(&smollm2()),
        "-o",
        s(&one),
        "--filter",
        "blk.2.ffn_up",
        "--codec",
        "nvfp4",
        "--calibration",
        s(&cal),
        "--force",
        "-q",
    ]);
    assert_eq!(r["tensors"][0]["calibrated"], "weighted");
    tenpak_ok(&["verify", s(&one)]);
    let w = "blk.2.ffn_up.weight";
    let i = src.tensors().iter().position(|x| x.name == w).unwrap();
    let mut orig = Vec::new();
    tenpak::dtype::to_f32(src.tensors()[i].dtype, &src.data(i).unwrap(), &mut orig);
    let imp = c.get(w).unwrap().importance;
    let werr = |q: &[f32]| -> f64 {
        orig.iter()
            .zip(q)
            .enumerate()
            .map(|(k, (a, b))| imp[k % 576] as f64 * ((a - b) as f64).powi(2))
            .sum()
    };
    let (ep, ew) = (werr(&decode(&plain_nv, w)), werr(&decode(&one, w)));
    assert!(ew < ep, "weighted nvfp4 {ew} vs plain {ep}");
}

#[test]
fn sensitivity_measures_each_matrix_and_codec() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sens.json");
    let r = tenpak_json(&[
        "sensitivity",
        s(&smollm2()),
        "-o",
        s(&out),
        "--filter",
        "blk.29.",
        "--windows",
        "1",
        "--ctx",
        "64",
        "--codecs",
        "int4_g32,bfp8",
        "-q",
        "--corpus",
        s(&corpus()),
    ]);
    let ts = r["tensors"].as_array().unwrap();
    assert_eq!(ts.len(), 7, "the seven matrices of block 29");
    assert_eq!(r["slice"]["first_token"], 32704);
    for t in ts {
        let rel = t["rel_sq"].as_f64().unwrap();
        assert!((rel - 2e-3).abs() < 2e-4, "{t}");
        let (a, k) = (t["alpha"].as_f64().unwrap(), t["kld"].as_f64().unwrap());
        assert!(k > 0.0 && (a - k / rel).abs() <= 1e-9 * a.max(1.0), "{t}");
        let c = t["codecs"].as_array().unwrap();
        assert_eq!(c.len(), 2);
        // 4-bit error is larger than 8-bit tile error, and the output feels it more.
        assert!(c[0]["rel_sq"].as_f64() > c[1]["rel_sq"].as_f64(), "{t}");
        assert!(c[0]["kld"].as_f64() > c[1]["kld"].as_f64(), "{t}");
    }
    // The file on disk is what was printed, and compress reads it.
    let back = tenpak::allocate::Sensitivity::read(&out).unwrap();
    assert_eq!(back.tensors.len(), 7);
    // Seeded: the same file twice.
    let again = dir.path().join("again.json");
    tenpak_ok(&[
        "sensitivity",
        s(&smollm2()),
        "-o",
        s(&again),
        "--filter",
        "blk.29.attn_v",
        "--windows",
        "1",
        "--ctx",
        "64",
        "-q",
        "--corpus",
        s(&corpus()),
    ]);
    let a = tenpak::allocate::Sensitivity::read(&again).unwrap();
    let b = back
        .tensors
        .iter()
        .find(|t| t.name == "blk.29.attn_v.weight")
        .unwrap();
    assert_eq!(a.tensors[0].kld, b.kld);
    let e = tenpak_fails(
        &[
            "sensitivity",
            s(&smollm2()),
            "-o",
            s(&again),
            "--filter",
            "nothing.like.this",
            "--force",
            "--corpus",
            s(&corpus()),
        ],
        1,
    );
    assert!(e.contains("no matrix"), "{e}");
}

/// A hand-made sensitivity file for SmolLM2's block 1: the matrix whose name contains `hot`
/// has alpha `a`, the others 0.01.
fn block1_sensitivities(path: &Path, hot: &str, a: f64) {
    let names: Vec<String> = tenpak::input::open(&smollm2())
        .unwrap()
        .tensors()
        .iter()
        .filter(|t| t.name.starts_with("blk.1.") && t.dims.len() == 2)
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(names.len(), 7);
    let tensors: Vec<serde_json::Value> = names
        .iter()
        .map(|n| {
            let al = if n.contains(hot) { a } else { 0.01 };
            serde_json::json!({"name": n, "numel": 1, "alpha": al, "rel_sq": 2e-3, "kld": al * 2e-3})
        })
        .collect();
    std::fs::write(
        path,
        serde_json::json!({"format": 1, "model": "test", "method": "hand-made", "seed": 1,
            "reference_nll": 3.0, "seconds": 0.0, "tensors": tensors,
            "slice": {"corpus": "c", "first_token": 32704, "windows": 1, "ctx": 64,
                      "sha256": "0", "disjoint_from": "evaluation"}})
        .to_string(),
    )
    .unwrap();
}

#[test]
fn allocation_keeps_the_budget_and_follows_the_sensitivities() {
    let dir = tempfile::tempdir().unwrap();
    // Sensitivities: block 1's attn_v matters a great deal, the rest little.
    let sens = dir.path().join("sens.json");
    block1_sensitivities(&sens, "attn_v", 100.0);
    let out = dir.path().join("a.tpk");
    let model = smollm2();
    let base = [
        "compress",
        s(&model),
        "-o",
        s(&out),
        "--filter",
        "blk.1.",
        "--candidates",
        "grid:n=8,group=32,grid:n=16,group=32,int8",
        "-q",
    ];
    let mut args = base.to_vec();
    args.extend([
        "--target-bpw",
        "4.5",
        "--sensitivity",
        s(&sens),
        "--dry-run",
    ]);
    let dry = tenpak_json(&args);
    assert!(!out.exists(), "--dry-run writes nothing");
    assert_eq!(dry["method"], "sensitivity");
    let codec_of = |a: &serde_json::Value, n: &str| -> String {
        a["choices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["tensor"].as_str().unwrap().contains(n))
            .unwrap()["codec"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(codec_of(&dry, "attn_v"), "int8", "{dry}");
    for n in [
        "attn_q",
        "attn_k",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ] {
        assert_ne!(codec_of(&dry, n), "int8", "{n}: {dry}");
    }
    // Written: the file keeps the budget, stores the plan, and each tensor has its codec.
    let mut args = base.to_vec();
    args.extend(["--target-bpw", "4.5", "--sensitivity", s(&sens)]);
    let r = tenpak_json(&args);
    let elements = r["allocation"]["elements"].as_u64().unwrap();
    let bytes = r["compress"]["file_bytes"].as_u64().unwrap();
    assert!(
        bytes as f64 * 8.0 / elements as f64 <= 4.5,
        "{bytes} bytes for {elements}"
    );
    assert!(
        bytes as f64 * 8.0 / elements as f64 > 4.0,
        "the budget is used"
    );
    let meta = tenpak_json(&["inspect", s(&out)]).to_string();
    assert!(meta.contains("tenpak.allocation"));
    let ts = r["compress"]["tensors"].as_array().unwrap();
    let v = ts
        .iter()
        .find(|t| t["name"] == "blk.1.attn_v.weight")
        .unwrap();
    assert_eq!(v["codec"], "int:bits=8,group=32");
    // More budget never predicts a worse output.
    let mut last = f64::INFINITY;
    for bpw in ["4", "5", "6", "8"] {
        let mut args = base.to_vec();
        args.extend(["--target-bpw", bpw, "--dry-run"]);
        let a = tenpak_json(&args);
        assert_eq!(a["method"], "proxy");
        let k = a["predicted_kld"].as_f64().unwrap();
        assert!(k <= last, "{bpw} bpw predicts {k} > {last}");
        last = k;
    }
    // Refusals name the problem.
    let mut args = base.to_vec();
    args.extend(["--target-bpw", "1"]);
    let e = tenpak_fails(&args, 2);
    assert!(e.contains("budget"), "{e}");
    let e = tenpak_fails(
        &[
            "compress",
            s(&smollm2()),
            "-o",
            s(&out),
            "--allocate",
            "sensitivity",
            "--target-bpw",
            "5",
            "--force",
        ],
        2,
    );
    assert!(e.contains("--sensitivity"), "{e}");
    let e = tenpak_fails(
        &[
            "compress",
            s(&smollm2()),
            "-o",
            s(&out),
            "--sensitivity",
            s(&sens),
            "--force",
        ],
        2,
    );
    assert!(e.contains("budget"), "{e}");
    std::fs::write(&sens, "{\"format\": 2}").unwrap();
    let e = tenpak_fails(
        &[
            "compress",
            s(&smollm2()),
            "-o",
            s(&out),
            "--target-bpw",
            "5",
            "--sensitivity",
            s(&sens),
            "--force",
        ],
        1,
    );
    assert!(e.contains("sens.json"), "{e}");
}

/// The encoder path: MiniLM's statistics come from the sentences after the 2,000 `eval embed`
/// reads, its sensitivity is the sentence embeddings' drift, and GPTQ takes its matrices.
#[test]
fn encoder_calibration_and_sensitivity() {
    let dir = tempfile::tempdir().unwrap();
    let cal = dir.path().join("cal.safetensors");
    let r = tenpak_json(&[
        "calibrate",
        s(&minilm()),
        "-o",
        s(&cal),
        "--windows",
        "8",
        "--corpus",
        s(&corpus()),
        "-q",
    ]);
    assert_eq!(r["info"]["slice"]["unit"], "sentences", "{r}");
    assert_eq!(r["info"]["slice"]["first_token"], 2000);
    assert_eq!(r["inputs"], 24, "6 layers x 4 inputs");
    let c = Calibration::open(&cal).unwrap();
    assert_eq!(c.info.inputs.len(), 36);
    assert_eq!(
        c.info.inputs["encoder.layer.2.attention.self.value.weight"],
        "encoder.layer.2.attention.self.query.weight"
    );
    assert_eq!(
        c.get("encoder.layer.2.output.dense.weight").unwrap().cols(),
        1536
    );
    assert!(
        c.get("embeddings.word_embeddings.weight").is_none(),
        "a lookup has no input"
    );
    let sens = dir.path().join("sens.json");
    let r = tenpak_json(&[
        "sensitivity",
        s(&minilm()),
        "-o",
        s(&sens),
        "--filter",
        "encoder.layer.5.",
        "--windows",
        "8",
        "--corpus",
        s(&corpus()),
        "-q",
    ]);
    assert_eq!(r["measure"], "embedding_drift");
    let ts = r["tensors"].as_array().unwrap();
    assert_eq!(ts.len(), 6);
    for t in ts {
        assert!(
            t["kld"].as_f64().unwrap() > 0.0 && t.get("delta_nll").is_none(),
            "{t}"
        );
    }
    let out = dir.path().join("m.tpk");
    let r = tenpak_json(&[
        "compress",
        s(&minilm()),
        "-o",
        s(&out),
        "--filter",
        "encoder.layer.5.",
        "--codec",
        "int4_g32",
        "--calibration",
        s(&cal),
        "-q",
    ]);
    let t = r["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "encoder.layer.5.output.dense.weight")
        .unwrap();
    assert_eq!(t["calibrated"], "gptq");
}

/// The whole-model mixed-tile search takes the sensitivities as weights: the sensitive
/// matrix keeps more bytes per element than with element weights.
#[test]
fn mixed_tile_model_search_is_output_aware() {
    let dir = tempfile::tempdir().unwrap();
    let model = smollm2();
    let sens = dir.path().join("sens.json");
    block1_sensitivities(&sens, "attn_k", 1000.0);
    let cfg = repo().join("compression_configs/compression_config.mixed_tile_model_budget.json");
    let out = dir.path().join("m.tpk");
    let k_bytes = |extra: &[&str]| -> u64 {
        let mut args = vec![
            "compress",
            s(&model),
            "-o",
            s(&out),
            "--filter",
            "blk.1.",
            "--config",
            s(&cfg),
            "--force",
            "-q",
        ];
        args.extend(extra);
        let r = tenpak_json(&args);
        r["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "blk.1.attn_k.weight")
            .unwrap()["encoded_bytes"]
            .as_u64()
            .unwrap()
    };
    let plain = k_bytes(&[]);
    let aware = k_bytes(&["--sensitivity", s(&sens)]);
    assert!(
        aware > plain,
        "attn_k: {aware} bytes with its sensitivity, {plain} without"
    );
    let per_tensor = repo().join("compression_configs/compression_config.mixed_tile_optimal.json");
    let e = tenpak_fails(
        &[
            "compress",
            s(&model),
            "-o",
            s(&out),
            "--filter",
            "blk.1.",
            "--config",
            s(&per_tensor),
            "--sensitivity",
            s(&sens),
            "--force",
        ],
        2,
    );
    assert!(e.contains("whole-model"), "{e}");
}

/// vq with calibration statistics learns its codebook and assigns vectors under the column
/// weights: a lower importance-weighted error, the same payload size and format.
#[test]
fn vq_codebooks_learn_under_the_importance() {
    let dir = tempfile::tempdir().unwrap();
    let cal = dir.path().join("cal.safetensors");
    calibrate(&cal, "2", "128");
    let c = Calibration::open(&cal).unwrap();
    let w = "blk.4.ffn_gate.weight";
    let (plain, weighted) = (dir.path().join("p.tpk"), dir.path().join("w.tpk"));
    let model = smollm2();
    let mut sizes = Vec::new();
    for (out, extra) in [
        (&plain, vec![]),
        (&weighted, vec!["--calibration", s(&cal)]),
    ] {
        let mut args = vec![
            "compress",
            s(&model),
            "-o",
            s(out),
            "--filter",
            "blk.4.ffn_gate",
            "--codec",
            "vq:d=4,k=256,group=32",
            "-q",
        ];
        args.extend(extra);
        let r = tenpak_json(&args);
        sizes.push(r["file_bytes"].as_u64().unwrap());
        if out == &weighted {
            assert_eq!(r["tensors"][0]["calibrated"], "weighted", "{r}");
        }
        tenpak_ok(&["verify", s(out)]);
    }
    assert!(
        (sizes[0] as i64 - sizes[1] as i64).abs() < 1024,
        "{sizes:?}"
    );
    let src = tenpak::input::open(&smollm2()).unwrap();
    let i = src.tensors().iter().position(|x| x.name == w).unwrap();
    let mut orig = Vec::new();
    tenpak::dtype::to_f32(src.tensors()[i].dtype, &src.data(i).unwrap(), &mut orig);
    let imp = c.get(w).unwrap().importance;
    let werr = |q: &[f32]| -> f64 {
        orig.iter()
            .zip(q)
            .enumerate()
            .map(|(k, (a, b))| imp[k % 576] as f64 * ((a - b) as f64).powi(2))
            .sum()
    };
    let (ep, ew) = (werr(&decode(&plain, w)), werr(&decode(&weighted, w)));
    assert!(ew < ep, "weighted vq {ew} vs plain {ep}");
}
