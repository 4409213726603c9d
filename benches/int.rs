//! Encode and decode throughput of the integer codecs (formats-spec/int.md), one thread, in f32
//! source bytes, 128 Ki-element chunks: on all of MiniLM's f32 weights, and on SmolLM2's first
//! four blocks (its Q4_1 GGUF dequantized by tenpak's reader, 14 M weights).
//!
//! `cargo bench --bench int` (add `-- int4_g32` to run one codec).

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tenpak::codec::Pipeline;
use tenpak::compress::DEFAULT_CHUNK_ELEMS;
use tenpak::dtype::DType;

/// SmolLM2's blocks 0-3, as f32 bytes.
fn smollm2_f32() -> Vec<u8> {
    let p = common::minilm_path()
        .parent()
        .and_then(|m| m.parent())
        .expect("the models folder")
        .join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let src = tenpak::input::open(&p).unwrap();
    let mut out = Vec::new();
    for (i, t) in src.tensors().iter().enumerate() {
        if ["blk.0.", "blk.1.", "blk.2.", "blk.3."]
            .iter()
            .any(|b| t.name.starts_with(b))
        {
            let d = src.data(i).unwrap();
            let mut f = Vec::new();
            tenpak::dtype::to_f32(t.dtype, &d, &mut f);
            out.extend(f.iter().flat_map(|v| v.to_le_bytes()));
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let (minilm, _) = common::minilm_f32_and_bf16();
    for (model, f32b) in [("minilm", minilm), ("smollm2", smollm2_f32())] {
        run(c, model, &f32b);
    }
}

fn run(c: &mut Criterion, model: &str, f32b: &[u8]) {
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
        let mut g = c.benchmark_group(format!("{model}/{spec}"));
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
