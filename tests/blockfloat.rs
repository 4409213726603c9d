//! Tile formats against ../shared/formats.md §9 (restated in formats-spec/blockfloat.md): the
//! SHA-256 of each packed tile of two standard-normal 32x32 tiles, and their PCC / MAE; then
//! the tile codecs end to end on MiniLM.

use crate::common::*;
use sha2::{Digest, Sha256};
use tenpak::codec::bfp::{self, Bfp};
use tenpak::codec::mx;
use tenpak::codec::tile::TILE_ELEMS;

/// Tile A = `np.random.default_rng(0).standard_normal((32, 32), dtype=np.float32)`, tile B =
/// `np.random.seed(0); np.random.randn(32, 32).astype(np.float32)`, as raw little-endian f32.
fn spec_tiles() -> (Vec<f32>, Vec<f32>) {
    let b = std::fs::read(crate::common::repo().join("tests/golden/spec_tiles_ab.f32")).unwrap();
    let v: Vec<f32> = b
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (v[..TILE_ELEMS].to_vec(), v[TILE_ELEMS..].to_vec())
}

fn hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[test]
fn spec_tile_hashes_and_figures() {
    let (a, b) = spec_tiles();
    assert_eq!(a[0], 1.117_622);
    assert_eq!(b[0], 1.764_052_4);
    // (format, [hash A, hash B], [(pcc, mae) A, B]) from the spec's §9 tables.
    type Row = (&'static str, [&'static str; 2], [(f64, f64); 2]);
    let table: [Row; 6] = [
        (
            "bf16",
            [
                "980945118ae15d06038ea85fc2d7ed79d59e8490d46a200312f79ce0e03101ef",
                "8f328a9f80da9e93463fca87007e08b275782fb8b3f4aeebb85a96ef2cbc9c8b",
            ],
            [(0.999999, 0.001159), (0.999999, 0.001063)],
        ),
        (
            "bfp8",
            [
                "f73a628a0ca26a3e73fd578406f2eff3a7334a8caea9faa159745f410b785604",
                "ffd9733716f0de88e2110fb2dfe0b51c237052a9a07183e7823cd1ffce5230fb",
            ],
            [(0.999976, 0.005790), (0.999975, 0.005781)],
        ),
        (
            "bfp4",
            [
                "a96d83dc962734540eb2e00b119cef096ded7db9ed3d9990b9381ca41e998f5a",
                "06f80f12b30fc53dedf6cc6c5f1d757d190b3b2697de54916a70f8884525c527",
            ],
            [(0.993380, 0.096684), (0.992971, 0.097794)],
        ),
        (
            "bfp2",
            [
                "b80d5c5da6f5cf81ba9fc842ad88d7671e2627361815c878605f7058f69d088c",
                "2c121c90942166d2a136f1e0b4d27b4e72f5922de31fbb1c926942e489a28996",
            ],
            [(0.889924, 0.382508), (0.877404, 0.402857)],
        ),
        (
            "mxfp4",
            [
                "e2dd1a6675776bb97358f08ad470c73b3a1afe271efcd681de80f52e59758308",
                "59d4d506ba79b63cbf5f588ce01ea96f460e3b4dadb9457f1c305957877ad72f",
            ],
            [(0.993162, 0.088489), (0.992960, 0.087078)],
        ),
        (
            "nvfp4",
            [
                "029331fe82585b94c19440161773907ea7c0ed447350cecafffe330551ed399d",
                "435f88f2e827d3b5a9e84d8f3a149a238b0d825064dec9e645ba365b5c68f25f",
            ],
            [(0.995650, 0.071676), (0.996042, 0.067459)],
        ),
    ];
    for (fmt, hashes, figs) in table {
        for (k, tile) in [&a, &b].into_iter().enumerate() {
            let mut dec = vec![0f32; TILE_ELEMS];
            let packed: Vec<u8> = match fmt {
                "bf16" => {
                    let bits: Vec<u16> = tile
                        .iter()
                        .map(|&v| tenpak::dtype::f32_to_bf16_bits(v))
                        .collect();
                    for (d, &h) in dec.iter_mut().zip(&bits) {
                        *d = f32::from_bits((h as u32) << 16);
                    }
                    bits.iter().flat_map(|h| h.to_le_bytes()).collect()
                }
                "mxfp4" => {
                    let mut o = vec![0u8; mx::MXFP4_TILE_BYTES];
                    mx::mxfp4_encode_tile(tile, &mut o);
                    mx::mxfp4_decode_tile(&o, &mut dec);
                    o
                }
                "nvfp4" => {
                    // The spec hashes [f32 g][64 scales][512 codes], g from the tile's amax.
                    let amax = tile.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let g = mx::nvfp4_global(amax);
                    let mut o = vec![0u8; mx::NVFP4_TILE_BYTES];
                    mx::nvfp4_encode_tile(tile, g, &mut o);
                    mx::nvfp4_decode_tile(&o, g, &mut dec);
                    [g.to_le_bytes().to_vec(), o].concat()
                }
                _ => {
                    let kind = match fmt {
                        "bfp8" => Bfp::B8,
                        "bfp4" => Bfp::B4,
                        _ => Bfp::B2,
                    };
                    let mut o = vec![0u8; kind.tile_bytes()];
                    bfp::encode_tile(tile, kind, &mut o);
                    bfp::decode_tile(&o, kind, &mut dec);
                    o
                }
            };
            assert_eq!(hex(&packed), hashes[k], "{fmt} tile {}", ["A", "B"][k]);
            let (pcc, mae) = pcc_mae(tile, &dec);
            assert!((pcc - figs[k].0).abs() < 1e-6, "{fmt} pcc {pcc}");
            assert!((mae - figs[k].1).abs() < 1e-6, "{fmt} mae {mae}");
        }
    }
    // fp0: the error is the tile itself.
    let (_, mae) = pcc_mae(&a, &[0.0; TILE_ELEMS]);
    assert!((mae - 0.816074).abs() < 1e-6);
}

/// Every tile codec on MiniLM's encoder layer 0: the file decodes to what compress measured, sizes
/// are the real tile sizes, vectors stay raw by default, and `--transpose` is recorded and undone.
#[test]
fn tile_codecs_on_minilm() {
    let dir = tempfile::tempdir().unwrap();
    let m = minilm();
    let src = read_safetensors(&m);
    for (codec, tile_bytes) in [
        ("bfp8", 1088u64),
        ("bfp4", 576),
        ("bfp2", 320),
        ("mxfp4", 544),
        ("nvfp4", 576),
        ("fp0", 0),
        ("bf16:order=tile", 2048),
    ] {
        for transpose in [false, true] {
            let tpk = dir.path().join("t.tpk");
            let mut args = vec![
                "compress",
                s(&m),
                "-o",
                s(&tpk),
                "--filter",
                "encoder.layer.0.attention",
                "--codec",
                codec,
                "--force",
            ];
            if transpose {
                args.push("--transpose");
            }
            let j = tenpak_json(&args);
            let back = dir.path().join("t.safetensors");
            tenpak_ok(&["verify", s(&tpk)]);
            let ins = tenpak_json(&["inspect", s(&tpk)]);
            let layouts: Vec<&str> = ins["tensors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["layout"].as_str().unwrap())
                .collect();
            let tiled = if transpose {
                "tiles32-transposed"
            } else {
                "tiles32"
            };
            assert!(
                layouts.contains(&tiled) && layouts.contains(&"row-major"),
                "{layouts:?}"
            );
            tenpak_ok(&["decompress", s(&tpk), "-o", s(&back), "--force", "-q"]);
            let got = read_safetensors(&back);
            for t in j["tensors"].as_array().unwrap() {
                let name = t["name"].as_str().unwrap();
                let shape: Vec<u64> = t["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .collect();
                let enc = t["encoded_bytes"].as_u64().unwrap();
                if shape.len() < 2 {
                    assert_eq!(t["codec"], "raw", "{codec} {name}");
                    continue;
                }
                assert_eq!(t["codec"].as_str().unwrap(), codec);
                let (r, c) = if transpose {
                    (shape[1..].iter().product::<u64>(), shape[0])
                } else {
                    (
                        shape[..shape.len() - 1].iter().product(),
                        shape[shape.len() - 1],
                    )
                };
                assert_eq!(
                    enc,
                    r.div_ceil(32) * c.div_ceil(32) * tile_bytes,
                    "{codec} {name}"
                );
                // The decoded file gives the metrics compress reported.
                let x: Vec<f32> = f32s(&src[name].2);
                let y: Vec<f32> = match got[name].0.as_str() {
                    "F32" => f32s(&got[name].2),
                    "BF16" => got[name]
                        .2
                        .chunks_exact(2)
                        .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                        .collect(),
                    other => panic!("{other}"),
                };
                // compress sums each tile in f32 (formats-spec/metrics.md): MAE to f32
                // rounding, PCC to a small fraction of its distance from 1.
                let (pcc, mae) = pcc_mae(&x, &y);
                let want = &t["metrics"];
                let (wmae, wpcc) = (want["mae"].as_f64().unwrap(), want["pcc"].as_f64().unwrap());
                assert!(
                    (mae - wmae).abs() <= 1e-5 * mae,
                    "{codec} {name}: mae {mae} vs {wmae}"
                );
                if codec != "fp0" {
                    assert!(
                        (pcc - wpcc).abs() <= (1e-3 * (1.0 - pcc)).max(1e-12),
                        "{codec} {name}: pcc {pcc} vs {wpcc}"
                    );
                }
            }
        }
    }
}

/// Tile codecs refuse NaN and infinity with an error naming the file and the tensor, and leave
/// no output behind.
#[test]
fn non_finite_weights_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("nan.safetensors");
    let mut vals = vec![0.5f32; 40 * 40];
    vals[3 * 40 + 5] = f32::NAN;
    vals[7 * 40 + 7] = f32::INFINITY;
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_st(
        &src,
        vec![("bad.weight", safetensors::Dtype::F32, vec![40, 40], bytes)],
    );
    for codec in ["bfp8", "bfp2", "nvfp4", "mxfp4", "fp0"] {
        let out = dir.path().join("o.tpk");
        let o = tenpak(&["compress", s(&src), "-o", s(&out), "--codec", codec, "-q"]);
        assert_eq!(o.status.code(), Some(1), "{codec}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("nan.safetensors")
                && err.contains("'bad.weight'")
                && err.contains("non-finite"),
            "{codec}: {err}"
        );
        assert!(!out.exists());
    }
}

/// Tensors with a dimension of 0 compress, verify and decompress in every layout (a `[0, 5]`
/// tensor under `--transpose` once divided by its empty tile row).
#[test]
fn empty_tensors_in_every_layout() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("e.safetensors");
    let w: Vec<u8> = (0..64 * 32)
        .flat_map(|i| (i as f32 * 0.01).sin().to_le_bytes())
        .collect();
    write_st(
        &src,
        vec![
            ("a", safetensors::Dtype::F32, vec![0, 5], vec![]),
            ("b", safetensors::Dtype::F32, vec![5, 0], vec![]),
            ("w", safetensors::Dtype::F32, vec![64, 32], w),
        ],
    );
    let out = dir.path().join("e.tpk");
    let back = dir.path().join("e_out.safetensors");
    for codec in ["bfp8", "nvfp4", "mxfp4", "int4_g32", "byteplane"] {
        for flags in [
            &["--tile-vectors"][..],
            &["--tile-vectors", "--transpose"][..],
        ] {
            let mut args = vec![
                "compress",
                s(&src),
                "-o",
                s(&out),
                "--codec",
                codec,
                "--force",
                "-q",
            ];
            args.extend(flags);
            tenpak_ok(&args);
            tenpak_ok(&["verify", s(&out)]);
            tenpak_ok(&["decompress", s(&out), "-o", s(&back), "--force", "-q"]);
            let st = read_safetensors(&back);
            assert_eq!(st["a"].1, vec![0, 5], "{codec} {flags:?}");
            assert_eq!(st["b"].1, vec![5, 0], "{codec} {flags:?}");
        }
    }
}

/// nvfp4 on a tensor of subnormal weights: the global scale is floored at the smallest normal
/// f32, so the file the writer makes is one `verify` accepts.
#[test]
fn nvfp4_of_subnormal_weights_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tiny.safetensors");
    let w: Vec<u8> = (0..32 * 32)
        .flat_map(|i| {
            (f32::from_bits(1 + (i % 7) as u32) * if i % 2 == 0 { 1.0 } else { -1.0 }).to_le_bytes()
        })
        .collect();
    write_st(&src, vec![("w", safetensors::Dtype::F32, vec![32, 32], w)]);
    let out = dir.path().join("tiny.tpk");
    for flags in [&[][..], &["--transpose"][..]] {
        let mut args = vec![
            "compress",
            s(&src),
            "-o",
            s(&out),
            "--codec",
            "nvfp4",
            "--force",
            "-q",
        ];
        args.extend(flags);
        tenpak_ok(&args);
        tenpak_ok(&["verify", s(&out)]);
    }
    assert_eq!(mx::nvfp4_global(1e-42), f32::MIN_POSITIVE);
    assert_eq!(mx::nvfp4_global(10.0), 10.0 / 2688.0);
}
