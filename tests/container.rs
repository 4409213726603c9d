//! Container integrity: every corrupted byte is detected, every truncation is a clean error,
//! unknown codecs are isolated to their tensor, newer major versions are refused.

use crate::common::*;
use std::path::{Path, PathBuf};
use tpk_format::{Limits, Stage, TensorEntry, TpkFile, TpkWriter};

fn small_tpk(dir: &Path) -> PathBuf {
    let tpk = dir.join("small.tpk");
    tenpak_ok(&[
        "compress",
        s(&minilm()),
        "-o",
        s(&tpk),
        "--filter",
        "LayerNorm",
        "--limit",
        "3",
        "--chunk-elems",
        "128",
        "-q",
    ]);
    tpk
}

/// Corrupting any single byte of a small .tpk makes `verify` fail (or `open` refuse it).
#[test]
fn every_single_byte_corruption_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let tpk = small_tpk(dir.path());
    let good = std::fs::read(&tpk).unwrap();
    assert!(good.len() > 1000 && good.len() < 20_000, "{}", good.len());
    let bad = dir.path().join("bad.tpk");
    for i in 0..good.len() {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut b = good.clone();
            b[i] ^= flip;
            std::fs::write(&bad, &b).unwrap();
            let ok = matches!(tenpak::verify::verify(&bad, &tenpak::Context::default()), Ok(r) if r.ok());
            assert!(!ok, "flipping byte {i} with {flip:#x} went undetected");
        }
    }
    // And through the binary: exit 1, naming tensor and chunk for a payload byte.
    let f = TpkFile::open(good.clone(), &Limits::default()).unwrap();
    let c = f.tensors()[1].chunks[0];
    let mut b = good.clone();
    b[c.offset as usize] ^= 1;
    std::fs::write(&bad, &b).unwrap();
    let o = tenpak(&["verify", s(&bad), "-q"]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("tensor '{}'", f.tensors()[1].name)) && out.contains("chunk 0"),
        "{out}"
    );
}

/// Truncating at any offset gives an error from open or verify, never a panic.
#[test]
fn every_truncation_is_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(small_tpk(dir.path())).unwrap();
    for len in 0..good.len() {
        let r = TpkFile::open(&good[..len], &Limits::default());
        assert!(r.is_err(), "truncated to {len} bytes opened");
    }
    let cut = dir.path().join("cut.tpk");
    std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
    let err = tenpak_fails(&["inspect", s(&cut)], 1);
    assert!(
        err.contains("cut.tpk") && err.contains("truncated"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

fn entry(name: &str, id: u16, codec: &str, chunk: tpk_format::ChunkEntry) -> TensorEntry {
    TensorEntry {
        layout: Default::default(),
        name: name.into(),
        dtype: "F32".into(),
        dims: vec![4],
        source_bytes: 16,
        stages: vec![Stage {
            codec_id: id,
            codec_name: codec.into(),
            codec_version: 1,
            params: vec![],
        }],
        metrics: vec![],
        chunks: vec![chunk],
    }
}

/// A tensor whose codec this tenpak lacks is reported unsupported; the others still decode.
#[test]
fn unknown_codec_is_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("future.tpk");
    let mut w = TpkWriter::create(&p, false).unwrap();
    let vals: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let c0 = w.write_chunk(&vals, 0, 4).unwrap();
    let c1 = w.write_chunk(b"opaque future payload", 0, 4).unwrap();
    w.add_tensor(entry("a", 1, "raw", c0)).unwrap();
    w.add_tensor(entry("b", 4242, "quantum", c1)).unwrap();
    w.finish().unwrap();
    let r = tenpak_json(&["inspect", s(&p)]);
    assert_eq!(r["tensors"][0]["supported"], true);
    assert_eq!(r["tensors"][1]["supported"], false);
    let o = tenpak(&["verify", s(&p)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("quantum"));
    let out = dir.path().join("o.safetensors");
    let o = tenpak(&["decompress", s(&p), "-o", s(&out), "-q"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("tensor 'b' skipped"));
    let back = read_safetensors(&out);
    assert_eq!(back.len(), 1);
    assert_eq!(back["a"].2, vals);
}

/// A newer major version is refused with a message that says so.
#[test]
fn newer_major_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = std::fs::read(small_tpk(dir.path())).unwrap();
    b[8] = 2;
    let crc = crc32fast::hash(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    let p = dir.path().join("v2.tpk");
    std::fs::write(&p, &b).unwrap();
    let err = tenpak_fails(&["inspect", s(&p)], 1);
    assert!(
        err.contains("version 2.x is newer") && err.contains("upgrade"),
        "{err}"
    );
}

/// Same input and options give the same bytes.
#[test]
fn output_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.tpk");
    let b = dir.path().join("b.tpk");
    let args = |o: &Path| {
        vec![
            "compress".to_string(),
            s(&minilm()).into(),
            "-o".into(),
            s(o).into(),
            "--filter".into(),
            "encoder.layer.0".into(),
            "-q".into(),
        ]
    };
    let run = |o: &Path, threads: &str| {
        let mut v = args(o);
        v.extend(["--threads".to_string(), threads.to_string()]);
        let v: Vec<&str> = v.iter().map(|x| x.as_str()).collect();
        tenpak_ok(&v);
    };
    run(&a, "1");
    run(&b, "2");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

/// The bytes tenpak writes are pinned: CRC-32 of the .tpk of MiniLM's first layer under every
/// codec, in tests/golden/results.txt. A change here changes the format or the encoder's
/// choices: review it, then regenerate with `TENPAK_UPDATE_GOLDEN=1 cargo test golden`.
#[test]
fn golden_encoded_crcs() {
    let dir = tempfile::tempdir().unwrap();
    let golden = crate::common::repo().join("tests/golden/results.txt");
    let mut lines = Vec::new();
    for codec in [
        "raw",
        "f32",
        "f16",
        "bf16",
        "zstd",
        "zstd:level=19",
        "byteplane",
        "bf16+zstd:level=3",
    ] {
        let tpk = dir.path().join("g.tpk");
        tenpak_ok(&[
            "compress",
            s(&minilm()),
            "-o",
            s(&tpk),
            "--filter",
            "encoder.layer.0",
            "--codec",
            codec,
            "--force",
            "-q",
        ]);
        let crc = crc32fast::hash(&std::fs::read(&tpk).unwrap());
        lines.push(format!("{codec} {crc:08x}"));
    }
    let got = lines.join("\n") + "\n";
    if std::env::var_os("TENPAK_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    assert_eq!(
        got,
        std::fs::read_to_string(&golden).unwrap_or_default(),
        "encoded bytes changed"
    );
}

/// Files written by earlier format versions stay readable (tests/fixtures/v1.0 was written by
/// tenpak before format 1.1 added the element layout): byteplane decodes bit-exact, bf16 to the
/// source rounded to bf16 (written back as f32, the source dtype).
#[test]
fn older_format_versions_still_decode() {
    let dir = crate::common::repo().join("tests/fixtures/v1.0");
    let src = read_safetensors(&dir.join("source.safetensors"));
    let out = tempfile::tempdir().unwrap();
    for name in ["byteplane", "bf16-zstd"] {
        let tpk = dir.join(format!("{name}.tpk"));
        let text = tenpak_ok(&["inspect", s(&tpk)]);
        assert!(text.contains("tpk 1.0"), "{text}");
        tenpak_ok(&["verify", s(&tpk)]);
        let back = out.path().join(format!("{name}.safetensors"));
        tenpak_ok(&["decompress", s(&tpk), "-o", s(&back), "-q"]);
        let got = read_safetensors(&back);
        assert_eq!(got.len(), 3);
        for (k, (dt, shape, bytes)) in &src {
            let (gdt, gshape, gbytes) = &got[k];
            assert_eq!(gshape, shape, "{name} {k}");
            if name == "byteplane" || dt != "F32" {
                assert_eq!((gdt, gbytes), (dt, bytes), "{name} {k}");
            } else {
                let vals: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                // `decompress` writes the source dtype by default: bf16 values widened to f32.
                let want: Vec<u8> = vals
                    .iter()
                    .flat_map(|v| {
                        let b = tenpak::dtype::f32_to_bf16_bits(*v);
                        f32::from_bits((b as u32) << 16).to_le_bytes()
                    })
                    .collect();
                assert_eq!((gdt.as_str(), gbytes), ("F32", &want), "{name} {k}");
            }
        }
    }
}

/// tpk.md §3: the writer writes version 1.1, row-major files included.
#[test]
fn the_writer_writes_version_1_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.tpk");
    tenpak_ok(&[
        "compress",
        s(&minilm()),
        "-o",
        s(&out),
        "--filter",
        "LayerNorm",
        "--limit",
        "1",
        "-q",
    ]);
    let b = std::fs::read(&out).unwrap();
    assert_eq!(&b[..8], &tpk_format::MAGIC);
    assert_eq!(u16::from_le_bytes([b[8], b[9]]), 1, "major");
    assert_eq!(u16::from_le_bytes([b[10], b[11]]), 1, "minor");
}
