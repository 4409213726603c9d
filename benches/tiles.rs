//! Encode and decode throughput of the tile codecs (bfp8, bfp4, bfp2, mxfp4, nvfp4, and bf16 in
//! tile order for reference) on all of MiniLM's f32 weights cut into 128-tile chunks (tenpak's
//! default chunk of 128 Ki elements), on one thread and on all threads (rayon over chunks).
//! Throughput is in f32 source bytes.
//!
//! `cargo bench --bench tiles` (add `-- bfp4` to run one codec).

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;
use tenpak::codec::Pipeline;
use tenpak::compress::DEFAULT_CHUNK_ELEMS;
use tenpak::dtype::DType;

fn bench(c: &mut Criterion) {
    let (f32b, _) = common::minilm_f32_and_bf16();
    // Whole tiles only.
    let f32b = &f32b[..f32b.len() / 4096 * 4096];
    let amax = f32b
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()).abs())
        .fold(0f32, f32::max);
    let chunks: Vec<&[u8]> = f32b.chunks(DEFAULT_CHUNK_ELEMS as usize * 4).collect();
    for spec in ["bfp8", "bfp4", "bfp2", "mxfp4", "nvfp4", "bf16:order=tile"] {
        let p = Pipeline::parse(spec).unwrap();
        let p = p.bind(&tenpak::codec::TensorFacts {
            dims: &[],
            amax: Some(amax),
            values: None,
        });
        let enc: Vec<Vec<u8>> = chunks
            .iter()
            .map(|c| p.encode(DType::F32, c).unwrap())
            .collect();
        let out_size = p.tensor_codec().decoded_dtype(DType::F32).size();
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
        g.bench_function(BenchmarkId::new("encode", "all threads"), |b| {
            b.iter(|| {
                chunks
                    .par_iter()
                    .map(|c| p.encode(DType::F32, c).unwrap().len())
                    .sum::<usize>()
            })
        });
        let mut out = vec![0u8; f32b.len() / 4 * out_size];
        g.bench_function(BenchmarkId::new("decode", "1 thread"), |b| {
            b.iter(|| {
                for ((e, c), o) in enc
                    .iter()
                    .zip(&chunks)
                    .zip(out.chunks_mut(DEFAULT_CHUNK_ELEMS as usize * out_size))
                {
                    p.decode_into(e, DType::F32, c.len() / 4, o).unwrap();
                }
            })
        });
        g.bench_function(BenchmarkId::new("decode", "all threads"), |b| {
            b.iter(|| {
                enc.par_iter()
                    .zip(&chunks)
                    .zip(out.par_chunks_mut(DEFAULT_CHUNK_ELEMS as usize * out_size))
                    .for_each(|((e, c), o)| p.decode_into(e, DType::F32, c.len() / 4, o).unwrap());
            })
        });
        g.finish();
    }
}

// No plots: tenpak's plotters build draws text only with its own embedded font, which criterion's
// report plots do not register.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
