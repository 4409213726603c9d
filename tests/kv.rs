//! KV-cache dumps: the reader (`tenpak::kv::dump`) on real dumps written by `tenpak kv capture`
//! from SmolLM2, and on damaged copies of them.

use crate::common::*;
use tenpak::kv::dump::{scan, DumpFilter, KvDType, Stage};
use tenpak::{Defect, ErrorKind};

/// Real fp16 dumps of one window of `ctx` tokens and `decode_steps` decode steps.
fn capture(root: &std::path::Path, ctx: &str, decode_steps: &str) {
    tenpak_ok(&[
        "kv",
        "capture",
        s(&smollm2()),
        "--corpus",
        s(&corpus()),
        "-o",
        s(root),
        "--windows",
        "1",
        "--ctx",
        ctx,
        "--decode-steps",
        decode_steps,
        "--dtype",
        "fp16",
        "-q",
    ]);
}

#[test]
fn reads_captured_dumps_and_refuses_damaged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("dumps");
    capture(&root, "16", "2");
    let all = scan(&root, &DumpFilter::default()).unwrap();
    // 30 layers x (one prefill of 16 tokens + two one-token decode steps).
    assert_eq!(all.len(), 30 * 3);
    let first = &all[0];
    assert_eq!((first.meta.layer_id, first.meta.seq_len), (0, 16));
    assert_eq!((first.meta.kv_heads, first.meta.head_dim), (3, 64));
    assert_eq!(first.meta.dtype, KvDType::Fp16);
    let k = first.read_k().unwrap();
    assert_eq!(
        k,
        std::fs::read(first.dir.join(&first.meta.k_file)).unwrap()
    );
    assert_eq!(k.len() as u64, first.meta.bin_bytes().unwrap());
    // Sorted by run, layer, then position.
    assert!(all
        .windows(2)
        .all(|w| (w[0].meta.layer_id, w[0].meta.seq_start)
            <= (w[1].meta.layer_id, w[1].meta.seq_start)));
    let decode = DumpFilter {
        stage: Some(Stage::Decode),
        ..DumpFilter::default()
    };
    let d = scan(&root, &decode).unwrap();
    assert_eq!(d.len(), 60);
    assert!(d
        .iter()
        .all(|x| x.meta.seq_len == 1 && x.meta.stage == Stage::Decode));
    let long = DumpFilter {
        min_seq_len: 2,
        max_seq_len: 16,
        ..DumpFilter::default()
    };
    assert_eq!(scan(&root, &long).unwrap().len(), 30);
    let none = DumpFilter {
        min_seq_len: 17,
        ..DumpFilter::default()
    };
    assert_eq!(scan(&root, &none).unwrap_err().kind, ErrorKind::Input);

    // A truncated .bin is a length defect naming the file.
    let bin = first.dir.join(&first.meta.v_file);
    let v = std::fs::read(&bin).unwrap();
    std::fs::write(&bin, &v[..v.len() - 2]).unwrap();
    let e = first.read_v().unwrap_err();
    assert_eq!(e.defect, Some(Defect::Length));
    assert!(e.to_string().contains(&first.meta.v_file), "{e}");
    // A meta file pointing outside its folder is refused at scan time, naming the meta file.
    let text = std::fs::read_to_string(&first.meta_path).unwrap();
    let hostile = text.replace(&first.meta.k_file, "../../secret.bin");
    std::fs::write(&first.meta_path, hostile).unwrap();
    let e = scan(&root, &DumpFilter::default()).unwrap_err();
    assert!(e.message.contains("not a file name"), "{e}");
    assert!(e.to_string().contains("meta_t0_16.json"), "{e}");
}

/// Every file under `root`, as (relative path, bytes), sorted.
fn files(root: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn f16s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect()
}

/// `kv compress` then `kv decompress` on real captured dumps: lossless methods give the folder
/// back byte for byte; with a lossy method the meta files and the first N layers come back
/// exactly and the other layers within their quantization error; `verify` and `inspect` read
/// the archive; the output folder is never left half-written.
#[test]
fn compress_and_decompress_real_dumps() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("dumps");
    capture(&root, "64", "1");
    let before = files(&root);
    let tpk = dir.path().join("kv.tpk");
    let back = dir.path().join("back");
    for m in ["gear-auto", "gear-delta", "gear", "zstd", "byteplane"] {
        let r = tenpak_json(&[
            "kv",
            "compress",
            s(&root),
            "-o",
            s(&tpk),
            "--lossless",
            m,
            "--lossless-first-n",
            "99",
            "--chunk-tokens",
            "16",
            "--force",
        ]);
        assert_eq!(r["dumps"], 60, "{m}");
        assert!(r["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["lossless"] == true));
        // A chunk that would grow is stored raw: gear's mode byte, byteplane's plane headers
        // (decode dumps are one token and do not compress).
        let framing = if m == "byteplane" { 8 } else { 1 };
        for t in r["tensors"].as_array().unwrap() {
            let chunks = t["seq_len"].as_u64().unwrap().div_ceil(16);
            assert!(
                t["payload_bytes"].as_u64().unwrap()
                    <= t["raw_bytes"].as_u64().unwrap() + framing * chunks,
                "{m}: {t}"
            );
        }
        tenpak_ok(&["kv", "decompress", s(&tpk), "-o", s(&back), "--force", "-q"]);
        assert_eq!(
            files(&back),
            before,
            "{m}: the folder comes back byte for byte"
        );
    }
    // Prefill K and V of a layer compress (gear-auto over the 64-token prefill).
    let r = tenpak_json(&[
        "kv",
        "compress",
        s(&root),
        "-o",
        s(&tpk),
        "--stage",
        "prefill",
        "--force",
    ]);
    assert!(r["payload_ratio"].as_f64().unwrap() > 1.05, "{r}");

    let v = tenpak_json(&["verify", s(&tpk)]);
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["tensors"], 60);
    tenpak_ok(&["inspect", s(&tpk)]);

    // Largest error allowed: absolute, plus relative to the tensor's largest magnitude (half
    // a step of each quantizer, with room for the f16 cast).
    for (lossy, abs, rel) in [
        ("kivi:bits=4,group=32", 0.0, 0.08),
        ("quant:bits=8", 0.0, 0.005),
        ("bound:abs=0.01", 0.01, 0.0),
        ("truncate:keep=4", 0.0, 0.0625),
    ] {
        let r = tenpak_json(&[
            "kv",
            "compress",
            s(&root),
            "-o",
            s(&tpk),
            "--lossy",
            lossy,
            "--lossless-first-n",
            "2",
            "--chunk-tokens",
            "32",
            "--force",
        ]);
        let bpv = r["bits_per_value"].as_f64().unwrap();
        assert!(bpv > 0.5 && bpv < 16.0, "{lossy}: {bpv}");
        tenpak_ok(&["kv", "decompress", s(&tpk), "-o", s(&back), "--force", "-q"]);
        let after = files(&back);
        assert_eq!(after.len(), before.len());
        for ((p, a), (q, b)) in before.iter().zip(&after) {
            assert_eq!(p, q);
            let layer: u32 = p
                .split("layer_")
                .nth(1)
                .and_then(|x| x.split(['/', '\\']).next())
                .unwrap()
                .parse()
                .unwrap();
            if p.ends_with(".json") || layer < 2 {
                assert_eq!(a, b, "{lossy}: {p} is exact");
            } else {
                assert_eq!(a.len(), b.len());
                let (x, y) = (f16s(a), f16s(b));
                let err = x
                    .iter()
                    .zip(&y)
                    .map(|(u, v)| (u - v).abs())
                    .fold(0f32, f32::max);
                let amax = x.iter().fold(0f32, |a, u| a.max(u.abs()));
                let tol = abs + rel * amax;
                assert!(err <= tol, "{lossy}: {p} max error {err} > {tol}");
            }
        }
    }
    // An existing output folder needs --force; a failed run leaves nothing behind.
    let err = tenpak_fails(&["kv", "decompress", s(&tpk), "-o", s(&back)], 2);
    assert!(err.contains("--force"), "{err}");
    let model_tpk = dir.path().join("not-kv.tpk");
    tenpak_ok(&[
        "compress",
        s(&minilm()),
        "-o",
        s(&model_tpk),
        "--limit",
        "1",
        "-q",
    ]);
    let err = tenpak_fails(
        &[
            "kv",
            "decompress",
            s(&model_tpk),
            "-o",
            s(&dir.path().join("x")),
        ],
        1,
    );
    assert!(err.contains("not a KV archive"), "{err}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.ends_with(".partial") || n == "x"),
        "{names:?}"
    );
}

fn csv_rows(path: &std::path::Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let head: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            head.iter()
                .cloned()
                .zip(l.split(',').map(String::from))
                .collect()
        })
        .collect()
}

/// `kv analyze` against the KV reference's own figures (tests/fixtures/kv-golden): the same CSV
/// field order, ratios within 0.1 % (zstd versions frame differently), MAE and cosine to the
/// reference's f32 precision.
#[test]
fn analyze_matches_the_reference_scripts() {
    let fx = repo().join("tests/fixtures/kv-golden");
    let dumps = fx.join("dumps");
    let dir = tempfile::tempdir().unwrap();
    for (case, args) in [
        (
            "ref_quant10",
            vec!["--lossy", "fake-quant:bits=10", "--lossless", "gear-delta"],
        ),
        (
            "ref_quant8",
            vec!["--lossy", "fake-quant:bits=8", "--lossless", "gear-delta"],
        ),
        (
            "ref_truncate6",
            vec!["--lossy", "truncate:keep=6", "--lossless", "gear-delta"],
        ),
        (
            "ref_gear",
            vec!["--lossless", "gear", "--lossless-first-n", "3"],
        ),
        (
            "ref_zstd",
            vec!["--lossless", "zstd", "--lossless-first-n", "3"],
        ),
    ] {
        let out = dir.path().join(case);
        let mut a = vec!["kv", "analyze", s(&dumps), "-o", s(&out), "-q"];
        a.extend(args);
        tenpak_ok(&a);
        let files: &[&str] = if case.starts_with("ref_blocknorm") {
            &["blocknorm_metrics.csv"]
        } else {
            &["mixed_layer_metrics.csv", "lossy_error_metrics.csv"]
        };
        for &file in files {
            let want = fx.join(case).join(file);
            let got = out.join(file);
            if !want.is_file() {
                // The reference writes no error CSV without lossy layers; tenpak its header.
                let g = std::fs::read_to_string(&got).unwrap();
                assert_eq!(g.lines().count(), 1, "{case} {file}");
                continue;
            }
            let (w, g) = (
                std::fs::read_to_string(&want).unwrap(),
                std::fs::read_to_string(&got).unwrap(),
            );
            assert_eq!(
                w.lines().next(),
                g.lines().next(),
                "{case} {file}: field order"
            );
            let mut w = csv_rows(&want);
            let mut g = csv_rows(&got);
            let key = |r: &std::collections::HashMap<String, String>| r["layer_id"].clone();
            w.sort_by_key(key);
            g.sort_by_key(key);
            assert_eq!(w.len(), g.len(), "{case} {file}");
            for (wr, gr) in w.iter().zip(&g) {
                for (k, wv) in wr {
                    let gv = &gr[k];
                    match k.as_str() {
                        "k_ratio" | "v_ratio" => {
                            let (a, b): (f64, f64) = (wv.parse().unwrap(), gv.parse().unwrap());
                            assert!((a - b).abs() / a < 1e-3, "{case} {k}: ref {a} tenpak {b}");
                        }
                        "lossless" => assert_eq!(wv, gv, "{case}"),
                        "topk_ratio" => assert_eq!(
                            wv.parse::<f64>().unwrap(),
                            gv.parse::<f64>().unwrap(),
                            "{case}"
                        ),
                        k if k.ends_with("cosine") => {
                            let (a, b): (f64, f64) = (wv.parse().unwrap(), gv.parse().unwrap());
                            assert!((a - b).abs() < 1e-6, "{case} {k}: ref {a} tenpak {b}");
                        }
                        k if k.starts_with("k_") || k.starts_with("v_") => {
                            let (a, b): (f64, f64) = (wv.parse().unwrap(), gv.parse().unwrap());
                            assert!(
                                (a - b).abs() <= 1e-6 * a.abs().max(1e-3),
                                "{case} {k}: ref {a} tenpak {b}"
                            );
                        }
                        _ => assert_eq!(wv, gv, "{case} {k}"),
                    }
                }
            }
        }
        let sum = std::fs::read_to_string(out.join("summary.json")).unwrap();
        let sum: serde_json::Value = serde_json::from_str(&sum).unwrap();
        assert!(sum["bits_per_value"].as_f64().unwrap() > 0.0);
        if !case.starts_with("ref_blocknorm") {
            assert!(out.join("mixed_summary.md").is_file() && out.join("kv.tpk").is_file());
        }
    }
}

/// `kv sweep` on the golden dumps: the reference's block-norm rows (its CSV header, its combo
/// names and figures: the same as `kv analyze`'s), the extended families, the Pareto front and
/// its plot.
#[test]
fn sweep_writes_the_reference_tables_and_a_front() {
    let fx = repo().join("tests/fixtures/kv-golden");
    let dumps = fx.join("dumps");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let r = tenpak_json(&[
        "kv",
        "sweep",
        s(&dumps),
        "-o",
        s(&out),
        "--block-sizes",
        "64",
        "--topk-ratios",
        "0.05",
        "--bits-list",
        "10",
        "--truncate-keep",
        "6",
        "--kivi-bits",
        "4",
        "--kivi-groups",
        "32",
    ]);
    let combos: Vec<&str> = r["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["combo"].as_str().unwrap())
        .collect();
    for c in [
        "bs64_topk0.05_b10",
        "blocknorm_bs64_b10",
        "quant_b10",
        "quant_b4",
        "truncate_k6",
        "kivi_b4_g32",
    ] {
        assert!(combos.contains(&c), "{c} in {combos:?}");
    }
    let bn = std::fs::read_to_string(out.join("blocknorm_sweep.csv")).unwrap();
    assert_eq!(
        bn.lines().next().unwrap(),
        "combo,block_size,topk_ratio,bits,weighted_k_ratio,weighted_v_ratio,weighted_kv_ratio,k_mae,v_mae,k_cosine,v_cosine,rows,passes_precision,out_dir"
    );
    // The block-norm row is the reference's analysis of these dumps (ref_blocknorm).
    let row = csv_rows(&out.join("blocknorm_sweep.csv")).remove(0);
    let want = csv_rows(&fx.join("ref_blocknorm/blocknorm_metrics.csv")).remove(0);
    let k: f64 = row["weighted_k_ratio"].parse().unwrap();
    let wk: f64 = want["k_ratio"].parse().unwrap();
    assert!((k - wk).abs() / wk < 1e-3, "{k} vs {wk}");
    // Sorted by weighted KV ratio; the front is non-empty and ordered by bits.
    let pts = r["points"].as_array().unwrap();
    assert!(pts
        .windows(2)
        .all(|w| w[0]["weighted_kv_ratio"].as_f64() >= w[1]["weighted_kv_ratio"].as_f64()));
    let front = csv_rows(&out.join("pareto.csv"));
    assert!(!front.is_empty());
    let bits: Vec<f64> = front
        .iter()
        .map(|r| r["bits_per_value"].parse().unwrap())
        .collect();
    assert!(bits.windows(2).all(|w| w[0] <= w[1]));
    for f in [
        "kv_sweep.csv",
        "blocknorm_best.md",
        "kv_best.md",
        "pareto.png",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
}

/// Sink and recent tokens of lossy layers are stored exactly (as overlay tensors) and come back
/// bit-exact; the other tokens are quantized.
#[test]
fn sink_and_recent_tokens_stay_exact() {
    let fx = repo().join("tests/fixtures/kv-golden");
    let dumps = fx.join("dumps");
    let dir = tempfile::tempdir().unwrap();
    let tpk = dir.path().join("kv.tpk");
    let back = dir.path().join("back");
    tenpak_ok(&[
        "kv",
        "compress",
        s(&dumps),
        "-o",
        s(&tpk),
        "--lossy",
        "kivi:bits=2,group=32",
        "--sink-tokens",
        "4",
        "--recent-tokens",
        "8",
        "--chunk-tokens",
        "32",
        "-q",
    ]);
    let ins = tenpak_json(&["inspect", s(&tpk)]);
    let names: Vec<&str> = ins["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"run0/layer_2/k_t0_128.bin#t0_4"),
        "{names:?}"
    );
    assert!(
        names.contains(&"run0/layer_2/v_t0_128.bin#t120_128"),
        "{names:?}"
    );
    assert!(!names
        .iter()
        .any(|n| n.starts_with("run0/layer_0/") && n.contains('#')));
    tenpak_ok(&["kv", "decompress", s(&tpk), "-o", s(&back), "-q"]);
    let row = 2 * 64 * 2; // bytes per token
    for f in ["k_t0_128.bin", "v_t0_128.bin"] {
        let a = std::fs::read(dumps.join("run0/layer_2").join(f)).unwrap();
        let b = std::fs::read(back.join("run0/layer_2").join(f)).unwrap();
        assert_eq!(a[..4 * row], b[..4 * row], "{f}: sinks");
        assert_eq!(a[120 * row..], b[120 * row..], "{f}: recent tokens");
        assert_ne!(
            a[4 * row..120 * row],
            b[4 * row..120 * row],
            "{f}: quantized"
        );
    }
}

/// The safetensors adapter: KV caches stored as LMCache does (`[layers, 2, tokens, kv_heads,
/// head_dim]`) compress like a dump folder and come back as one.
#[test]
fn lmcache_safetensors_compress_to_dumps() {
    let fx = repo().join("tests/fixtures/kv-golden/dumps/run0");
    let dir = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    for l in 0..3 {
        for kv in ["k", "v"] {
            all.extend(std::fs::read(fx.join(format!("layer_{l}/{kv}_t0_128.bin"))).unwrap());
        }
    }
    let st = dir.path().join("cache.safetensors");
    write_st(
        &st,
        vec![(
            "chunk.0",
            safetensors::Dtype::F16,
            vec![3, 2, 128, 2, 64],
            all,
        )],
    );
    let tpk = dir.path().join("kv.tpk");
    let r = tenpak_json(&[
        "kv",
        "compress",
        s(&st),
        "-o",
        s(&tpk),
        "--lossless-first-n",
        "9",
    ]);
    assert_eq!(r["dumps"], 3);
    let back = dir.path().join("back");
    tenpak_ok(&["kv", "decompress", s(&tpk), "-o", s(&back), "-q"]);
    for l in 0..3 {
        for kv in ["k", "v"] {
            let f = format!("layer_{l}/{kv}_t0_128.bin");
            assert_eq!(
                std::fs::read(back.join("chunk_0").join(&f)).unwrap(),
                std::fs::read(fx.join(&f)).unwrap(),
                "{f}"
            );
        }
        let meta =
            std::fs::read_to_string(back.join(format!("chunk_0/layer_{l}/meta_t0_128.json")))
                .unwrap();
        let m = tenpak::kv::dump::DumpMeta::parse(meta.as_bytes()).unwrap();
        assert_eq!(
            (m.layer_id, m.seq_len, m.kv_heads, m.head_dim),
            (l, 128, 2, 64)
        );
    }
    // Another shape is refused, naming the tensor.
    write_st(
        &st,
        vec![("x", safetensors::Dtype::F16, vec![4, 8], vec![0; 64])],
    );
    let err = tenpak_fails(&["kv", "compress", s(&st), "-o", s(&tpk), "--force"], 1);
    assert!(
        err.contains("'x'") && err.contains("[layers, 2, tokens"),
        "{err}"
    );
}

/// The reference's clip modes (`analyze_lossy_compare.py`): clipping by percentile and by sigma,
/// and clip + 8-bit quant (tenpak stores real codes, so only the error figures compare), give
/// the reference's MAE and cosine on the golden dumps.
#[test]
fn clip_modes_match_the_reference() {
    let fx = repo().join("tests/fixtures/kv-golden");
    let dumps = fx.join("dumps");
    let want = csv_rows(&fx.join("ref_clip/lossy_compare.csv"));
    let dir = tempfile::tempdir().unwrap();
    for (method, ours) in [
        ("clip_percentile", "clip:method=percentile"),
        ("clip_sigma", "clip:method=sigma"),
        ("quant_only", "quant:bits=8"),
        (
            "clip_percentile+quant",
            "clip-quant:method=percentile,bits=8",
        ),
        ("clip_sigma+quant", "clip-quant:method=sigma,bits=8"),
    ] {
        let w = want.iter().find(|r| r["method"] == method).unwrap();
        let out = dir.path().join(method);
        tenpak_ok(&[
            "kv",
            "analyze",
            s(&dumps),
            "-o",
            s(&out),
            "--lossy",
            ours,
            "-q",
        ]);
        let g = csv_rows(&out.join("lossy_error_metrics.csv")).remove(0);
        for k in ["k_mae", "v_mae", "k_cosine", "v_cosine"] {
            let (a, b): (f64, f64) = (w[k].parse().unwrap(), g[k].parse().unwrap());
            assert!(
                (a - b).abs() <= 1e-6 * a.abs().max(1e-2),
                "{method} {k}: ref {a} tenpak {b}"
            );
        }
    }
}

/// A hostile KV archive: names that would write outside the output folder, and token ranges
/// past their tensor, are refused naming the tensor; nothing is left behind.
#[test]
fn hostile_kv_archives_are_refused() {
    use tpk_format::{Stage, TensorEntry, TpkWriter};
    let dir = tempfile::tempdir().unwrap();
    let make = |names: &[(&str, Vec<u64>)]| {
        let p = dir.path().join("bad.tpk");
        let mut w = TpkWriter::create(&p, true).unwrap();
        w.set_metadata("kv.policy", "{}");
        for (name, dims) in names {
            let n: u64 = dims.iter().product();
            let payload = vec![0u8; 2 * n as usize];
            let c = w.write_chunk(&payload, 0, n).unwrap();
            w.add_tensor(TensorEntry {
                layout: Default::default(),
                name: name.to_string(),
                dtype: "F16".into(),
                dims: dims.clone(),
                source_bytes: 2 * n,
                stages: vec![Stage {
                    codec_id: 1,
                    codec_name: "raw".into(),
                    codec_version: 1,
                    params: vec![],
                }],
                metrics: vec![],
                chunks: vec![c],
            })
            .unwrap();
        }
        w.finish().unwrap();
        p
    };
    let out = dir.path().join("out");
    for (names, what) in [
        (vec![("../../etc/x.bin", vec![1, 1, 4])], "not a dump path"),
        (
            vec![("r/layer_0/.hidden", vec![1, 1, 4])],
            "not a dump path",
        ),
        (vec![("r/layer_0/k.bin#t0_1", vec![1, 1, 4])], "token range"),
        (
            vec![
                ("r/layer_0/k.bin", vec![2, 1, 4]),
                ("r/layer_0/k.bin#t5_6", vec![1, 1, 4]),
            ],
            "token range",
        ),
        (
            vec![
                ("r/layer_0/k.bin", vec![2, 1, 4]),
                ("r/layer_0/k.bin#t1_2", vec![]),
            ],
            "token range",
        ),
    ] {
        let p = make(&names);
        let err = tenpak_fails(&["kv", "decompress", s(&p), "-o", s(&out)], 1);
        assert!(
            err.contains(what) && !err.contains("panicked"),
            "{names:?}: {err}"
        );
        assert!(!out.exists());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
