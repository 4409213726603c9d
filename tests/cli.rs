//! The command line: flags, errors, exit codes, output formats.

use crate::common::*;

#[test]
fn usage_errors_exit_2() {
    tenpak_fails(&["compress"], 2);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.tpk");
    let m = minilm();
    let err = tenpak_fails(&["compress", s(&m), "-o", s(&out), "--codec", "nope"], 2);
    assert!(
        err.contains("unknown codec 'nope'") && err.contains("tenpak codecs"),
        "{err}"
    );
    tenpak_fails(
        &["compress", s(&m), "-o", s(&out), "--codec", "zstd:level=99"],
        2,
    );
    assert!(!out.exists());
}

#[test]
fn missing_input_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x.tpk");
    let err = tenpak_fails(
        &["compress", "/nonexistent/model.safetensors", "-o", s(&x)],
        1,
    );
    assert!(
        err.starts_with("tenpak: error: /nonexistent/model.safetensors"),
        "{err}"
    );
    // Not a model at all.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"this is not a model").unwrap();
    let err = tenpak_fails(
        &["compress", s(&junk), "-o", s(&dir.path().join("y.tpk"))],
        1,
    );
    assert!(err.contains("junk.safetensors"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no output left behind"
    );
}

#[test]
fn existing_output_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.tpk");
    std::fs::write(&out, b"precious").unwrap();
    let o = tenpak(&[
        "compress",
        s(&minilm()),
        "-o",
        s(&out),
        "--limit",
        "1",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    tenpak_ok(&[
        "compress",
        s(&minilm()),
        "-o",
        s(&out),
        "--limit",
        "1",
        "--force",
        "-q",
    ]);
    assert_ne!(std::fs::read(&out).unwrap(), b"precious");
    // Decompress refuses to overwrite too.
    let st = dir.path().join("x.safetensors");
    std::fs::write(&st, b"keep").unwrap();
    let o = tenpak(&["decompress", s(&out), "-o", s(&st), "-q"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read(&st).unwrap(), b"keep");
}

#[test]
fn tables_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.tpk");
    let table = tenpak_ok(&[
        "compress",
        s(&minilm()),
        "-o",
        s(&out),
        "--filter",
        "pooler",
        "--codec",
        "bf16",
        "--meta",
        "team=ml",
        "-q",
    ]);
    for col in [
        "name",
        "shape",
        "codec",
        "orig bytes",
        "enc bytes",
        "ratio",
        "PCC",
        "MAE",
        "atol",
        "file bytes:",
        "ratio vs fp32:",
    ] {
        assert!(table.contains(col), "missing {col} in\n{table}");
    }
    assert!(table.contains("pooler.dense.weight"));
    let text = tenpak_ok(&["inspect", s(&out), "--tensors"]);
    assert!(text.contains("format:          tpk 1.1"), "{text}");
    assert!(text.contains("meta user.team: ml"));
    assert!(text.contains("pooler.dense.bias"));
    let j = tenpak_json(&["inspect", s(&out)]);
    assert_eq!(j["tensor_count"], 2);
    assert_eq!(j["metadata"]["user.team"], "ml");
    assert_eq!(
        j["file_bytes"].as_u64().unwrap(),
        std::fs::metadata(&out).unwrap().len()
    );
    let opts: serde_json::Value =
        serde_json::from_str(j["metadata"]["tenpak.options"].as_str().unwrap()).unwrap();
    assert_eq!(opts["codec"], "bf16");
    let m = &j["tensors"][1]["metrics"];
    assert!(
        m["pcc"].as_f64().unwrap() > 0.9999 && m["sqnr_db"].as_f64().unwrap() > 40.0,
        "{m}"
    );
    let v = tenpak_json(&["verify", s(&out)]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    let codecs = tenpak_ok(&["codecs"]);
    assert!(codecs.contains("byteplane") && codecs.contains("zstd"));
}

#[test]
fn decompress_dtypes_and_filter() {
    let dir = tempfile::tempdir().unwrap();
    let tpk = dir.path().join("x.tpk");
    tenpak_ok(&[
        "compress",
        s(&minilm()),
        "-o",
        s(&tpk),
        "--filter",
        "embeddings",
        "-q",
    ]);
    for (dt, want) in [
        ("f16", "F16"),
        ("bf16", "BF16"),
        ("f32", "F32"),
        ("source", "F32"),
    ] {
        let out = dir.path().join(format!("{dt}.safetensors"));
        tenpak_ok(&[
            "decompress",
            s(&tpk),
            "-o",
            s(&out),
            "--dtype",
            dt,
            "--filter",
            "word_embeddings",
            "-q",
        ]);
        let back = read_safetensors(&out);
        assert_eq!(back.len(), 1);
        assert_eq!(back["embeddings.word_embeddings.weight"].0, want);
    }
    // A missing output folder is created.
    let nested = dir.path().join("a/b/model.safetensors");
    tenpak_ok(&["decompress", s(&tpk), "-o", s(&nested), "-q"]);
    assert!(nested.is_file());
    let o = tenpak(&[
        "decompress",
        s(&tpk),
        "-o",
        s(&dir.path().join("z.safetensors")),
        "--dtype",
        "f8",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn broken_pipe_is_success() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let tpk = dir.path().join("x.tpk");
    tenpak_ok(&["compress", s(&minilm()), "-o", s(&tpk), "-q"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenpak"))
        .args(["inspect", s(&tpk), "--tensors"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Ctrl-C, SIGTERM and SIGHUP stop compress cleanly: exit 130 / 143 / 129 and neither the
/// output nor its temporary file left.
#[test]
fn interrupt_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.tpk");
    let model = smollm2();
    let args = [
        "compress",
        s(&model),
        "-o",
        s(&out),
        "--codec",
        "zstd:level=19",
        "--chunk-elems",
        "4096",
        "-q",
    ];
    // The signal lands mid-write: once the temporary file exists.
    if interrupted(&args, || std::fs::read_dir(dir.path()).unwrap().count() > 0) {
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
    // SIGTERM and SIGHUP are handled the same way, with the shell's codes.
    for (sig, code) in [("TERM", 143), ("HUP", 129)] {
        if signalled(
            &args,
            || std::fs::read_dir(dir.path()).unwrap().count() > 0,
            sig,
            code,
        ) {
            let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
            assert!(left.is_empty(), "{sig}: {left:?}");
        }
    }
}

/// `kill -9` leaves the writer's temporary file (nothing can remove it then); the next compress
/// to the same output removes it, since its writer is gone.
#[cfg(target_os = "linux")]
#[test]
fn a_killed_writers_temporary_is_removed_by_the_next_run() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k.tpk");
    let model = smollm2();
    let args = [
        "compress",
        s(&model),
        "-o",
        s(&out),
        "--codec",
        "zstd:level=19",
        "--chunk-elems",
        "4096",
        "-q",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenpak"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let count = || std::fs::read_dir(dir.path()).unwrap().count();
    for _ in 0..600 {
        if count() > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left = count();
    if left == 0 {
        return; // it finished before the kill: nothing to check
    }
    assert!(!out.exists());
    tenpak_ok(&[
        "compress",
        s(&model),
        "-o",
        s(&out),
        "--filter",
        "blk.0.attn_norm",
        "-q",
    ]);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["k.tpk".to_string()],
        "{left} left after the kill"
    );
}

/// `--override FILTER=SPEC` gives the matching tensors their own codec (first match wins); the
/// options metadata records it; vectors stay raw under a lossy codec; a whole model carries its
/// config.json and tokenizer.json, a filtered one does not.
#[test]
fn override_codecs_and_vector_policy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.tpk");
    let m = minilm();
    let r: serde_json::Value = serde_json::from_str(&tenpak_ok(&[
        "compress",
        m.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--codec",
        "bfp4",
        "--override",
        "word_embeddings=int8",
        "--override",
        "embeddings=bf16",
        "--json",
    ]))
    .unwrap();
    for t in r["tensors"].as_array().unwrap() {
        let (name, codec) = (t["name"].as_str().unwrap(), t["codec"].as_str().unwrap());
        let shape = t["shape"].as_array().unwrap();
        let want = if shape.len() < 2 || t["source_dtype"] == "I64" {
            "raw"
        } else if name.contains("word_embeddings") {
            "int:bits=8"
        } else if name.contains("embeddings") {
            "bf16"
        } else {
            "bfp4"
        };
        assert!(codec.starts_with(want), "{name}: {codec}, want {want}");
    }
    let i: serde_json::Value =
        serde_json::from_str(&tenpak_ok(&["inspect", out.to_str().unwrap(), "--json"])).unwrap();
    let opts: serde_json::Value =
        serde_json::from_str(i["metadata"]["tenpak.options"].as_str().unwrap()).unwrap();
    assert_eq!(opts["overrides"][0]["filter"], "word_embeddings");
    assert!(i["metadata"]["hf.tokenizer.json"]
        .as_str()
        .unwrap()
        .contains("WordPiece"));
    assert!(i["metadata"]["hf.config.json"]
        .as_str()
        .unwrap()
        .contains("\"bert\""));
    // A filtered subset is not a runnable model: no model metadata.
    tenpak_ok(&[
        "compress",
        m.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--filter",
        "encoder.layer.0",
        "--force",
        "-q",
    ]);
    let i: serde_json::Value =
        serde_json::from_str(&tenpak_ok(&["inspect", out.to_str().unwrap(), "--json"])).unwrap();
    assert!(i["metadata"].get("hf.config.json").is_none());
    let e = tenpak_fails(
        &[
            "compress",
            m.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--override",
            "x",
            "--force",
        ],
        2,
    );
    assert!(e.contains("FILTER=SPEC"), "{e}");
}

/// `compress --dry-run` prints the plan and writes nothing; its payload prediction is exact for
/// fixed-size codecs and an upper bound for the others, checked against real files.
#[test]
fn dry_run_predicts_the_payload() {
    let dir = tempfile::tempdir().unwrap();
    let m = minilm();
    let json = |v: &str| -> serde_json::Value { serde_json::from_str(v).unwrap() };
    for (codec, exact) in [
        ("int4_g32", true),
        ("bfp8", true),
        ("nvfp4", true),
        ("f16", true),
        ("byteplane", false),
        ("bf16+zstd", false),
    ] {
        let args = [
            "compress",
            s(&m),
            "--filter",
            "encoder.layer.0",
            "--codec",
            codec,
        ];
        let plan = json(&tenpak_ok(&[&args[..], &["--dry-run", "--json"]].concat()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(plan["exact"], exact, "{codec}");
        assert_eq!(plan["tensors"].as_array().unwrap().len(), 16);
        let out = dir.path().join("p.tpk");
        tenpak_ok(&[&args[..], &["-o", s(&out), "-q"]].concat());
        let stored = json(&tenpak_ok(&["inspect", s(&out), "--json"]));
        let predicted = plan["predicted_payload_bytes"].as_u64().unwrap();
        let payload = stored["payload_bytes"].as_u64().unwrap();
        if exact {
            assert_eq!(predicted, payload, "{codec}");
        } else {
            assert!(predicted >= payload, "{codec}: {predicted} < {payload}");
        }
        for (p, t) in plan["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .zip(stored["tensors"].as_array().unwrap())
        {
            assert_eq!(p["name"], t["name"]);
            assert_eq!(p["layout"], t["layout"], "{codec}");
            assert_eq!(p["chunks"], t["chunks"], "{codec}");
        }
        std::fs::remove_file(&out).unwrap();
    }
    // Option errors come before anything is read, and the table says nothing was written.
    tenpak_fails(&["compress", s(&m), "--dry-run", "--codec", "nope"], 2);
    let table = tenpak_ok(&["compress", s(&m), "--dry-run", "--codec", "bfp4"]);
    assert!(
        table.contains("dry run: nothing was read or written"),
        "{table}"
    );
    // Without --dry-run the output is required.
    tenpak_fails(&["compress", s(&m)], 2);
}

/// Refusals say what is wrong once and briefly: a config's path is printed once, a huge value
/// echoed from a file is cut, every fault of the config file exits 2, a safetensors header
/// fault names its tensor, and a model given where a .tpk is expected is named as a model.
#[test]
fn refusals_are_short_and_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = d.join("m.safetensors");
    write_st(
        &m,
        vec![("w", safetensors::Dtype::F32, vec![2, 32], vec![0u8; 256])],
    );
    let out = d.join("o.tpk");
    let cfg = d.join("c.json");
    let long = "y".repeat(1 << 20);
    std::fs::write(
        &cfg,
        format!(r#"{{"algorithm": "mixed-tile-optimal", "params": {{"formats": ["{long}"]}}}}"#),
    )
    .unwrap();
    let e = tenpak_fails(&["compress", s(&m), "-o", s(&out), "--config", s(&cfg)], 2);
    assert!(e.len() < 600, "{} bytes: {}", e.len(), &e[..600]);
    assert!(e.contains("more characters"), "{e}");
    assert_eq!(e.matches("c.json").count(), 1, "{e}");
    let e = tenpak_fails(
        &[
            "compress",
            s(&m),
            "-o",
            s(&out),
            "--config",
            s(&d.join("none.json")),
        ],
        2,
    );
    assert!(
        e.contains("none.json") && e.contains("read the config"),
        "{e}"
    );
    std::fs::write(&cfg, "not json").unwrap();
    tenpak_fails(&["compress", s(&m), "-o", s(&out), "--config", s(&cfg)], 2);
    // A tensor whose shape does not match its bytes, by name.
    let bad = d.join("bad.safetensors");
    let h = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b.w":{"dtype":"F32","shape":[3],"data_offsets":[8,24]}}"#;
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(h);
    bytes.extend_from_slice(&[0u8; 24]);
    std::fs::write(&bad, bytes).unwrap();
    let e = tenpak_fails(&["compress", s(&bad), "-o", s(&out)], 1);
    assert!(
        e.contains("tensor 'b.w'") && e.contains("needs 12 bytes"),
        "{e}"
    );
    let e = tenpak_fails(&["inspect", s(&m)], 1);
    assert!(e.contains("a safetensors model, not a .tpk file"), "{e}");
    assert!(!out.exists());
}

/// 20 compress and 20 decompress runs stopped at random points, by `kill -9` and SIGTERM in
/// turn: the output is always absent or whole (the same bytes as an uninterrupted run), SIGTERM
/// leaves no temporary file, `kill -9` at most the one of the process just killed, and the next
/// run to the same output removes it.
#[cfg(target_os = "linux")]
#[test]
fn random_kills_leave_no_partial_output() {
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = smollm2();
    let (tpk, st) = (d.join("ref.tpk"), d.join("ref.safetensors"));
    let compress = |out: &Path| {
        vec![
            "compress".to_string(),
            s(&model).to_string(),
            "-o".into(),
            s(out).to_string(),
            "--codec".into(),
            "byteplane".into(),
            "--force".into(),
            "-q".into(),
        ]
    };
    let decompress = |out: &Path| {
        vec![
            "decompress".to_string(),
            s(&tpk).to_string(),
            "-o".into(),
            s(out).to_string(),
            "--force".into(),
            "-q".into(),
        ]
    };
    let run = |args: &[String]| {
        let t = Instant::now();
        let st = Command::new(env!("CARGO_BIN_EXE_tenpak"))
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{args:?}");
        t.elapsed()
    };
    type Args<'a> = &'a dyn Fn(&Path) -> Vec<String>;
    let jobs: [(&str, Args, &Path); 2] = [
        ("k.tpk", &compress, &tpk),
        ("k.safetensors", &decompress, &st),
    ];
    let took = [run(&compress(&tpk)), run(&decompress(&st))];
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let (mut mid, mut finished) = (0, 0);
    for ((name, args, reference), took) in jobs.into_iter().zip(took) {
        let want = std::fs::read(reference).unwrap();
        let sub = d.join(name.replace('.', "_"));
        std::fs::create_dir(&sub).unwrap();
        let out = sub.join(name);
        let temps = || {
            std::fs::read_dir(&sub)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(&format!(".{}", name.rsplit('.').next().unwrap())))
                .filter(|n| n.starts_with('.'))
                .count()
        };
        for i in 0..20 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let delay = took.mul_f64((seed >> 11) as f64 / (1u64 << 53) as f64 * 1.1);
            let mut child = Command::new(env!("CARGO_BIN_EXE_tenpak"))
                .args(args(&out))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(delay);
            let sig = if i % 2 == 0 { "KILL" } else { "TERM" };
            Command::new("kill")
                .args([&format!("-{sig}"), &child.id().to_string()])
                .stderr(Stdio::null())
                .status()
                .unwrap();
            let code = child.wait().unwrap().code();
            match code {
                Some(0) => finished += 1,
                Some(143) => {
                    mid += 1;
                    assert_eq!(temps(), 0, "{name} try {i}: SIGTERM left a temporary");
                }
                None => {
                    mid += 1;
                    assert!(temps() <= 1, "{name} try {i}: stale temporaries kept");
                }
                other => panic!("{name} try {i}: exit {other:?}"),
            }
            if out.exists() {
                assert!(
                    std::fs::read(&out).unwrap() == want,
                    "{name} try {i}: the output is not a whole run's"
                );
            }
        }
        run(&args(&out));
        assert_eq!(temps(), 0, "{name}: the last run left temporaries");
        assert_eq!(std::fs::read(&out).unwrap(), want);
    }
    eprintln!("{mid} runs stopped mid-way, {finished} finished before the signal");
}

/// `tenpak codecs` lists every name users type with its bits per weight; an unknown name gets
/// a suggestion, a llama.cpp type its nearest tenpak codec.
#[test]
fn codecs_are_discoverable() {
    let list = tenpak_json(&["codecs"]);
    let list = list.as_array().unwrap();
    let find = |n: &str| {
        list.iter()
            .find(|e| e["name"] == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    assert_eq!(find("int4_g32")["bpw"], 4.5);
    assert_eq!(find("int4_g32")["bpw_exact"], true);
    assert_eq!(find("bfp8")["bpw"], 8.5);
    assert_eq!(find("nf4")["codec"], "grid");
    assert_eq!(find("byteplane")["lossless"], true);
    assert_eq!(find("kvq")["use"], "kv");
    // Every weight codec of the list is accepted by compress --dry-run.
    let m = minilm();
    for e in list
        .iter()
        .filter(|e| e["use"] == "weights" && e["name"] != "rot")
    {
        let name = e["name"].as_str().unwrap();
        tenpak_ok(&[
            "compress",
            s(&m),
            "--dry-run",
            "--codec",
            name,
            "--filter",
            "encoder.layer.0.attention.self.query",
        ]);
    }
    let text = tenpak_ok(&["codecs"]);
    assert!(
        text.contains("int4_g32_asym") && text.contains("4.50"),
        "{text}"
    );
    let e = tenpak_fails(&["compress", s(&m), "-o", "x.tpk", "--codec", "Q4_K_M"], 2);
    assert!(e.contains("nearest tenpak codec is int4_g64_asym"), "{e}");
    let e = tenpak_fails(&["compress", s(&m), "-o", "x.tpk", "--codec", "bfp5"], 2);
    assert!(e.contains("did you mean bfp"), "{e}");
}

/// A report's warnings.
fn warnings(r: &serde_json::Value) -> Vec<String> {
    r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// compress reports bits per weight and warns about an output larger than its source, tile
/// padding that multiplies a tensor, and an --override that matches nothing.
#[test]
fn compress_reports_bits_per_weight_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.tpk");
    let g = smollm2();
    let r = tenpak_json(&[
        "compress",
        s(&g),
        "-o",
        s(&out),
        "--codec",
        "bfp8",
        "--filter",
        "blk.0.",
        "-q",
    ]);
    let w = warnings(&r);
    assert!(
        w.iter()
            .any(|w| w.contains("the encoded tensors are") && w.contains("bits per weight")),
        "{w:?}"
    );
    let bpw = r["bpw"].as_f64().unwrap();
    let expect = r["file_bytes"].as_f64().unwrap() * 8.0 / r["elements"].as_f64().unwrap();
    assert!((bpw - expect).abs() < 1e-9 && bpw > r["source_bpw"].as_f64().unwrap());
    for t in r["tensors"].as_array().unwrap() {
        let n: u64 = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .product();
        let bytes = t["encoded_bytes"].as_f64().unwrap() + t["param_bytes"].as_f64().unwrap();
        assert!((t["bpw"].as_f64().unwrap() - bytes * 8.0 / n as f64).abs() < 1e-9);
    }
    let m = minilm();
    let r = tenpak_json(&[
        "compress",
        s(&m),
        "-o",
        s(&out),
        "--codec",
        "bfp4",
        "--tile-vectors",
        "--force",
        "-q",
        "--filter",
        "encoder.layer.0.",
        "--override",
        "no_such_tensor=int8",
    ]);
    let w = warnings(&r);
    assert!(
        w.iter()
            .any(|w| w.contains("'no_such_tensor=int8' matches none")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("padding to 32x32 tiles") && w.contains("LayerNorm.bias (32.0x)")),
        "{w:?}"
    );
    assert!(
        !w.iter().any(|w| w.contains("the encoded tensors are")),
        "{w:?}"
    );
    // The same warnings before anything is written.
    let p = tenpak_json(&[
        "compress",
        s(&m),
        "--dry-run",
        "--codec",
        "bfp4",
        "--tile-vectors",
        "--filter",
        "encoder.layer.0.",
        "--override",
        "no_such_tensor=int8",
    ]);
    assert_eq!(p["warnings"].as_array().unwrap().len(), 2, "{p}");
}

/// Every subcommand's --help ends with examples; completion scripts and man pages are
/// generated from the same definitions.
#[test]
fn help_has_examples_completions_and_man_pages() {
    fn commands(help: &str) -> Vec<String> {
        let Some(at) = help.find("Commands:") else {
            return Vec::new();
        };
        help[at..]
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .filter(|c| c != "help")
            .collect()
    }
    let mut todo = vec![Vec::<String>::new()];
    let mut leaves = 0;
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = tenpak_ok(&args);
        let subs = commands(&help);
        if subs.is_empty() {
            assert!(
                help.contains("Examples:\n  tenpak "),
                "tenpak {path:?} --help has no examples"
            );
            leaves += 1;
            // Its own man page renders.
            let page = tenpak_ok(&["man", &path.join("-")]);
            assert!(
                page.contains(&format!(".TH tenpak-{} 1", path.join("-"))),
                "{page}"
            );
        }
        for c in subs {
            let mut p = path.clone();
            p.push(c);
            todo.push(p);
        }
    }
    assert!(leaves >= 20, "{leaves}");
    assert!(tenpak_ok(&["man"]).contains(".TH tenpak 1"));
    for sh in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let script = tenpak_ok(&["completions", sh]);
        assert!(
            script.contains("compress") && script.contains("--codec"),
            "{sh}"
        );
    }
    tenpak_fails(&["completions", "tcsh"], 2);
    tenpak_fails(&["man", "no-such"], 2);
}

/// An output named for another format than the one written is refused before anything is
/// written (`-o x.gguf` wrote safetensors bytes).
#[test]
fn output_names_must_match_what_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let m = minilm();
    let q = "encoder.layer.0.attention.self.query";
    let e = tenpak_fails(
        &[
            "compress",
            s(&m),
            "-o",
            s(&dir.path().join("m.gguf")),
            "--filter",
            q,
        ],
        2,
    );
    assert!(e.contains("named .gguf but this writes a .tpk file"), "{e}");
    let tpk = dir.path().join("m.tpk");
    tenpak_ok(&["compress", s(&m), "-o", s(&tpk), "--filter", q, "-q"]);
    // No extension: taken as given.
    tenpak_ok(&[
        "compress",
        s(&m),
        "-o",
        s(&dir.path().join("plain")),
        "--filter",
        q,
        "-q",
    ]);
    let e = tenpak_fails(
        &[
            "decompress",
            s(&tpk),
            "-o",
            s(&dir.path().join("back.gguf")),
            "--format",
            "safetensors",
        ],
        2,
    );
    assert!(e.contains("leave out --format to write a GGUF"), "{e}");
    tenpak_fails(
        &["decompress", s(&tpk), "-o", s(&dir.path().join("back.bin"))],
        2,
    );
    let dumps = repo().join("tests/fixtures/kv-golden/dumps");
    let e = tenpak_fails(
        &[
            "kv",
            "compress",
            s(&dumps),
            "-o",
            s(&dir.path().join("kv.safetensors")),
        ],
        2,
    );
    assert!(e.contains("name it .tpk"), "{e}");
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["m.tpk", "plain"]);
}

/// `decompress -o DIR/` of a model compressed from a Hugging Face folder gives the folder back:
/// its shards (same names, same tensors), its index, and its small files byte for byte.
#[test]
fn folders_come_back_as_folders() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = minilm();
    let src = d.join("src");
    // A sharded folder made from MiniLM, with the files a hub folder has.
    tenpak_ok(&["compress", s(&m), "-o", s(&d.join("a.tpk")), "-q"]);
    tenpak_ok(&[
        "decompress",
        s(&d.join("a.tpk")),
        "-o",
        s(&src.join("model.safetensors")),
        "--max-shard-size",
        "40MB",
        "-q",
    ]);
    let hub = m.parent().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(hub.join(f), src.join(f)).unwrap();
    }
    std::fs::write(src.join("vocab.txt"), "[PAD]\n[UNK]\n").unwrap();
    let binary: Vec<u8> = (0..=255u8).rev().collect();
    std::fs::write(src.join("tokenizer.model"), &binary).unwrap();
    std::fs::write(src.join(".gitattributes"), "*.bin filter=lfs\n").unwrap();
    let tpk = d.join("m.tpk");
    tenpak_ok(&["compress", s(&src), "-o", s(&tpk), "-q"]);
    let out = d.join("out");
    let r = tenpak_json(&[
        "decompress",
        s(&tpk),
        "-o",
        &format!("{}/", out.display()),
        "-q",
    ]);
    let listing = |p: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    };
    assert_eq!(listing(&out), listing(&src));
    assert_eq!(r["files"].as_array().unwrap().len(), listing(&src).len());
    let shards: Vec<String> = listing(&src)
        .into_iter()
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    assert!(shards.len() >= 2, "{shards:?}");
    for f in &shards {
        let (a, b) = (
            read_safetensors(&src.join(f)),
            read_safetensors(&out.join(f)),
        );
        assert_eq!(a, b, "{f}");
    }
    let index = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(p.join("model.safetensors.index.json")).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(index(&out)["weight_map"], index(&src)["weight_map"]);
    for f in [
        "config.json",
        "tokenizer.json",
        "vocab.txt",
        "tokenizer.model",
    ] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }
    // Nothing is overwritten without --force; the restored folder is a model eval loads.
    tenpak_fails(
        &["decompress", s(&tpk), "-o", &format!("{}/", out.display())],
        2,
    );
    let c = corpus();
    let e = tenpak_json(&[
        "eval",
        "embed",
        s(&out),
        "--reference",
        s(hub),
        "--lines",
        "8",
        "--corpus",
        s(&c),
    ]);
    assert_eq!(e["min_cos"].as_f64().unwrap(), 1.0, "{e}");
}

/// `compress --shard K/N` in N processes at once, then `merge`: the same bytes as one process.
#[test]
fn sharded_compress_merges_to_the_single_process_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = minilm();
    let single = d.join("single.tpk");
    tenpak_ok(&[
        "compress",
        s(&m),
        "-o",
        s(&single),
        "--codec",
        "int4_g32",
        "-q",
    ]);
    let n = 3;
    let parts: Vec<std::path::PathBuf> = (1..=n).map(|k| d.join(format!("part{k}.tpk"))).collect();
    let running: Vec<std::process::Child> = parts
        .iter()
        .enumerate()
        .map(|(k, p)| {
            std::process::Command::new(env!("CARGO_BIN_EXE_tenpak"))
                .args([
                    "compress",
                    s(&m),
                    "-o",
                    s(p),
                    "--codec",
                    "int4_g32",
                    "-q",
                    "--threads",
                    "1",
                ])
                .args(["--shard", &format!("{}/{n}", k + 1)])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in running {
        assert!(c.wait().unwrap().success());
    }
    // Every tensor in exactly one part.
    let mut names: Vec<String> = parts
        .iter()
        .flat_map(|p| tensor_names(&tenpak_json(&["inspect", s(p)])))
        .collect();
    let total = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), total);
    let merged = d.join("merged.tpk");
    let r = tenpak_json(&[
        "merge",
        s(&parts[2]),
        s(&parts[0]),
        s(&parts[1]),
        "-o",
        s(&merged),
    ]);
    assert_eq!(r["tensors"].as_u64().unwrap() as usize, total);
    assert_eq!(
        std::fs::read(&merged).unwrap(),
        std::fs::read(&single).unwrap()
    );
    // Refusals: a missing part, a part given twice, a file that is no part, parts of two runs.
    let e = tenpak_fails(
        &[
            "merge",
            s(&parts[0]),
            s(&parts[1]),
            "-o",
            s(&d.join("x.tpk")),
        ],
        1,
    );
    assert!(e.contains("part(s) 3 of 3 missing"), "{e}");
    tenpak_fails(
        &[
            "merge",
            s(&parts[0]),
            s(&parts[0]),
            s(&parts[1]),
            "-o",
            s(&d.join("x.tpk")),
        ],
        1,
    );
    // A whole model beside parts is refused; alone, it is written again as it is.
    let e = tenpak_fails(
        &["merge", s(&parts[0]), s(&single), "-o", s(&d.join("x.tpk"))],
        1,
    );
    assert!(e.contains("a whole model is merged alone"), "{e}");
    tenpak_ok(&["merge", s(&single), "-o", s(&d.join("again.tpk")), "-q"]);
    assert!(std::fs::read(d.join("again.tpk")).unwrap() == std::fs::read(&single).unwrap());
    let other = d.join("other.tpk");
    tenpak_ok(&[
        "compress",
        s(&m),
        "-o",
        s(&other),
        "--codec",
        "int8",
        "-q",
        "--shard",
        "3/3",
    ]);
    let e = tenpak_fails(
        &[
            "merge",
            s(&parts[0]),
            s(&parts[1]),
            s(&other),
            "-o",
            s(&d.join("x.tpk")),
        ],
        1,
    );
    assert!(e.contains("metadata differs"), "{e}");
    assert!(!d.join("x.tpk").exists());
    tenpak_fails(
        &[
            "compress",
            s(&m),
            "-o",
            s(&other),
            "--shard",
            "0/3",
            "--force",
        ],
        2,
    );
    tenpak_fails(
        &[
            "compress",
            s(&m),
            "-o",
            s(&other),
            "--shard",
            "4/3",
            "--force",
        ],
        2,
    );
    let cfg = repo().join("compression_configs/compression_config.mixed_tile_model_budget.json");
    let e = tenpak_fails(
        &[
            "compress",
            s(&m),
            "-o",
            s(&other),
            "--shard",
            "1/2",
            "--force",
            "--config",
            s(&cfg),
        ],
        2,
    );
    assert!(e.contains("whole-model"), "{e}");
}

/// `merge --max-shard-size` writes a multi-file set (from parts, or from one file) that every
/// reader opens through its index as the one file; merging the set gives the file back byte for
/// byte; a damaged set is refused, naming the file.
#[test]
fn multi_file_sets_read_as_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let single = d.join("single.tpk");
    tenpak_ok(&[
        "compress",
        s(&minilm()),
        "-o",
        s(&single),
        "--codec",
        "int4_g32",
        "-q",
    ]);
    let parts: Vec<std::path::PathBuf> = (1..=2).map(|k| d.join(format!("p{k}.tpk"))).collect();
    for (k, p) in parts.iter().enumerate() {
        let shard = format!("{}/2", k + 1);
        tenpak_ok(&[
            "compress",
            s(&minilm()),
            "-o",
            s(p),
            "--codec",
            "int4_g32",
            "--shard",
            &shard,
            "-q",
        ]);
    }
    let out = d.join("set/m.tpk");
    let r = tenpak_json(&[
        "merge",
        s(&parts[1]),
        s(&parts[0]),
        "-o",
        s(&out),
        "--max-shard-size",
        "4MB",
    ]);
    let index = d.join("set/m.tpk.index.json");
    assert_eq!(r["output"].as_str().unwrap(), s(&index));
    let files: Vec<String> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    let n = files.len() - 1;
    assert!(n >= 3, "{files:?}");
    assert!(files[0].ends_with(&format!("m-00001-of-{n:05}.tpk")));
    assert!(!out.exists(), "a set has no m.tpk");
    // Each file's payload stays under the limit, but for one tensor larger than it alone.
    let tensors = |p: &str| tenpak_json(&["inspect", p])["tensors"].clone();
    assert_eq!(tensors(s(&index)).as_array().unwrap().len(), 104);
    let listed = tenpak_json(&["inspect", s(&index)])["set_files"].clone();
    assert_eq!(listed.as_array().map(Vec::len), Some(n), "{listed}");
    for f in &files[..n] {
        let t = tensors(f);
        let t = t.as_array().unwrap();
        let payload: u64 = t.iter().map(|t| t["encoded_bytes"].as_u64().unwrap()).sum();
        assert!(payload <= 4_000_000 || t.len() == 1, "{f}: {payload} bytes");
    }
    // Readers: verify, decompress, eval's loader (the embedding figures), Python (pytest).
    let v = tenpak_json(&["verify", s(&index)]);
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
    assert_eq!(v["tensors"], 104);
    let (a, b) = (d.join("a.safetensors"), d.join("b.safetensors"));
    tenpak_ok(&["decompress", s(&index), "-o", s(&a), "-q"]);
    tenpak_ok(&["decompress", s(&single), "-o", s(&b), "-q"]);
    assert_eq!(read_safetensors(&a), read_safetensors(&b));
    // Back to one file: the single-process file, byte for byte.
    let back = d.join("back.tpk");
    tenpak_ok(&["merge", s(&index), "-o", s(&back), "-q"]);
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&single).unwrap());
    // Everything fits: one plain file.
    tenpak_ok(&[
        "merge",
        s(&single),
        "-o",
        s(&d.join("one.tpk")),
        "--max-shard-size",
        "1GB",
        "-q",
    ]);
    assert!(std::fs::read(d.join("one.tpk")).unwrap() == std::fs::read(&single).unwrap());
    // Outputs that exist need --force; nothing is half-written.
    let e = tenpak_fails(
        &[
            "merge",
            s(&single),
            "-o",
            s(&out),
            "--max-shard-size",
            "4MB",
        ],
        2,
    );
    assert!(e.contains("already exists"), "{e}");
    // Damaged sets.
    let text = std::fs::read_to_string(&index).unwrap();
    let bad = d.join("set/bad.tpk.index.json");
    let first = std::path::Path::new(&files[0])
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    for (edit, want) in [
        (
            text.replacen(first, "../single.tpk", 1),
            "not a .tpk file name",
        ),
        (text.replace(first, "missing.tpk"), "missing.tpk"),
        (
            text.replacen(
                &format!("\"{first}\""),
                &format!("\"{}\"", files[1].rsplit('/').next().unwrap()),
                1,
            ),
            "the index puts it elsewhere",
        ),
        ("{\"weight_map\": {}}".to_string(), "empty"),
    ] {
        std::fs::write(&bad, edit).unwrap();
        let e = tenpak_fails(&["verify", s(&bad)], 1);
        assert!(e.contains(want), "{want}: {e}");
    }
    let e = tenpak_fails(&["compress", s(&index), "-o", s(&d.join("x.tpk"))], 1);
    assert!(e.contains("multi-file .tpk set"), "{e}");
}

/// The Slurm script submits an array of `--shard` parts and a merge after them: run with a
/// stand-in `sbatch` that runs each job where it is, it gives the single-process file.
#[test]
fn slurm_script_runs_parts_and_merge() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // Runs --wrap once per array index (SLURM_ARRAY_TASK_ID), or once; prints a job id.
    let fake = r#"#!/usr/bin/env bash
array="" wrap=""
for a in "$@"; do
  case "$a" in --array=*) array=${a#--array=} ;; --wrap=*) wrap=${a#--wrap=} ;; esac
done
if [ -n "$array" ]; then
  for i in $(seq ${array%-*} ${array#*-}); do SLURM_ARRAY_TASK_ID=$i bash -c "$wrap" || exit 1; done
else
  bash -c "$wrap" || exit 1
fi
echo $RANDOM
"#;
    std::fs::write(bin.join("sbatch"), fake).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("sbatch"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = minilm();
    let out = d.join("out dir").join("m.tpk");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let st = std::process::Command::new(repo().join("scripts/cluster/slurm-compress.sh"))
        .args([s(&m), s(&out), "3", "--codec", "int4_g32"])
        .env("PATH", path)
        .env("TENPAK", env!("CARGO_BIN_EXE_tenpak"))
        .env("CPUS", "1")
        .status()
        .unwrap();
    assert!(st.success());
    let single = d.join("single.tpk");
    tenpak_ok(&[
        "compress",
        s(&m),
        "-o",
        s(&single),
        "--codec",
        "int4_g32",
        "-q",
    ]);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&single).unwrap()
    );
    // The parts are gone after the merge; the logs stay.
    let left: Vec<_> = std::fs::read_dir(d.join("out dir/m.tpk.parts"))
        .unwrap()
        .collect();
    assert!(left.iter().all(|e| !e
        .as_ref()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tpk")));
}
