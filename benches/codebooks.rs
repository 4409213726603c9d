//! Issue 15's codecs, one thread, on SmolLM2's blocks 0-3 (28 matrices, 14 M weights, the Q4_1
//! GGUF dequantized by tenpak's reader): `learn+encode` is the bind step (SVD, k-means, fitted
//! levels) plus every chunk's encode, tensor by tensor, in f32 source bytes; `decode` writes
//! f32 into a preallocated buffer, in f32 output bytes (the ≥ 1 GB/s per core target).
//!
//! `cargo bench --bench codebooks` (add `-- tenpakx` to run one codec).

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tenpak::codec::Pipeline;
use tenpak::compress::DEFAULT_CHUNK_ELEMS;
use tenpak::dtype::DType;

/// SmolLM2's block 0-3 matrices: (shape, f32 values).
fn smollm2_matrices() -> Vec<(Vec<u64>, Vec<f32>)> {
    let p = common::minilm_path()
        .parent()
        .and_then(|m| m.parent())
        .expect("the models folder")
        .join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let src = tenpak::input::open(&p).unwrap();
    let mut out = Vec::new();
    for (i, t) in src.tensors().iter().enumerate() {
        let first = ["blk.0.", "blk.1.", "blk.2.", "blk.3."];
        if t.dims.len() == 2 && first.iter().any(|b| t.name.starts_with(b)) {
            let d = src.data(i).unwrap();
            let mut f = Vec::new();
            tenpak::dtype::to_f32(t.dtype, &d, &mut f);
            out.push((t.dims.clone(), f));
        }
    }
    out
}

/// A matrix's bound codec and its encoded chunks (start, length, payload).
type Prepared = (Pipeline, Vec<(usize, usize, Vec<u8>)>);

/// The codec bound to one matrix and its chunks, as `compress` cuts them.
fn bind(spec: &str, dims: &[u64], v: &[f32]) -> (Pipeline, Vec<(usize, usize)>) {
    let p = Pipeline::parse(spec).unwrap().bind_values(dims, v);
    let m = p.tensor_codec().chunk_multiple() as usize;
    let per = (DEFAULT_CHUNK_ELEMS as usize).div_ceil(m) * m;
    let chunks = (0..v.len())
        .step_by(per)
        .map(|s| (s, per.min(v.len() - s)))
        .collect();
    (p, chunks)
}

fn bench(c: &mut Criterion) {
    let mats = smollm2_matrices();
    let bytes: Vec<Vec<u8>> = mats
        .iter()
        .map(|(_, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let total: usize = mats.iter().map(|(_, v)| v.len() * 4).sum();
    for spec in [
        "tenpakx",
        "pocketllm",
        "vq:d=4,k=256",
        "lowrank:rank=32",
        "grid:levels=fit,n=64,group=32",
        "rot+grid:group=32",
        "int6_g32_asym",
    ] {
        let mut g = c.benchmark_group(format!("smollm2/{spec}"));
        g.sample_size(10);
        g.throughput(Throughput::Bytes(total as u64));
        g.bench_function(BenchmarkId::new("learn+encode", "blocks0-3"), |b| {
            b.iter(|| {
                let mut n = 0;
                for ((dims, v), raw) in mats.iter().zip(&bytes) {
                    let (p, chunks) = bind(spec, dims, v);
                    for (s, len) in chunks {
                        n += p
                            .encode(DType::F32, &raw[4 * s..4 * (s + len)])
                            .unwrap()
                            .len();
                    }
                }
                n
            })
        });
        let prepared: Vec<Prepared> = mats
            .iter()
            .zip(&bytes)
            .map(|((dims, v), raw)| {
                let (p, chunks) = bind(spec, dims, v);
                let enc = chunks
                    .into_iter()
                    .map(|(s, len)| {
                        let e = p.encode(DType::F32, &raw[4 * s..4 * (s + len)]).unwrap();
                        (s, len, e)
                    })
                    .collect();
                (p, enc)
            })
            .collect();
        let mut out = vec![0u8; total];
        g.bench_function(BenchmarkId::new("decode", "blocks0-3"), |b| {
            b.iter(|| {
                let mut at = 0;
                for (p, enc) in &prepared {
                    for (_, len, e) in enc {
                        p.decode_into(e, DType::F32, *len, &mut out[at..at + 4 * len])
                            .unwrap();
                        at += 4 * len;
                    }
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
