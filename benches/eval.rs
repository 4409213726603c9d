//! Evaluation speed: one 512-token forward pass of SmolLM2 (F32, its Q4_1 GGUF dequantized) and
//! its scoring (f64 log-sum-exp of the 512 x 49,152 logits), on all threads; one MiniLM
//! sentence embedding. Throughput in tokens.
//!
//! `cargo bench --bench eval` (RAYON_NUM_THREADS=2 to pin the thread count).

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::path::PathBuf;
use tenpak::Context;

fn models() -> PathBuf {
    common::minilm_path()
        .parent()
        .and_then(|m| m.parent())
        .expect("the models folder")
        .to_path_buf()
}

fn bench(c: &mut Criterion) {
    let m = models();
    let (_, llama, tok) =
        tenpak_eval::load_llama(&m.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"), None).unwrap();
    let o = tenpak_eval::ppl::PplOptions {
        windows: 1,
        ..Default::default()
    };
    let (_, _, w) =
        tenpak_eval::corpus_windows(&tok, &m.join("corpus/cfi-en.txt"), llama.cfg.bos, &o).unwrap();
    let mut g = c.benchmark_group("eval");
    g.sample_size(10);
    g.throughput(Throughput::Elements(512));
    let mut logits = Vec::new();
    g.bench_function("smollm2_forward_512", |b| {
        b.iter(|| llama.forward(&w[0], &mut logits, None).unwrap())
    });
    g.bench_function("smollm2_window_512_scored", |b| {
        b.iter(|| {
            tenpak_eval::ppl::evaluate(&llama, None, &w, &o, &mut |_, _| {}, &Context::default())
                .unwrap()
        })
    });
    drop(llama);
    let (_, bert) = tenpak_eval::embed::load_bert(&m.join("minilm"), None, 256).unwrap();
    let s = tenpak_eval::embed::corpus_sentences(&m.join("corpus/cfi-en.txt"), 64).unwrap();
    let toks: u64 = s
        .iter()
        .map(|t| bert.tokenize(t).unwrap().len() as u64)
        .sum();
    g.throughput(Throughput::Elements(toks));
    g.bench_function("minilm_embed_64_sentences", |b| {
        b.iter(|| tenpak_eval::embed::embed_all(&bert, &s, &|_| {}, &Context::default()).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
