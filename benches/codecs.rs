//! Encode and decode throughput of each codec, one thread, on all of MiniLM's weights cut into
//! tenpak's default 128 Ki-element chunks, as f32 and as bf16. Throughput is in source bytes.
//!
//! `cargo bench --bench codecs` (add `-- byteplane` to run one codec).

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tenpak::codec::Pipeline;
use tenpak::compress::DEFAULT_CHUNK_ELEMS;
use tenpak::dtype::DType;

fn bench(c: &mut Criterion) {
    let (f32b, b16) = common::minilm_f32_and_bf16();
    for (dtype, data) in [(DType::F32, &f32b), (DType::BF16, &b16)] {
        let chunk = DEFAULT_CHUNK_ELEMS as usize * dtype.size();
        let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
        for spec in ["raw", "bf16", "f16", "zstd:level=3", "byteplane"] {
            let p = Pipeline::parse(spec).unwrap();
            let encoded: Vec<Vec<u8>> =
                chunks.iter().map(|c| p.encode(dtype, c).unwrap()).collect();
            let mut g = c.benchmark_group(format!("{}/{}", spec, dtype.name()));
            g.sample_size(10);
            g.throughput(Throughput::Bytes(data.len() as u64));
            g.bench_function(BenchmarkId::new("encode", "minilm"), |b| {
                b.iter(|| {
                    chunks
                        .iter()
                        .map(|c| p.encode(dtype, c).unwrap().len())
                        .sum::<usize>()
                })
            });
            // Decoding into a preallocated buffer, as `decompress` does (chunks land in their tensor).
            let mut out =
                vec![0u8; data.len() * p.tensor_codec().decoded_dtype(dtype).size() / dtype.size()];
            g.bench_function(BenchmarkId::new("decode", "minilm"), |b| {
                b.iter(|| {
                    let esize = p.tensor_codec().decoded_dtype(dtype).size();
                    let mut rest = &mut out[..];
                    for (e, c) in encoded.iter().zip(&chunks) {
                        let n = c.len() / dtype.size();
                        let (dst, tail) = rest.split_at_mut(n * esize);
                        p.decode_into(e, dtype, n, dst).unwrap();
                        rest = tail;
                    }
                })
            });
            g.finish();
        }
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
