//! Helpers: where the real models are, running the binary, reading safetensors.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's root (the tests belong to the `tenpak-cli` package, one folder down).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tenpak-cli sits in the repository")
        .to_path_buf()
}

/// The model cache filled by `scripts/fetch-test-models.sh`.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("TENPAK_MODELS") {
        Some(p) => PathBuf::from(p),
        None => repo().join("models"),
    }
}

fn model(rel: &str) -> PathBuf {
    let p = models_dir().join(rel);
    // Real-model tests never skip: a missing model is a failure, in CI and locally alike.
    assert!(
        p.is_file(),
        "test model {} is missing: run scripts/fetch-test-models.sh (the README's test command does)",
        p.display()
    );
    p
}

/// MiniLM-L6 (BERT), fp32 safetensors, 22.7M parameters.
pub fn minilm() -> PathBuf {
    model("minilm/model.safetensors")
}

/// SmolLM2-135M-Instruct, GGUF Q4_1.
pub fn smollm2() -> PathBuf {
    model("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The evaluation corpus (`scripts/fetch-test-models.sh` builds it with fetch-corpus.sh).
pub fn corpus() -> PathBuf {
    model("corpus/cfi-en.txt")
}

/// Run the tenpak binary.
pub fn tenpak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tenpak"))
        .args(args)
        .output()
        .expect("run tenpak")
}

/// Run and require success; returns stdout.
pub fn tenpak_ok(args: &[&str]) -> String {
    let o = tenpak(args);
    assert!(
        o.status.success(),
        "tenpak {args:?} failed ({:?}): {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Run, require exit code `code`, return stderr.
pub fn tenpak_fails(args: &[&str], code: i32) -> String {
    let o = tenpak(args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "tenpak {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Write a safetensors file from (name, dtype, shape, bytes).
pub fn write_st(path: &Path, tensors: Vec<(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)>) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.to_string(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Run with `--json` appended and parse stdout.
pub fn tenpak_json(args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&tenpak_ok(&a)).expect("valid JSON")
}

/// The tensor names of a JSON report (`tensors[].name`), in its order.
pub fn tensor_names(r: &serde_json::Value) -> Vec<String> {
    r["tensors"]
        .as_array()
        .expect("a report with tensors")
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// Tensors of a safetensors file as (dtype name, shape, bytes), by name.
pub fn read_safetensors(
    p: &Path,
) -> std::collections::BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let b = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&b).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                (
                    format!("{:?}", v.dtype()),
                    v.shape().to_vec(),
                    v.data().to_vec(),
                ),
            )
        })
        .collect()
}

/// A path string.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Little-endian f32 bytes as values.
pub fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// PCC and MAE in f64, the textbook way.
pub fn pcc_mae(x: &[f32], y: &[f32]) -> (f64, f64) {
    let n = x.len() as f64;
    let mx = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let my = y.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy, mut ae) = (0.0, 0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (a, b) = (a as f64, b as f64);
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
        ae += (a - b).abs();
    }
    (sxy / (sxx * syy).sqrt(), ae / n)
}

/// Run tenpak with `args`, wait (bounded, 30 s) until `ready()` says the work is under way, send
/// it SIGINT (Ctrl-C) and check it stopped as an interrupted command does: exit 130 and
/// "interrupted" on stderr. `false` when it had finished before the signal arrived (nothing to
/// check then).
pub fn interrupted(args: &[&str], ready: impl Fn() -> bool) -> bool {
    signalled(args, ready, "INT", 130)
}

/// [`interrupted`] with signal `sig` (`INT`, `TERM`, `HUP`) and the exit code it must give.
pub fn signalled(args: &[&str], ready: impl Fn() -> bool, sig: &str, code: i32) -> bool {
    use std::process::Stdio;
    let child = Command::new(env!("CARGO_BIN_EXE_tenpak"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tenpak");
    for _ in 0..600 {
        if ready() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    let o = child.wait_with_output().expect("wait for tenpak");
    if o.status.code() == Some(0) {
        return false;
    }
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    true
}

/// A GGUF metadata value for [`write_gguf`].
pub enum Gv<'a> {
    /// GGUF type 4.
    U32(u32),
    /// GGUF type 6.
    F32(f32),
    /// GGUF type 8.
    Str(&'a str),
    /// GGUF type 9 of strings.
    Strs(&'a [&'a str]),
}

/// Write a GGUF v3 file: metadata, then F32 tensors (name, dims innermost first, values).
pub fn write_gguf(path: &Path, kv: &[(&str, Gv)], tensors: &[(&str, Vec<u64>, Vec<f32>)]) {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        string(&mut out, k);
        match v {
            Gv::U32(x) => {
                out.extend(4u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Gv::F32(x) => {
                out.extend(6u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Gv::Str(s) => {
                out.extend(8u32.to_le_bytes());
                string(&mut out, s);
            }
            Gv::Strs(a) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((a.len() as u64).to_le_bytes());
                for s in *a {
                    string(&mut out, s);
                }
            }
        }
    }
    let mut offset = 0u64;
    for (name, dims, vals) in tensors {
        string(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(0u32.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (4 * vals.len() as u64).next_multiple_of(32);
    }
    out.resize(out.len().next_multiple_of(32), 0);
    for (_, _, vals) in tensors {
        for v in vals {
            out.extend(v.to_le_bytes());
        }
        out.resize(out.len().next_multiple_of(32), 0);
    }
    std::fs::write(path, out).unwrap();
}
