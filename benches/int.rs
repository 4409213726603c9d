//! Encode and decode throughput of the integer codecs (formats-spec/int.md) on all of MiniLM's
//! f32 weights in 128 Ki-element chunks, one thread. Throughput is in f32 source bytes.
//!
//! `cargo bench --bench int` (add `-- int4_g32` to run one codec).

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tenpak::codec::Pipeline;
use tenpak::compress::DEFAULT_CHUNK_ELEMS;
use tenpak::dtype::DType;

fn bench(c: &mut Criterion) {
    let (f32b, _) = common::minilm_f32_and_bf16();
    let chunks: Vec<&[u8]> = f32b.chunks(DEFAULT_CHUNK_ELEMS as usize * 4).collect();
    for spec in [
        "int8",
        "int4_g32",
        "int4_g32_asym",
        "int3_g32",
        "int2_g16_asym",
        "int4_opt",
        "int4_residual",
    ] {
        let p = Pipeline::parse(spec).unwrap();
        let enc: Vec<Vec<u8>> = chunks
            .iter()
            .map(|c| p.encode(DType::F32, c).unwrap())
            .collect();
        let mut g = c.benchmark_group(spec.to_string());
        g.sample_size(10);
        g.throughput(Throughput::Bytes(f32b.len() as u64));
        g.bench_function(BenchmarkId::new("encode", "1 thread"), |b| {
            b.iter(|| {
                chunks
                    .iter()
                    .map(|c| p.encode(DType::F32, c).unwrap().len())
                    .sum::<usize>()
            })
        });
        let mut out = vec![0u8; f32b.len()];
        g.bench_function(BenchmarkId::new("decode", "1 thread"), |b| {
            b.iter(|| {
                for ((e, c), o) in enc
                    .iter()
                    .zip(&chunks)
                    .zip(out.chunks_mut(DEFAULT_CHUNK_ELEMS as usize * 4))
                {
                    p.decode_into(e, DType::F32, c.len() / 4, o).unwrap();
                }
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
