//! Replays every committed fuzz seed (`fuzz/seeds/<target>/`), every minimized corpus
//! (`fuzz/minimized/<target>/`, what libFuzzer's `-merge=1` kept of a run) and every crash or
//! regression file (`tests/regressions/<target>/`) through the same entry points the fuzz targets use, on
//! stable Rust. Files that must fail with an error live in `tests/bad/` and are checked by name.
//!
//! `TENPAK_WRITE_SEEDS=1 cargo test fuzz_replay` regenerates `fuzz/seeds/` from real data.

use crate::common::*;
use std::path::Path;
use tenpak::fuzz_api as f;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("container_open", f::container_open),
    ("decode_raw", |d| f::decode_codec("raw", d)),
    ("decode_float", |d| {
        for c in ["f32", "f16", "bf16"] {
            f::decode_codec(c, d)
        }
    }),
    ("decode_zstd", |d| f::decode_codec("zstd", d)),
    ("decode_byteplane", |d| f::decode_codec("byteplane", d)),
    ("decode_bfp", |d| {
        for c in ["bfp8", "bfp4", "bfp2", "fp0"] {
            f::decode_codec(c, d)
        }
    }),
    ("decode_mx", |d| {
        for c in ["mxfp4", "nvfp4"] {
            f::decode_codec(c, d)
        }
    }),
    ("decode_mixed", |d| f::decode_codec("mixed", d)),
    ("decode_sparse", |d| f::decode_codec("sparse", d)),
    ("decode_delta", |d| f::decode_codec("delta", d)),
    ("decode_gear", |d| f::decode_codec("gear", d)),
    ("decode_kvq", |d| f::decode_codec("kvq", d)),
    ("decode_rot", |d| f::decode_codec("rot", d)),
    ("decode_grid", |d| f::decode_codec("grid", d)),
    ("decode_vq", |d| f::decode_codec("vq", d)),
    ("decode_lowrank", |d| {
        for c in ["lowrank", "tenpakx"] {
            f::decode_codec(c, d)
        }
    }),
    ("decode_int", |d| {
        for c in ["int", "int4_residual"] {
            f::decode_codec(c, d)
        }
    }),
    ("roundtrip_byteplane", |d| {
        f::roundtrip("byteplane:zstd=always", d);
        f::roundtrip("byteplane", d)
    }),
    ("roundtrip_zstd", |d| f::roundtrip("zstd:level=1", d)),
    ("input_gguf", f::input_gguf),
    ("input_safetensors", f::input_safetensors),
    ("config_json", f::config_json),
    ("input_kv_meta", f::kv_meta),
    ("kv_policy", f::kv_policy),
    ("input_kv_safetensors", f::kv_safetensors),
    ("input_calibration", f::calibration),
    ("sensitivity_json", f::sensitivity_json),
    ("input_sharded_index", f::sharded_index),
    ("eval_hf_meta", tenpak_eval::fuzz_api::hf_meta),
    ("eval_gguf_meta", tenpak_eval::fuzz_api::gguf_meta),
    ("output_meta", f::output_meta),
    ("tpk_set_index", f::tpk_set_index),
];

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn replay_seeds_and_regressions() {
    // TENPAK_WRITE_SEEDS=1 writes every seed; =eval only the metadata targets' seeds.
    match std::env::var("TENPAK_WRITE_SEEDS").as_deref() {
        Ok("eval") => write_meta_seeds(),
        Ok(_) => {
            write_seeds();
            write_meta_seeds();
        }
        Err(_) => {}
    }
    let root = crate::common::repo();
    let mut count = 0;
    for (name, target) in TARGETS {
        for base in ["fuzz/seeds", "fuzz/minimized", "tests/regressions"] {
            for file in files(&root.join(base).join(name)) {
                target(&std::fs::read(&file).unwrap());
                count += 1;
            }
        }
    }
    assert!(
        count >= TARGETS.len(),
        "only {count} seed files: run with TENPAK_WRITE_SEEDS=1"
    );
}

/// Each file in tests/bad/ must be refused with an error (never a panic) by the reader its
/// extension names.
#[test]
fn bad_files_are_errors() {
    let root = crate::common::repo().join("tests/bad");
    let mut n = 0;
    for file in files(&root) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let err = match file.extension().and_then(|e| e.to_str()) {
            Some("tpk") => tenpak::inspect::inspect(&file).err(),
            Some("gguf") | Some("safetensors") => tenpak::input::open(&file).err(),
            _ => continue,
        };
        assert!(err.is_some(), "{name} was accepted");
        n += 1;
    }
    assert!(n >= 3);
}

fn write_seeds() {
    let root = crate::common::repo().join("fuzz/seeds");
    let put = |t: &str, name: &str, b: &[u8]| {
        std::fs::create_dir_all(root.join(t)).unwrap();
        std::fs::write(root.join(t).join(name), b).unwrap();
    };
    // A calibration file of one 4-channel input read by two weights, and a sensitivity file.
    {
        let dir = tempfile::tempdir().unwrap();
        let slice = tenpak::calib::TokenSlice {
            corpus: "cfi-en.txt".into(),
            unit: "tokens".into(),
            first_token: 32704,
            windows: 1,
            ctx: 8,
            sha256: "00".into(),
            disjoint_from: "the evaluation windows".into(),
        };
        let info = tenpak::calib::CalibInfo {
            format: 1,
            model: "seed".into(),
            slice: slice.clone(),
            rows: 7,
            inputs: [
                ("blk.0.attn_q.weight", "blk.0.attn_q.weight"),
                ("blk.0.attn_k.weight", "blk.0.attn_q.weight"),
            ]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
            hessian: true,
        };
        let stats = [tenpak::calib::InputStats {
            key: "blk.0.attn_q.weight".into(),
            importance: vec![1.0, 0.5, 2.0, 0.25],
            hessian: Some(vec![
                1.0, 0.1, 0.0, 0.0, 0.1, 0.5, 0.0, 0.0, 0.0, 0.0, 2.0, 0.2, 0.0, 0.0, 0.2, 0.25,
            ]),
        }];
        let p = dir.path().join("c.safetensors");
        tenpak::calib::write(&p, &info, &stats, true).unwrap();
        put(
            "input_calibration",
            "small.safetensors",
            &std::fs::read(&p).unwrap(),
        );
        let sens = tenpak::allocate::Sensitivity {
            format: 1,
            model: "seed".into(),
            slice,
            measure: "kld".into(),
            method: "noise".into(),
            seed: 1,
            reference_nll: 3.2,
            seconds: 1.0,
            tensors: vec![tenpak::allocate::TensorSensitivity {
                name: "blk.0.attn_q.weight".into(),
                numel: 16,
                alpha: 0.5,
                rel_sq: 2e-3,
                kld: 1e-3,
                delta_nll: Some(5e-4),
                codecs: vec![tenpak::allocate::CodecSensitivity {
                    codec: "int8".into(),
                    rel_sq: 1e-5,
                    kld: 5e-6,
                    delta_nll: Some(1e-6),
                }],
            }],
        };
        put(
            "sensitivity_json",
            "small.json",
            serde_json::to_string_pretty(&sens).unwrap().as_bytes(),
        );
    }
    for cfg in files(&crate::common::repo().join("compression_configs")) {
        if cfg.extension().is_some_and(|e| e == "json") {
            let name = cfg.file_name().unwrap().to_string_lossy().into_owned();
            put("config_json", &name, &std::fs::read(&cfg).unwrap());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let tpk = dir.path().join("s.tpk");
    for codec in ["byteplane", "bf16+zstd", "raw"] {
        tenpak_ok(&[
            "compress",
            s(&minilm()),
            "-o",
            s(&tpk),
            "--filter",
            "LayerNorm",
            "--limit",
            "2",
            "--chunk-elems",
            "200",
            "--codec",
            codec,
            "--force",
            "-q",
        ]);
        put(
            "container_open",
            &format!("{}.tpk", codec.replace('+', "_")),
            &std::fs::read(&tpk).unwrap(),
        );
    }
    // A tiled tensor, transposed, for the container target.
    tenpak_ok(&[
        "compress",
        s(&minilm()),
        "-o",
        s(&tpk),
        "--filter",
        "encoder.layer.0.attention.self.query",
        "--codec",
        "nvfp4",
        "--transpose",
        "--tile-vectors",
        "--force",
        "-q",
    ]);
    put(
        "container_open",
        "nvfp4_tiles.tpk",
        &std::fs::read(&tpk).unwrap(),
    );
    // Decoder seeds: [dtype index][n u16][params len][params][payload] from real weights.
    let st = read_safetensors(&minilm());
    let w = &st["encoder.layer.0.attention.self.query.weight"].2[..4096];
    let mut b16 = Vec::new();
    let vals: Vec<f32> = w
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    tenpak::dtype::from_f32(tenpak::dtype::DType::BF16, &vals, &mut b16).unwrap();
    let idx = |d: tenpak::dtype::DType| {
        tenpak::dtype::DType::ALL
            .iter()
            .position(|x| *x == d)
            .unwrap() as u8
    };
    for (codec, dt, bytes) in [
        ("bfp8", tenpak::dtype::DType::F32, w),
        ("bfp2", tenpak::dtype::DType::F32, w),
        ("mxfp4", tenpak::dtype::DType::F32, w),
        ("nvfp4", tenpak::dtype::DType::F32, w),
        ("byteplane", tenpak::dtype::DType::F32, w),
        ("byteplane", tenpak::dtype::DType::BF16, &b16[..]),
        ("raw", tenpak::dtype::DType::F32, w),
        ("bf16", tenpak::dtype::DType::F32, w),
        ("zstd", tenpak::dtype::DType::F32, w),
        ("kvq:group=tensor,bits=8", tenpak::dtype::DType::F32, w),
        (
            "kvq:group=channel,bits=4,size=8,outliers=0.01",
            tenpak::dtype::DType::BF16,
            &b16[..],
        ),
        (
            "kvq:group=step,eb=0.001",
            tenpak::dtype::DType::BF16,
            &b16[..],
        ),
    ] {
        let p = tenpak::codec::Pipeline::parse(codec).unwrap();
        let p = p.bind(&tenpak::codec::TensorFacts {
            dims: &[],
            amax: Some(0.5),
            values: None,
        });
        let stages = p.stages();
        let n = bytes.len() / dt.size();
        let (params, payload) = if codec == "zstd" {
            (stages[1].params.clone(), p.encode(dt, bytes).unwrap())
        } else {
            (stages[0].params.clone(), p.encode(dt, bytes).unwrap())
        };
        let mut seed = vec![idx(dt)];
        seed.extend((n as u16).to_le_bytes());
        seed.push(params.len() as u8);
        seed.extend(&params);
        seed.extend(&payload);
        let target = match codec {
            "bf16" => "decode_float".to_string(),
            "bfp8" | "bfp2" => "decode_bfp".to_string(),
            "mxfp4" | "nvfp4" => "decode_mx".to_string(),
            c if c.starts_with("kvq") => "decode_kvq".to_string(),
            c => format!("decode_{c}"),
        };
        let file = codec.replace([':', ',', '='], "_");
        put(&target, &format!("{}_{}.bin", file, dt.name()), &seed);
    }
    {
        // A mixed tensor of four tiles over five formats.
        use tenpak::codec::mixed::{MixedCodec, TileFormat};
        let table: Vec<TileFormat> = ["bf16", "bfp8", "bfp4", "fp0", "nvfp4"]
            .iter()
            .map(|n| TileFormat::parse(n).unwrap().for_tensor(0.5))
            .collect();
        let c = MixedCodec::new(table, std::sync::Arc::from(vec![0u8, 1, 2, 4])).unwrap();
        let n = 4 * 1024;
        let four: Vec<u8> = w.iter().copied().cycle().take(4 * n).collect();
        let seed = f32_seed(&c, &four, n as u16, idx(tenpak::dtype::DType::F32));
        put("decode_mixed", "mixed_F32.bin", &seed);
    }
    for (name, spec) in [
        ("int4_g32", "int4_g32"),
        ("int3_g16_asym", "int3_g16_asym"),
        ("int8_axis0", "int8_axis0"),
        ("int4_residual", "int4_residual"),
    ] {
        let p = tenpak::codec::Pipeline::parse(spec).unwrap();
        let t = p.tensor_codec();
        let t = t
            .bind(&tenpak::codec::TensorFacts {
                dims: &[8, 64],
                amax: None,
                values: None,
            })
            .unwrap_or_else(|| p.tensor_codec_arc());
        let vals = &w[..512 * 4];
        let seed = f32_seed(&*t, vals, 512, idx(tenpak::dtype::DType::F32));
        put("decode_int", &format!("{name}.bin"), &seed);
    }
    for (target, name, spec, dims) in [
        (
            "decode_rot",
            "rot_int4_g32",
            "rot:block=32+int4_g32",
            [8u64, 64],
        ),
        ("decode_grid", "grid_gauss", "grid:group=32", [8, 64]),
        ("decode_grid", "grid_nf4", "nf4", [8, 64]),
        (
            "decode_grid",
            "grid_fit3",
            "grid:levels=fit,n=3,group=16",
            [8, 64],
        ),
        ("decode_vq", "vq_tensor", "vq:d=2,k=16,iters=2", [8, 64]),
        (
            "decode_vq",
            "vq_chunk",
            "vq:d=2,k=16,iters=2,scope=chunk",
            [8, 64],
        ),
        ("decode_lowrank", "lowrank", "lowrank:rank=1", [64, 8]),
        (
            "decode_lowrank",
            "lowrank_int8",
            "lowrank:rank=2,factors=int8",
            [64, 8],
        ),
        (
            "decode_lowrank",
            "tenpakx",
            "tenpakx:rank=1,d=2,k=16,iters=2,group=8",
            [64, 8],
        ),
    ] {
        let vals = &w[..512 * 4];
        let floats: Vec<f32> = vals
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let p = tenpak::codec::Pipeline::parse(spec)
            .unwrap()
            .bind_values(&dims, &floats);
        let seed = f32_seed(p.tensor_codec(), vals, 512, idx(tenpak::dtype::DType::F32));
        put(target, &format!("{name}.bin"), &seed);
    }
    for (name, inner, keep) in [("f16_bitmap", "f16", 2usize), ("int8_gaps", "int8_g64", 40)] {
        let inner = tenpak::codec::Pipeline::parse(inner)
            .unwrap()
            .tensor_codec_arc();
        let c = tenpak::codec::sparse::SparseCodec::new(inner).unwrap();
        let mut vals = w[..512 * 4].to_vec();
        for (i, e) in vals.chunks_exact_mut(4).enumerate() {
            if i % keep != 0 {
                e.fill(0);
            }
        }
        let seed = f32_seed(&c, &vals, 512, idx(tenpak::dtype::DType::F32));
        put("decode_sparse", &format!("{name}.bin"), &seed);
    }
    for (name, inner, mode) in [
        (
            "xor_byteplane",
            "byteplane",
            tenpak::codec::delta::Mode::Xor,
        ),
        ("sub_int8", "int8_g64", tenpak::codec::delta::Mode::Sub),
    ] {
        let inner = tenpak::codec::Pipeline::parse(inner)
            .unwrap()
            .tensor_codec_arc();
        let fp = tenpak::codec::delta::fingerprint(tenpak::dtype::DType::F32, &[512], &[0; 2048]);
        let c = tenpak::codec::delta::DeltaCodec::new(mode, fp, inner).unwrap();
        let seed = f32_seed(&c, &w[..2048], 512, idx(tenpak::dtype::DType::F32));
        put("decode_delta", &format!("{name}.bin"), &seed);
    }
    let mut rt = vec![idx(tenpak::dtype::DType::BF16)];
    rt.extend(&b16);
    put("roundtrip_byteplane", "bf16.bin", &rt);
    put("roundtrip_zstd", "bf16.bin", &rt);
    let mut rt = vec![idx(tenpak::dtype::DType::F32)];
    rt.extend(w);
    put("roundtrip_byteplane", "f32.bin", &rt);
    // Input seeds: the head of the real GGUF (metadata + tensor table) and a tiny safetensors.
    let g = std::fs::read(smollm2()).unwrap();
    put(
        "input_gguf",
        "smollm2_head.gguf",
        &g[..g.len().min(2 << 20)],
    );
    let fp8 = dir.path().join("fp8.safetensors");
    let views = vec![
        (
            "w".to_string(),
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F8_E4M3,
                vec![3, 130],
                &[0x38u8; 390],
            )
            .unwrap(),
        ),
        (
            "w_scale_inv".to_string(),
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                vec![1, 2],
                &[0u8, 0, 0, 64, 0, 0, 128, 63],
            )
            .unwrap(),
        ),
    ];
    safetensors::serialize_to_file(views, None, &fp8).unwrap();
    put(
        "input_safetensors",
        "fp8.safetensors",
        &std::fs::read(&fp8).unwrap(),
    );
}

/// Seeds of the targets over what `eval` and the sharded reader read besides weights: an index,
/// the test models' config.json + tokenizer.json, a llama GGUF's metadata (byte-level BPE).
fn write_meta_seeds() {
    let root = crate::common::repo().join("fuzz/seeds");
    let put = |t: &str, name: &str, b: &[u8]| {
        std::fs::create_dir_all(root.join(t)).unwrap();
        std::fs::write(root.join(t).join(name), b).unwrap();
    };
    put(
        "input_sharded_index",
        "index.json",
        br#"{"metadata": {"total_size": 96}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}"#,
    );
    let dir = minilm().parent().unwrap().to_path_buf();
    let mut hf = std::fs::read(dir.join("config.json")).unwrap();
    hf.push(0);
    hf.extend(std::fs::read(dir.join("tokenizer.json")).unwrap());
    put("eval_hf_meta", "minilm.bin", &hf);
    put("eval_hf_meta", "bert_small.bin", &small_bert(&dir));
    put(
        "output_meta",
        "config.bin",
        b"hf.config.json\0{\"model_type\": \"bert\"}",
    );
    put(
        "output_meta",
        "binary.bin",
        b"hf.base64.tokenizer.model\0AAECAwQ=",
    );
    put(
        "output_meta",
        "part.bin",
        &[
            &b"tenpak.part\0"[..],
            br#"{"part": 2, "parts": 3, "tensors": 4, "places": {"a.weight": 0, "c": 3}}"#,
        ]
        .concat(),
    );
    put(
        "eval_hf_meta",
        "llama_config.bin",
        br#"{"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 16, "vocab_size": 4, "rms_norm_eps": 1e-5}"#,
    );
    let tmp = tempfile::tempdir().unwrap();
    let g = tmp.path().join("m.gguf");
    write_gguf(
        &g,
        &[
            ("general.architecture", Gv::Str("llama")),
            ("llama.embedding_length", Gv::U32(8)),
            ("llama.attention.head_count", Gv::U32(2)),
            ("llama.block_count", Gv::U32(1)),
            ("llama.feed_forward_length", Gv::U32(16)),
            ("llama.attention.layer_norm_rms_epsilon", Gv::F32(1e-5)),
            ("tokenizer.ggml.model", Gv::Str("gpt2")),
            (
                "tokenizer.ggml.tokens",
                Gv::Strs(&[
                    "H", "e", "l", "o", "He", "ll", "Hell", "Hello", "\u{120}", ",",
                ]),
            ),
            (
                "tokenizer.ggml.merges",
                Gv::Strs(&["H e", "l l", "He ll", "Hell o"]),
            ),
            ("tokenizer.ggml.bos_token_id", Gv::U32(0)),
        ],
        &[],
    );
    put(
        "eval_gguf_meta",
        "llama_bpe.gguf",
        &std::fs::read(&g).unwrap(),
    );
}

/// A decoder target's input for `codec` fed `n` f32 elements `vals`:
/// `[dtype index][n u16 LE][params len][params][payload]` (fuzz_api::decode_codec).
/// MiniLM's config and tokenizer cut to a 16-token vocabulary: under the fuzzer's 4 KiB input
/// size, unlike the 460 KB original, and still a model eval accepts and tokenizes.
pub fn small_bert(dir: &std::path::Path) -> Vec<u8> {
    use serde_json::{json, Value};
    let words = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "cat", "sat", "on", "mat", "##s",
        "##ing", ".", ",", "hello",
    ];
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    config["vocab_size"] = json!(words.len());
    config["hidden_size"] = json!(8);
    config["num_attention_heads"] = json!(2);
    config["num_hidden_layers"] = json!(1);
    config["intermediate_size"] = json!(16);
    config["max_position_embeddings"] = json!(32);
    let mut tok: Value =
        serde_json::from_slice(&std::fs::read(dir.join("tokenizer.json")).unwrap()).unwrap();
    let id = |w: &str| words.iter().position(|&x| x == w).unwrap();
    tok["model"]["vocab"] = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), json!(i)))
        .collect();
    tok["added_tokens"] = words[..5]
        .iter()
        .map(|w| {
            json!({"id": id(w), "special": true, "content": w, "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false})
        })
        .collect();
    for w in ["[CLS]", "[SEP]"] {
        tok["post_processor"]["special_tokens"][w]["ids"] = json!([id(w)]);
    }
    tok["padding"] = Value::Null;
    tok["truncation"] = Value::Null;
    let mut out = serde_json::to_vec(&config).unwrap();
    out.push(0);
    out.extend(serde_json::to_vec(&tok).unwrap());
    out
}

fn f32_seed(codec: &dyn tenpak::codec::TensorCodec, vals: &[u8], n: u16, dtype_idx: u8) -> Vec<u8> {
    let payload = codec.encode(tenpak::dtype::DType::F32, vals).unwrap();
    let params = codec.params();
    let mut seed = vec![dtype_idx];
    seed.extend(n.to_le_bytes());
    seed.push(params.len() as u8);
    seed.extend(&params);
    seed.extend(&payload);
    seed
}
