//! Mixed-tile search cost against plain encoding (formats-spec/mixed.md §3): on MiniLM's largest
//! tensor (`embeddings.word_embeddings.weight`, [30522, 384]) and on a random 4096x4096 tensor,
//! the time of `mixed-tile-greedy` (error table: every tile encoded in every candidate format and
//! measured; then the search) and of `mixed-tile-optimal`, against encoding the tensor once in each
//! candidate format as `compress` does (metrics included). Candidates: bf16, bfp8, bfp4, bfp2.
//! One thread and all threads.
//!
//! `cargo bench --bench mixed`

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tenpak::config::{Algorithm, MixedSpec, Scope};
use tenpak::dtype::DType;
use tenpak::input::TensorInfo;
use tpk_format::Layout;

fn spec(algorithm: Algorithm) -> MixedSpec {
    MixedSpec {
        algorithm,
        metric: tenpak::assign::Metric::Pcc,
        threshold: 0.999,
        formats: ["bf16", "bfp8", "bfp4", "bfp2"].map(String::from).to_vec(),
        iters: 50,
        seed: 1,
        budget: None,
        scope: Scope::Tensor,
        alphas: None,
    }
}

fn info(name: &str, rows: u64, cols: u64) -> TensorInfo {
    TensorInfo {
        name: name.into(),
        dims: vec![rows, cols],
        dtype: DType::F32,
        source_dtype: "F32".into(),
        source_bytes: rows * cols * 4,
    }
}

fn tensors() -> Vec<(TensorInfo, Vec<u8>)> {
    let b = std::fs::read(common::minilm_path()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&b).unwrap();
    let emb = st.tensor("embeddings.word_embeddings.weight").unwrap();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    // Sums of uniforms: roughly normal weights with a few large values per row.
    let random: Vec<u8> = (0..4096 * 4096)
        .flat_map(|i| {
            let mut s = 0f32;
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s += (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            let v = if i % 997 == 0 { s * 20.0 } else { s * 0.05 };
            v.to_le_bytes()
        })
        .collect();
    vec![
        (
            info("word_embeddings [30522, 384]", 30522, 384),
            emb.data().to_vec(),
        ),
        (info("random [4096, 4096]", 4096, 4096), random),
    ]
}

fn bench(c: &mut Criterion) {
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let chunk = tenpak::compress::DEFAULT_CHUNK_ELEMS;
    for (info, data) in tensors() {
        let mut g = c.benchmark_group(info.name.clone());
        g.sample_size(10);
        g.throughput(Throughput::Bytes(data.len() as u64));
        let encode_all = || {
            let mut bytes = 0;
            for f in ["bf16:order=tile", "bfp8", "bfp4", "bfp2"] {
                let p = tenpak::codec::Pipeline::parse(f).unwrap();
                let e = tenpak::encode::encode_tensor(
                    &info,
                    &data,
                    &p,
                    Layout::Tiles32,
                    chunk,
                    &tenpak::Context::default(),
                    &mut |_, _, _| Ok(()),
                )
                .unwrap();
                bytes += e.encoded_bytes;
            }
            bytes
        };
        let search = |alg: Algorithm| {
            let s = spec(alg);
            let p = tenpak::mixed::plan_tensor(&info, &data, &s, chunk).unwrap();
            p.bytes
        };
        for (threads, pool) in [("1 thread", Some(&one)), ("all threads", None)] {
            let run = |f: &(dyn Fn() -> u64 + Sync)| match pool {
                Some(p) => p.install(f),
                None => f(),
            };
            g.bench_function(BenchmarkId::new("encode every format", threads), |b| {
                b.iter(|| run(&encode_all))
            });
            g.bench_function(BenchmarkId::new("greedy", threads), |b| {
                b.iter(|| run(&|| search(Algorithm::MixedGreedy)))
            });
            g.bench_function(BenchmarkId::new("optimal", threads), |b| {
                b.iter(|| run(&|| search(Algorithm::MixedOptimal)))
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
