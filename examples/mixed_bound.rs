//! How close the mixed-tile searches come to the best possible assignment: for every float
//! matrix of a model, at per-tensor PCC >= 0.99, 0.999 and 0.9999 with candidates bf16, bfp8,
//! bfp4, bfp2, fp0, the payload bytes of `mixed-tile-optimal` and `mixed-tile-greedy` (seed 1)
//! against `assign::lp_bound_bytes` (a lower bound on any passing assignment, per tensor,
//! summed), and against all-bfp8.
//!
//! `cargo run --release --example mixed_bound -- MODEL`

use tenpak::assign::{self, Goal, Metric};
use tenpak::config::{Algorithm, MixedSpec, Scope};

fn main() -> tenpak::Result<()> {
    let path = std::env::args()
        .nth(1)
        .expect("usage: mixed_bound MODEL (safetensors, folder or GGUF)");
    let src = tenpak::input::open(std::path::Path::new(&path))?;
    let spec = MixedSpec {
        algorithm: Algorithm::MixedOptimal,
        metric: Metric::Pcc,
        threshold: 0.999,
        formats: ["bf16", "bfp8", "bfp4", "bfp2", "fp0"]
            .map(String::from)
            .to_vec(),
        iters: 50,
        seed: 1,
        budget: None,
        scope: Scope::Tensor,
        alphas: None,
    };
    let mut tables = Vec::new();
    for (i, info) in src.tensors().iter().enumerate() {
        if tenpak::mixed::eligible(info, false) {
            let data = src.data(i)?;
            tables.push(tenpak::mixed::table(
                info,
                &data,
                &spec,
                tenpak::compress::DEFAULT_CHUNK_ELEMS,
            )?);
        }
    }
    let n: u64 = tables.iter().map(|t| t.n).sum();
    let bfp8: u64 = tables.iter().map(|t| t.uniform_bytes(1)).sum();
    println!(
        "{}: {} float matrices, {n} weights, all-bfp8 {bfp8} B",
        path,
        tables.len()
    );
    println!(
        "{:>7} {:>12} {:>12} {:>12} {:>14} {:>14} {:>10}",
        "PCC >=", "LP bound", "optimal", "greedy", "optimal/bound", "greedy/bound", "opt/bfp8"
    );
    for t in [0.99, 0.999, 0.9999] {
        let (mut bound, mut opt, mut gr) = (0f64, 0u64, 0u64);
        for tb in &tables {
            bound += assign::lp_bound_bytes(tb, t);
            let o = assign::optimal(&[tb], Goal::Threshold(Metric::Pcc, t))?.remove(0);
            opt += tb.bytes(&o);
            gr += tb.bytes(&assign::greedy(tb, Metric::Pcc, t, 1));
        }
        println!(
            "{t:>7} {:>12.0} {opt:>12} {gr:>12} {:>13.2}% {:>13.2}% {:>9.1}%",
            bound,
            100.0 * (opt as f64 / bound - 1.0),
            100.0 * (gr as f64 / bound - 1.0),
            100.0 * (opt as f64 / bfp8 as f64 - 1.0)
        );
    }
    Ok(())
}
