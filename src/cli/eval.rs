//! `tenpak eval ...`: model-quality evaluation.

use super::{json, CANCELLED};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use tenpak::eval::ppl::PplOptions;
use tenpak::Error;

#[derive(Subcommand)]
pub(super) enum EvalCommand {
    /// Perplexity of a causal LM (llama) on the evaluation corpus; with --reference also the
    /// paired ΔPPL and its standard error, KL divergence and top-1 agreement.
    Ppl(PplArgs),
}

#[derive(Args)]
pub(super) struct PplArgs {
    /// The model: a GGUF file, a Hugging Face folder, or a .tpk made from either.
    model: PathBuf,
    /// The model to compare against (same tokenizer).
    #[arg(long, value_name = "REF")]
    reference: Option<PathBuf>,
    /// Base model of a delta .tpk.
    #[arg(long, value_name = "BASE")]
    base: Option<PathBuf>,
    /// Corpus text (built by scripts/fetch-corpus.sh).
    #[arg(long, value_name = "FILE", default_value = tenpak::eval::DEFAULT_CORPUS)]
    corpus: PathBuf,
    /// Window length, BOS included.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Windows, from the start of the corpus.
    #[arg(long, default_value_t = 64)]
    windows: usize,
    /// Windows (from the first) that KLD and top-1 agreement cover.
    #[arg(long, default_value_t = 32)]
    kld_windows: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also write ppl.json and per_window.csv into this folder.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

fn window_bar(quiet: bool, windows: usize) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new(windows as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} windows, eta {eta} {wide_msg}").unwrap(),
    );
    Some(pb)
}

pub(super) fn run(cmd: &EvalCommand, quiet: bool, out: &mut Vec<u8>) -> Result<i32, Error> {
    match cmd {
        EvalCommand::Ppl(a) => {
            let opts = PplOptions {
                ctx: a.ctx,
                windows: a.windows,
                kld_windows: a.kld_windows.min(a.windows),
            };
            let req = tenpak::eval::PplRequest {
                model: a.model.clone(),
                reference: a.reference.clone(),
                base: a.base.clone(),
                corpus: a.corpus.clone(),
                opts,
            };
            let bar = window_bar(quiet, a.windows);
            let start = std::time::Instant::now();
            let mut on_window = |done: usize, tokens: usize| {
                if CANCELLED.load(Ordering::Relaxed) {
                    eprintln!("tenpak: interrupted");
                    std::process::exit(130);
                }
                if let Some(b) = &bar {
                    b.set_position(done as u64);
                    b.set_message(format!(
                        "{:.0} tokens/s",
                        tokens as f64 / start.elapsed().as_secs_f64().max(1e-9)
                    ));
                }
            };
            let r = tenpak::eval::eval_ppl(&req, &mut on_window)?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            if let Some(dir) = &a.out {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io("create the output folder", e).with_file(dir))?;
                let js = serde_json::to_string_pretty(&r).expect("json") + "\n";
                tenpak::atomic::write(&dir.join("ppl.json"), js.as_bytes())?;
                let mut csv = String::from(
                    "window,tokens,mean_nll,tokens_second_half,mean_nll_second_half\n",
                );
                for (i, w) in r.report.per_window.iter().enumerate() {
                    csv.push_str(&format!(
                        "{i},{},{:.9},{},{:.9}\n",
                        w.n,
                        w.sum / w.n as f64,
                        w.n_second,
                        w.sum_second / w.n_second as f64
                    ));
                }
                tenpak::atomic::write(&dir.join("per_window.csv"), csv.as_bytes())?;
            }
            if a.json {
                json(out, &r);
            } else {
                ppl_table(out, &r);
            }
            Ok(0)
        }
    }
}

fn ppl_table(out: &mut Vec<u8>, r: &tenpak::eval::PplResult) {
    let p = &r.report;
    let _ = writeln!(out, "model:      {}", r.model);
    if let Some(rf) = &r.reference {
        let _ = writeln!(out, "reference:  {rf}");
    }
    let _ = writeln!(
        out,
        "corpus:     {} ({} tokens; {} windows x {} = {} scored, slice sha256 {}...)",
        r.corpus,
        r.corpus_tokens,
        p.windows,
        p.ctx,
        p.perplexity.tokens,
        &r.slice_sha256[..16]
    );
    let _ = writeln!(
        out,
        "PPL:        {:.4} (2nd half {:.4})",
        p.perplexity.ppl, p.perplexity.ppl_second_half
    );
    if let Some(c) = &p.comparison {
        let _ = writeln!(
            out,
            "reference:  PPL {:.4} (2nd half {:.4})",
            c.reference_perplexity.ppl, c.reference_perplexity.ppl_second_half
        );
        let _ = writeln!(
            out,
            "ΔPPL:       {:+.3}% ± {:.3}% (paired SE over {} windows)",
            c.delta_ppl_pct, c.delta_ppl_se_pct, p.windows
        );
        let _ = writeln!(
            out,
            "KLD:        {:.5} over {} tokens; top-1 agreement {:.2}%",
            c.kld, c.kld_tokens, c.top1_agree_pct
        );
    }
    let _ = writeln!(
        out,
        "speed:      {:.0} tokens/s ({:.1} s; load {:.1} s)",
        p.tokens_per_s, p.seconds, r.load_seconds
    );
}
