//! Property tests: every lossless codec is bit-exact on arbitrary elements of every dtype;
//! the lossy float codecs equal the reference conversion; payload sizes respect their bounds.

use proptest::prelude::*;
use tenpak::codec::{Pipeline, REGISTRY};
use tenpak::dtype::{self, DType};

/// `n` values in `[-scale, scale)` from a xorshift64 stream seeded by `seed`.
fn uniform(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn dtype_strategy() -> impl Strategy<Value = DType> {
    (0..DType::ALL.len()).prop_map(|i| DType::ALL[i])
}

const LOSSLESS: &[&str] = &[
    "raw",
    "zstd",
    "zstd:level=-3",
    "byteplane",
    "byteplane:zstd=always",
    "byteplane:zstd=never",
    "raw+zstd:level=1",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn lossless_roundtrip(dt in dtype_strategy(), raw in proptest::collection::vec(any::<u8>(), 0..4000)) {
        let n = raw.len() / dt.size();
        let bytes = &raw[..n * dt.size()];
        for spec in LOSSLESS {
            let p = Pipeline::parse(spec).unwrap();
            let enc = p.encode(dt, bytes).unwrap();
            prop_assert!(enc.len() <= p.tensor_codec().max_encoded_len(dt, n) + 64);
            let dec = p.decode(&enc, dt, n, u64::MAX).unwrap();
            prop_assert_eq!(&dec[..], bytes, "{}", spec);
        }
    }

    /// Low-entropy data (few distinct exponents), the case byteplane is built for.
    #[test]
    fn lossless_roundtrip_skewed(vals in proptest::collection::vec(prop_oneof![Just(0.0f32), -2.0f32..2.0, Just(f32::NAN)], 0..3000)) {
        let f32b: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut b16 = Vec::new();
        dtype::from_f32(DType::BF16, &vals, &mut b16).unwrap();
        for (dt, bytes) in [(DType::F32, &f32b), (DType::BF16, &b16)] {
            let n = bytes.len() / dt.size();
            for spec in LOSSLESS {
                let p = Pipeline::parse(spec).unwrap();
                let dec = p.decode(&p.encode(dt, bytes).unwrap(), dt, n, u64::MAX).unwrap();
                prop_assert_eq!(&dec, bytes);
            }
        }
    }

    #[test]
    fn float_codecs_match_reference(vals in proptest::collection::vec(any::<f32>(), 0..500)) {
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        for (spec, target) in [("f32", DType::F32), ("f16", DType::F16), ("bf16", DType::BF16)] {
            let p = Pipeline::parse(spec).unwrap();
            let dec = p.decode(&p.encode(DType::F32, &bytes).unwrap(), DType::F32, vals.len(), u64::MAX).unwrap();
            let mut want = Vec::new();
            dtype::from_f32(target, &vals, &mut want).unwrap();
            prop_assert_eq!(dec, want);
        }
    }
}

#[test]
fn every_registered_codec_roundtrips_params() {
    for e in REGISTRY {
        // `mixed`, `sparse` and `delta` are made by a config, --prune and --base, not by name; their params
        // round trips are unit tests of their own.
        if ["mixed", "sparse", "delta"].contains(&e.name) {
            assert!(Pipeline::parse(e.name).is_err());
            continue;
        }
        // `rot` wraps the codec after it.
        let spec = if e.name == "rot" { "rot+int8" } else { e.name };
        let p = Pipeline::parse(spec).unwrap();
        // Codecs with per-tensor parameters store them once fixed for a tensor (those that
        // learn from its values, from these).
        let vals: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0)
            .collect();
        let p = p.bind(&tenpak::codec::TensorFacts {
            dims: &[4, 64],
            amax: Some(1.0),
            values: None,
        });
        let p = p.bind_values(&[4, 64], &vals);
        let again = Pipeline::from_stages(&p.stages()).unwrap();
        assert_eq!(again.describe(), p.describe(), "{}", e.name);
    }
}

#[test]
fn decode_limit_is_enforced_before_allocation() {
    let p = Pipeline::parse("raw").unwrap();
    let e = p.decode(&[], DType::F32, 1 << 40, 1 << 20).unwrap_err();
    assert_eq!(e.kind, tenpak::ErrorKind::Limit);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Tile formats: encode -> decode -> encode gives the same bytes for tiles of normal values at
    /// scales from e^-20 to e^20 (formats-spec/blockfloat.md: the exceptions are groups whose
    /// exponent is below W, far below these scales); nvfp4 recomputes its global scale from the
    /// decoded amax, so it is checked against its error bound instead.
    #[test]
    fn tile_formats_reencode_identically(
        seed in any::<u64>(),
        k in -20i32..=20,
    ) {
        use tenpak::codec::bfp::{self, Bfp};
        use tenpak::codec::tile::TILE_ELEMS;
        use tenpak::codec::mx;
        let tile = uniform(seed, TILE_ELEMS, (k as f32).exp());
        for kind in [Bfp::B8, Bfp::B4, Bfp::B2] {
            let mut a = vec![0u8; kind.tile_bytes()];
            bfp::encode_tile(&tile, kind, &mut a);
            let mut d = vec![0f32; TILE_ELEMS];
            bfp::decode_tile(&a, kind, &mut d);
            let mut b = vec![0u8; kind.tile_bytes()];
            bfp::encode_tile(&d, kind, &mut b);
            prop_assert_eq!(&a, &b, "{:?}", kind);
        }
        let mut a = vec![0u8; mx::MXFP4_TILE_BYTES];
        mx::mxfp4_encode_tile(&tile, &mut a);
        let mut d = vec![0f32; TILE_ELEMS];
        mx::mxfp4_decode_tile(&a, &mut d);
        let mut b = vec![0u8; mx::MXFP4_TILE_BYTES];
        mx::mxfp4_encode_tile(&d, &mut b);
        prop_assert_eq!(&a, &b);
        let amax = tile.iter().fold(0f32, |m, v| m.max(v.abs()));
        let g = mx::nvfp4_global(amax);
        let mut a = vec![0u8; mx::NVFP4_TILE_BYTES];
        mx::nvfp4_encode_tile(&tile, g, &mut a);
        mx::nvfp4_decode_tile(&a, g, &mut d);
        for blk in 0..64 {
            let den = mx::e4m3_value(a[blk]) * g;
            for j in 0..16 {
                let (s, y) = (tile[16 * blk + j], d[16 * blk + j]);
                // Half an E2M1 step at the top binade is den; saturation at 6 adds at most
                // the block scale's rounding (E4M3 keeps 3 bits: < 1/16 of 6 * den).
                prop_assert!((s - y).abs() <= den * 1.0001, "{} vs {}", s, y);
            }
        }
    }
}

/// The compressor measures tile codecs against what `encode_f32_tiles` says the payload decodes
/// to: that must be exactly what decoding the payload gives, and the payload the same bytes as
/// the plain encoder's.
#[test]
fn tile_codec_reconstruction_is_the_decoder_output() {
    let mut x = 0x2545_F491u64;
    let vals: Vec<f32> = (0..4 * 1024)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f32 / (1u64 << 53) as f32 - 0.5) * if i % 7 == 0 { 8.0 } else { 0.3 }
        })
        .collect();
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    for spec in ["bfp8", "bfp4", "bfp2", "fp0", "mxfp4", "nvfp4", "bfp4+zstd"] {
        let p = Pipeline::parse(spec).unwrap();
        let p = p.bind(&tenpak::codec::TensorFacts {
            dims: &[],
            amax: Some(4.0),
            values: None,
        });
        let mut recon = Vec::new();
        let mut seen = Vec::new();
        let fast = p
            .encode_f32_tiles(&vals, &mut |x, y| {
                seen.extend_from_slice(x);
                recon.extend_from_slice(y);
            })
            .unwrap()
            .unwrap();
        assert_eq!(
            seen, vals,
            "{spec}: the visitor sees the source tiles in order"
        );
        assert_eq!(fast, p.encode(DType::F32, &bytes).unwrap(), "{spec}");
        let dec = p.decode(&fast, DType::F32, vals.len(), u64::MAX).unwrap();
        let want: Vec<u32> = dec
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let got: Vec<u32> = recon.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "{spec}");
    }
    // Codecs without the path say so.
    let p = Pipeline::parse("bf16:order=tile").unwrap();
    assert!(p.encode_f32_tiles(&vals, &mut |_, _| ()).is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// The integer codecs: every width, symmetry, group size and scale type decodes within half
    /// a step of each group (plus the stored scale's rounding), the payload is exactly as long
    /// as formats-spec/int.md says, and symmetric codes re-encode identically.
    #[test]
    fn int_codecs_roundtrip(
        seed in any::<u64>(),
        n in 1usize..600,
        bits in prop::sample::select(vec![2u8, 3, 4, 8]),
        asym in any::<bool>(),
        group in prop::sample::select(vec![1usize, 7, 16, 32, 100]),
        f32_scale in any::<bool>(),
        k in -8i32..=8,
    ) {
        let vals = uniform(seed, n, (k as f32).exp());
        let spec = format!(
            "int:bits={bits},group={group}{}{}",
            if asym { ",zero=asym" } else { "" },
            if f32_scale { ",scale=f32" } else { "" }
        );
        let p = Pipeline::parse(&spec).unwrap();
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let enc = p.encode(DType::F32, &bytes).unwrap();
        let groups = n.div_ceil(group);
        let pb = if f32_scale { 4 } else { 2 };
        prop_assert_eq!(enc.len(), groups * pb * (1 + asym as usize) + (n * bits as usize).div_ceil(8));
        let dec = p.decode(&enc, DType::F32, n, u64::MAX).unwrap();
        let y: Vec<f32> = dec.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        for (gx, gy) in vals.chunks(group).zip(y.chunks(group)) {
            let (lo, hi) = gx.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            let step = if asym {
                (hi - lo) / ((1u32 << bits) - 1) as f32
            } else {
                lo.abs().max(hi.abs()) / ((1u32 << (bits - 1)) - 1) as f32
            };
            // f16 scales and offsets move the grid by up to 2^-11 relative: per level for the
            // scale, once for the offset.
            let rel = if f32_scale { 1e-6 } else { 1e-3 };
            // (f16 subnormal scales and offsets: an absolute 2^-25 at most, per level.)
            let tiny = if f32_scale { 0.0 } else { 2f32.powi(-24) * ((1u32 << bits) + 1) as f32 };
            let slack = rel * (step * (1u32 << bits) as f32 + lo.abs().max(hi.abs())) + tiny;
            for (a, b) in gx.iter().zip(gy) {
                prop_assert!((a - b).abs() <= 0.5 * step * 1.001 + slack + 1e-30, "{spec}: {a} -> {b}");
            }
        }
        // Symmetric codes re-encode identically, where the stored scale is exact enough to be
        // recomputed (f32, or normal f16: amax / qmax >= 2^-14).
        let qmax = ((1u32 << (bits - 1)) - 1) as f32;
        let normal = vals
            .chunks(group)
            .all(|g| g.iter().fold(0f32, |m, v| m.max(v.abs())) / qmax >= 2f32.powi(-14));
        if !asym && (f32_scale || normal) {
            let again = p.encode(DType::F32, &dec).unwrap();
            prop_assert_eq!(p.decode(&again, DType::F32, n, u64::MAX).unwrap(), dec);
        }
    }

    /// Sparse storage and XOR deltas around a lossless codec give back every bit.
    #[test]
    fn sparse_and_delta_are_exact_around_lossless_codecs(
        seed in any::<u64>(),
        n in 1usize..3000,
        keep in 1u64..40,
    ) {
        use tenpak::codec::delta::{fingerprint, DeltaCodec, Mode};
        use tenpak::codec::sparse::SparseCodec;
        use tenpak::codec::TensorCodec;
        let mut x = seed | 1;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let vals: Vec<u8> = (0..n)
            .flat_map(|_| {
                let r = next();
                let v = if r % keep == 0 { f32::from_bits((r >> 32) as u32) } else { 0.0 };
                v.to_le_bytes()
            })
            .collect();
        let inner = Pipeline::parse("byteplane").unwrap().tensor_codec_arc();
        let s = SparseCodec::new(inner.clone()).unwrap();
        let enc = s.encode(DType::F32, &vals).unwrap();
        let mut out = vec![0u8; vals.len()];
        s.decode(&enc, DType::F32, n, &mut out).unwrap();
        prop_assert_eq!(&out, &vals);
        let base: Vec<u8> = (0..4 * n).map(|_| next() as u8).collect();
        let d = DeltaCodec::new(Mode::Xor, fingerprint(DType::F32, &[n as u64], &base), inner).unwrap();
        let xor: Vec<u8> = vals.iter().zip(&base).map(|(a, b)| a ^ b).collect();
        let enc = d.encode(DType::F32, &xor).unwrap();
        let mut out = vec![0u8; vals.len()];
        d.decode(&enc, DType::F32, n, &mut out).unwrap();
        d.apply(&mut out, &base, DType::F32);
        prop_assert_eq!(out, vals);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    /// KV codecs on synthetic [T, H, D] tensors with an outlier channel and odd values (±0,
    /// subnormals, ±inf, NaN), T from 1: the gear family decodes bit-exactly whatever the
    /// dtype, and kvq with an error bound keeps every finite value within it in the dtype and
    /// every non-finite value's bits.
    #[test]
    fn kv_codecs_roundtrip_and_bound(
        t in 1u64..40,
        h in 1u64..4,
        d in prop_oneof![Just(8u64), Just(16), Just(64)],
        seed in any::<u64>(),
        odd in proptest::collection::vec((0usize..10_000, prop_oneof![
            Just(0.0f32), Just(-0.0), Just(1e-40), Just(6e-8), Just(f32::INFINITY),
            Just(f32::NEG_INFINITY), Just(f32::NAN), Just(70000.0)]), 0..6),
    ) {
        let n = (t * h * d) as usize;
        let mut x = seed | 1;
        let mut vals: Vec<f32> = (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let v = (x % 20000) as f32 / 10000.0 - 1.0;
                if i as u64 % d == 1 { v * 25.0 + 6.0 } else { v }
            })
            .collect();
        for (i, v) in odd {
            vals[i % n] = v;
        }
        let dims = [t, h, d];
        for dt in [DType::F16, DType::BF16, DType::F32] {
            let mut b = Vec::new();
            dtype::from_f32(dt, &vals, &mut b).unwrap();
            let mut xs = Vec::new();
            dtype::to_f32(dt, &b, &mut xs);
            let amax = xs.iter().filter(|v| v.is_finite()).fold(0f32, |a, v| a.max(v.abs()));
            let facts = tenpak::codec::TensorFacts { dims: &dims, amax: Some(amax), values: None };
            for spec in ["gear", "gear:delta=token", "gear:delta=auto", "gear:split=none"] {
                let p = Pipeline::parse(spec).unwrap().bind(&facts);
                let dec = p.decode(&p.encode(dt, &b).unwrap(), dt, n, u64::MAX).unwrap();
                prop_assert_eq!(&dec, &b, "{} {}", spec, dt);
            }
            for spec in [
                "kvq:group=channel,bits=4,size=8,eb=0.05",
                "kvq:group=token,bits=3,size=16,eb=0.05,outliers=0.02",
                "kvq:group=step,eb=0.01",
                "kvq:group=tensor,bits=8,eb=0.2",
                "kvq:group=block,bits=6,size=8,eb=0.1,rot=hadamard",
            ] {
                let eb: f32 = spec.split("eb=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
                let p = Pipeline::parse(spec).unwrap().bind(&facts);
                let enc = p.encode(dt, &b).unwrap();
                let back = Pipeline::from_stages(&p.stages()).unwrap();
                let dec = back.decode(&enc, dt, n, u64::MAX).unwrap();
                let mut ys = Vec::new();
                dtype::to_f32(dt, &dec, &mut ys);
                for (i, (a, y)) in xs.iter().zip(&ys).enumerate() {
                    if a.is_finite() {
                        prop_assert!((a - y).abs() <= eb, "{} {} [{}]: {} -> {}", spec, dt, i, a, y);
                    } else {
                        prop_assert_eq!(a.to_bits(), y.to_bits(), "{} {}", spec, dt);
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    /// The data-free codebook and grid codecs (issue 15): exact payload lengths, the same bytes
    /// on a second encode, the decoder built from the stored stages agrees with the encoder's,
    /// every decoded value is finite and the reconstruction beats zeros.
    #[test]
    fn codebook_and_grid_codecs_roundtrip(
        seed in any::<u64>(),
        rows in 1usize..9,
        cols in prop::sample::select(vec![8usize, 16, 64]),
        spec in prop::sample::select(vec![
            "grid:group=8",
            "grid:n=5,group=16",
            "grid:n=40,group=16",
            "nf4_g16",
            "grid:levels=fit,n=8,group=8",
            "vq:d=2,k=16,iters=3",
            "vq:d=4,k=16,iters=2,scope=chunk",
            "vq:d=2,k=16,iters=2,group=8",
            "lowrank:rank=2",
            "lowrank:rank=3,factors=int8",
            "tenpakx:rank=1,d=2,k=16,iters=2,group=8",
            "pocketllm:k=16,iters=2",
            "rot:block=8+int4_g8",
            "rot+grid:group=8",
            "rot+vq:d=2,k=16,iters=2",
        ]),
        k in -6i32..=6,
    ) {
        let n = rows * cols;
        // Cubed: heavy tails.
        let vals: Vec<f32> = uniform(seed, n, 1.0).iter().map(|u| u * u * u * (k as f32).exp()).collect();
        let dims = [rows as u64, cols as u64];
        let p = Pipeline::parse(spec).unwrap().bind_values(&dims, &vals);
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let enc = p.encode(DType::F32, &bytes).unwrap();
        prop_assert_eq!(&p.encode(DType::F32, &bytes).unwrap(), &enc);
        prop_assert_eq!(enc.len(), p.tensor_codec().max_encoded_len(DType::F32, n), "{}", spec);
        let dec = p.decode(&enc, DType::F32, n, u64::MAX).unwrap();
        let stored = Pipeline::from_stages(&p.stages()).unwrap();
        prop_assert_eq!(&stored.decode(&enc, DType::F32, n, u64::MAX).unwrap(), &dec);
        prop_assert!(p.decode(&enc[..enc.len() - 1], DType::F32, n, u64::MAX).is_err());
        let y: Vec<f32> = dec.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        prop_assert!(y.iter().all(|v| v.is_finite()));
        let err: f64 = vals.iter().zip(&y).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        let energy: f64 = vals.iter().map(|a| (*a as f64).powi(2)).sum();
        prop_assert!(err <= energy * 1.0001 + 1e-30, "{spec}: error {err} vs energy {energy}");
    }
}

/// Issue 15's codecs on the real MiniLM: compress, verify, inspect (the stages of tenpakx and
/// vq), decompress; the decoded weights are close to the originals (each codec's own error:
/// cosine per matrix), the file is the same bytes on one thread and on two, and the report's
/// stage bytes add up to the payload.
#[test]
fn codebook_codecs_through_the_container_on_minilm() {
    use crate::common::*;
    let m = minilm();
    let dir = tempfile::tempdir().unwrap();
    let orig = read_safetensors(&m);
    for (codec, min_cos) in [
        ("tenpakx:rank=8,k=64,iters=3", 0.999),
        ("pocketllm:k=64,iters=3", 0.999),
        ("vq:d=2,k=256,iters=3", 0.98),
        ("rot+nvfp4", 0.99),
        ("rot+grid:group=32", 0.99),
        ("nf4", 0.99),
        ("grid:levels=fit,group=32", 0.99),
        ("lowrank:energy=0.5,factors=bf16", 0.5),
        ("int6_g32_asym", 0.9995),
    ] {
        let tpk = dir.path().join("t.tpk");
        let args = |threads: &'static str, out: &'static str| {
            vec![
                "compress".to_string(),
                s(&m).to_string(),
                "-o".into(),
                s(&dir.path().join(out)).to_string(),
                "--filter".into(),
                "encoder.layer.0.attention".into(),
                "--codec".into(),
                codec.into(),
                "--threads".into(),
                threads.into(),
                "--force".into(),
            ]
        };
        let a = args("2", "t.tpk");
        let j = tenpak_json(&a.iter().map(|x| x.as_str()).collect::<Vec<_>>());
        let b = args("1", "t1.tpk");
        tenpak_json(&b.iter().map(|x| x.as_str()).collect::<Vec<_>>());
        assert_eq!(
            std::fs::read(&tpk).unwrap(),
            std::fs::read(dir.path().join("t1.tpk")).unwrap(),
            "{codec}: thread count changed the bytes"
        );
        tenpak_ok(&["verify", s(&tpk)]);
        let ins = tenpak_json(&["inspect", s(&tpk)]);
        for (t, r) in ins["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .zip(j["tensors"].as_array().unwrap())
        {
            if let Some(st) = t["stages"].as_object() {
                assert_eq!(Some(st), r["stages"].as_object(), "{codec}");
                let sum: u64 = st.values().map(|v| v.as_u64().unwrap()).sum();
                assert!(
                    sum >= t["encoded_bytes"].as_u64().unwrap(),
                    "{codec}: {st:?}"
                );
            } else {
                let c = r["codec"].as_str().unwrap();
                assert!(!c.starts_with("tenpakx") && !c.starts_with("vq"), "{c}");
            }
        }
        let back = dir.path().join("t.safetensors");
        tenpak_ok(&["decompress", s(&tpk), "-o", s(&back), "--force", "-q"]);
        let got = read_safetensors(&back);
        let mut matrices = 0;
        for (name, (_, shape, bytes)) in &got {
            if shape.len() < 2 {
                continue;
            }
            matrices += 1;
            let x = f32s(&orig[name].2);
            let y = f32s(bytes);
            let dot: f64 = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum();
            let nx: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
            let ny: f64 = y.iter().map(|a| (*a as f64).powi(2)).sum();
            let cos = dot / (nx.sqrt() * ny.sqrt());
            assert!(cos >= min_cos, "{codec} {name}: cosine {cos}");
        }
        assert_eq!(matrices, 4, "{codec}");
    }
}
