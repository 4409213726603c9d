//! KV-cache codecs, one thread: encode and decode throughput of the lossless byte-split paths
//! (gear, gear-delta, gear-auto, byteplane) beside zstd-3 on the whole tensors, and of the kvq
//! quantizers, on real fp16 keys and values. Throughput is in dump bytes.
//!
//! The data: `TENPAK_KV_DUMPS=DIR` (a `tenpak kv capture --dtype fp16` folder; its prefill dumps
//! of layers >= 2), else the golden fixture's synthetic dumps (tests/fixtures/kv-golden).
//! `cargo bench --bench kv` (add `-- gear` to run one method).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tenpak::codec::TensorFacts;
use tenpak::kv::dump::{scan, DumpFilter, Stage};
use tenpak::kv::method::{Method, Which};

fn bench(c: &mut Criterion) {
    let root = std::env::var_os("TENPAK_KV_DUMPS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kv-golden/dumps")
        });
    let filter = DumpFilter {
        stage: Some(Stage::Prefill),
        ..DumpFilter::default()
    };
    let dumps: Vec<_> = scan(&root, &filter)
        .unwrap()
        .into_iter()
        .filter(|d| d.meta.layer_id >= 2)
        .take(256)
        .collect();
    // (dims, K or V, bytes) per tensor.
    let tensors: Vec<([u64; 3], Which, Vec<u8>)> = dumps
        .iter()
        .flat_map(|d| {
            let m = &d.meta;
            let dims = [m.seq_len, m.kv_heads, m.head_dim];
            [
                (dims, Which::K, d.read_k().unwrap()),
                (dims, Which::V, d.read_v().unwrap()),
            ]
        })
        .collect();
    let total: usize = tensors.iter().map(|t| t.2.len()).sum();
    let dtype = dumps[0].meta.dtype.dtype();
    for spec in [
        "zstd",
        "gear",
        "gear-delta",
        "gear-auto",
        "byteplane",
        "quant:bits=8",
        "kivi:bits=4,group=64",
    ] {
        let m = Method::parse(spec).unwrap();
        let jobs: Vec<_> = tensors
            .iter()
            .map(|(dims, w, b)| {
                let amax = {
                    let mut x = Vec::new();
                    tenpak::dtype::to_f32(dtype, b, &mut x);
                    x.iter()
                        .filter(|v| v.is_finite())
                        .fold(0f32, |a, v| a.max(v.abs()))
                };
                let p = m.for_kind(*w).pipeline.bind(&TensorFacts {
                    dims,
                    amax: Some(amax),
                    values: None,
                });
                let enc = p.encode(dtype, b).unwrap();
                (p, b, enc)
            })
            .collect();
        let mut g = c.benchmark_group(format!("kv/{spec}"));
        g.sample_size(10);
        g.throughput(Throughput::Bytes(total as u64));
        g.bench_function(BenchmarkId::new("encode", dtype.name()), |bch| {
            bch.iter(|| {
                jobs.iter()
                    .map(|(p, b, _)| p.encode(dtype, b).unwrap().len())
                    .sum::<usize>()
            })
        });
        let mut out = vec![0u8; tensors.iter().map(|t| t.2.len()).max().unwrap_or(0)];
        g.bench_function(BenchmarkId::new("decode", dtype.name()), |bch| {
            bch.iter(|| {
                for (p, b, e) in &jobs {
                    p.decode_into(e, dtype, b.len() / dtype.size(), &mut out[..b.len()])
                        .unwrap();
                }
            })
        });
        g.finish();
        let enc: usize = jobs.iter().map(|j| j.2.len()).sum();
        eprintln!(
            "kv/{spec}: ratio {:.4} on {} tensors",
            total as f64 / enc as f64,
            jobs.len()
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
