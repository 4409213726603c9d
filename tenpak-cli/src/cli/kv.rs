//! `tenpak kv compress | decompress | analyze | sweep`: thin over `tenpak::kv`.

use super::json;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use tenpak::kv::dump::{DumpFilter, Stage};
use tenpak::kv::method::{Method, Policy};
use tenpak::{Context, Error};

/// The reference's shared dump filters.
#[derive(Args, Clone)]
pub(super) struct FilterArgs {
    /// Which dumps: prefill, decode or both.
    #[arg(long, default_value = "both", value_parser = ["prefill", "decode", "both"])]
    stage: String,
    /// Smallest seq_len kept (0: no bound).
    #[arg(long, default_value_t = 0)]
    min_seq_len: u64,
    /// Largest seq_len kept (0: no bound).
    #[arg(long, default_value_t = 0)]
    max_seq_len: u64,
}

impl FilterArgs {
    fn filter(&self) -> DumpFilter {
        DumpFilter {
            stage: match self.stage.as_str() {
                "prefill" => Some(Stage::Prefill),
                "decode" => Some(Stage::Decode),
                _ => None,
            },
            min_seq_len: self.min_seq_len,
            max_seq_len: self.max_seq_len,
        }
    }
}

/// The filters and the mode flags (compress and analyze).
#[derive(Args, Clone)]
pub(super) struct ModeArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Layers with layer_id < N are stored losslessly.
    #[arg(long, default_value_t = 2, value_name = "N")]
    lossless_first_n: u32,
    /// The lossless method: zstd, gear, gear-delta, gear-auto, byteplane, raw.
    #[arg(long, default_value = "gear-auto", value_name = "METHOD")]
    lossless: String,
    /// The method of the other layers: quant, kivi, blocknorm, bound, truncate, clip,
    /// clip-quant, fake-quant (with options, e.g. kivi:bits=4,group=64); none: every layer
    /// lossless.
    #[arg(long, value_name = "METHOD")]
    lossy: Option<String>,
    /// Code width of the lossy method, unless its spec sets bits= (alone it means --lossy quant).
    #[arg(long, value_name = "B")]
    bits: Option<u32>,
    /// zstd level of the lossless method, unless its spec sets level=.
    #[arg(long, default_value_t = 3, value_name = "L")]
    zstd_level: i32,
    /// In lossy layers, tokens at positions < N keep an exact cache (attention sinks).
    #[arg(long, default_value_t = 0, value_name = "N")]
    sink_tokens: u64,
    /// In lossy layers, the last N tokens of each run keep an exact cache.
    #[arg(long, default_value_t = 0, value_name = "N")]
    recent_tokens: u64,
    /// A policy file (JSON: lossless, lossless_first_n, lossy, layers {"5": METHOD, "6-9":
    /// {"k": METHOD, "v": METHOD}}, sink_tokens, recent_tokens); its fields override the flags.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
}

impl ModeArgs {
    pub(super) fn filter(&self) -> DumpFilter {
        self.filter.filter()
    }

    pub(super) fn policy(&self) -> Result<Policy, Error> {
        let level = self.zstd_level.to_string();
        let lossless = Method::parse(&self.lossless)?;
        let lossless = match self.lossless.split(':').next() {
            Some("zstd" | "gear" | "gear-delta" | "gear-auto") => {
                lossless.with_default("level", &level)?
            }
            _ => lossless,
        };
        let lossy = match (&self.lossy, self.bits) {
            (None, None) => None,
            (None, Some(b)) => Some(Method::parse(&format!("quant:bits={b}"))?),
            (Some(m), None) => Some(Method::parse(m)?),
            (Some(m), Some(b)) => Some(Method::parse(m)?.with_default("bits", &b.to_string())?),
        };
        let mut p = Policy::new(&lossless.spec, self.lossless_first_n, None)?;
        p.lossy = lossy;
        p.sink_tokens = self.sink_tokens;
        p.recent_tokens = self.recent_tokens;
        if let Some(f) = &self.policy {
            let text = std::fs::read_to_string(f)
                .map_err(|e| Error::io("read the policy", e).with_file(f))?;
            p = Policy::from_json(&text, p).map_err(|e| e.with_file(f))?;
        }
        Ok(p)
    }
}

#[derive(Args)]
pub(super) struct CompressArgs {
    /// Dump root: <root>/<run>/layer_<i>/{k,v,meta}_t<s>_<e>.*
    root: PathBuf,
    /// The .tpk to write.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    #[command(flatten)]
    mode: ModeArgs,
    /// Tokens per chunk (a chunk decodes alone).
    #[arg(long, default_value_t = 256)]
    chunk_tokens: u64,
    /// Replace the output if it exists.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(super) struct AnalyzeArgs {
    /// Dump root: <root>/<run>/layer_<i>/{k,v,meta}_t<s>_<e>.*
    root: PathBuf,
    /// Folder for kv.tpk, mixed_layer_metrics.csv, lossy_error_metrics.csv,
    /// mixed_summary.md, summary.json (and blocknorm_metrics.csv with --lossy blocknorm).
    #[arg(short, long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    mode: ModeArgs,
    /// Tokens per chunk; 0 (default): each tensor in one chunk, as the reference compresses it.
    #[arg(long, default_value_t = 0)]
    chunk_tokens: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(super) struct DecompressArgs {
    /// A .tpk written by `tenpak kv compress`.
    file: PathBuf,
    /// The dump folder to write.
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    /// Replace the folder if it exists.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn mbs(bytes: u64, s: f64) -> f64 {
    if s > 0.0 {
        bytes as f64 / s / 1e6
    } else {
        0.0
    }
}

pub(super) fn compress(
    a: &CompressArgs,
    cx: &Context<'_>,
    out: &mut Vec<u8>,
) -> Result<i32, Error> {
    let opts = tenpak::kv::pack::KvCompressOptions {
        filter: a.mode.filter(),
        policy: a.mode.policy()?,
        chunk_tokens: a.chunk_tokens,
        force: a.force,
    };
    let r = tenpak::kv::pack::compress(&a.root, &a.output, &opts, cx)?;
    if a.json {
        json(out, &r);
        return Ok(0);
    }
    let mut groups: std::collections::BTreeMap<(bool, &str), (u64, u64, u64)> = Default::default();
    for t in &r.tensors {
        let g = groups.entry((t.lossless, t.method.as_str())).or_default();
        g.0 += t.raw_bytes;
        g.1 += t.payload_bytes;
        g.2 += 1;
    }
    let _ = writeln!(
        out,
        "{} dumps ({} tensors) -> {}",
        r.dumps,
        r.tensors.len(),
        r.output.display()
    );
    for ((lossless, m), (raw, comp, n)) in &groups {
        let _ = writeln!(
            out,
            "  {:<9} {:<28} {:>5} tensors {:>12} -> {:>12} bytes  ratio {:.3}",
            if *lossless { "lossless" } else { "lossy" },
            m,
            n,
            raw,
            comp,
            *raw as f64 / (*comp).max(1) as f64
        );
    }
    let _ = writeln!(
        out,
        "payload ratio {:.3}, file ratio {:.3} ({} -> {} bytes), {:.3} bits per value, {:.0} MB/s",
        r.payload_ratio,
        r.file_ratio,
        r.raw_bytes,
        r.file_bytes,
        r.bits_per_value,
        mbs(r.raw_bytes, r.seconds)
    );
    Ok(0)
}

pub(super) fn decompress(
    a: &DecompressArgs,
    cx: &Context<'_>,
    out: &mut Vec<u8>,
) -> Result<i32, Error> {
    let r = tenpak::kv::pack::decompress(&a.file, &a.output, a.force, cx)?;
    if a.json {
        json(out, &r);
    } else {
        let _ = writeln!(
            out,
            "{}: {} meta files, {} .bin files, {} bytes ({:.0} MB/s)",
            r.output.display(),
            r.meta_files,
            r.bin_files,
            r.bytes,
            mbs(r.bytes, r.seconds)
        );
    }
    Ok(0)
}

pub(super) fn analyze(a: &AnalyzeArgs, cx: &Context<'_>, out: &mut Vec<u8>) -> Result<i32, Error> {
    let opts = tenpak::kv::pack::KvCompressOptions {
        filter: a.mode.filter(),
        policy: a.mode.policy()?,
        chunk_tokens: a.chunk_tokens,
        force: true,
    };
    let r = tenpak::kv::analyze::analyze(&a.root, &a.out, &opts, cx)?;
    if a.json {
        json(out, &r);
        return Ok(0);
    }
    let x = &r.ratios;
    let _ = writeln!(
        out,
        "{} dumps; ratio overall {:.4} (lossless layers {:.4}, lossy K {:.4} V {:.4} KV {:.4}); file {:.4}, {:.3} bits per value",
        r.dumps, x.overall, x.lossless, x.k, x.v, x.kv, r.file_ratio, r.bits_per_value
    );
    for (n, e) in [("K", &r.k), ("V", &r.v)] {
        if e.tensors > 0 {
            let _ = writeln!(
                out,
                "  {n}: MAE {:.6} RMSE {:.6} cosine {:.7} max_abs(avg) {:.5} | global max_abs {:.5}, min cosine {:.7}, vector cosine mean {:.7} p1 {:.6} min {:.6}",
                e.mae, e.rmse, e.cosine, e.max_abs_avg, e.global_max_abs, e.min_cosine,
                e.vector_cosine.mean, e.vector_cosine.p1, e.vector_cosine.min
            );
        }
    }
    let _ = writeln!(
        out,
        "encode {:.0} MB/s, decode {:.0} MB/s; wrote {}",
        r.encode_mb_s,
        r.decode_mb_s,
        r.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(0)
}

fn list<T: std::str::FromStr>(s: &str, what: &str) -> Result<Vec<T>, Error> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            x.trim()
                .parse()
                .map_err(|_| Error::config(format!("--{what}: '{x}' is not a number")))
        })
        .collect()
}

#[derive(Args)]
pub(super) struct SweepArgs {
    /// Dump root.
    root: PathBuf,
    /// Folder for kv_sweep.csv, blocknorm_sweep.csv, blocknorm_best.md, kv_best.md,
    /// pareto.csv, pareto.png.
    #[arg(short, long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    filter: FilterArgs,
    /// Layers with layer_id < N are lossless and left out of the sweep.
    #[arg(long, default_value_t = 2, value_name = "N")]
    lossless_first_n: u32,
    /// Lossless method storing block-norm codes and truncated values.
    #[arg(long, default_value = "gear-delta", value_name = "METHOD")]
    store: String,
    /// Block sizes (block-norm).
    #[arg(long, default_value = "64,128,256")]
    block_sizes: String,
    /// Top-k shares (the reference's block-norm).
    #[arg(long, default_value = "0.02,0.05,0.1")]
    topk_ratios: String,
    /// Code widths (block-norm and quant; quant also runs 4 and 6).
    #[arg(long, default_value = "8,10")]
    bits_list: String,
    /// Mantissa bits kept (truncate).
    #[arg(long, default_value = "4,6,8")]
    truncate_keep: String,
    /// KIVI code widths.
    #[arg(long, default_value = "2,3,4,8")]
    kivi_bits: String,
    /// KIVI group sizes.
    #[arg(long, default_value = "32,64,128")]
    kivi_groups: String,
    /// Constraint (the reference's): smallest K cosine.
    #[arg(long, default_value_t = 0.9999)]
    min_k_cosine: f64,
    /// Constraint: smallest V cosine.
    #[arg(long, default_value_t = 0.9999)]
    min_v_cosine: f64,
    /// Constraint: largest K MAE.
    #[arg(long, default_value_t = 0.01)]
    max_k_mae: f64,
    /// Constraint: largest V MAE.
    #[arg(long, default_value_t = 0.002)]
    max_v_mae: f64,
    /// Rows of each best-of table.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Tokens per chunk; 0: whole tensors, as the reference.
    #[arg(long, default_value_t = 0)]
    chunk_tokens: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn sweep(a: &SweepArgs, cx: &Context<'_>, out: &mut Vec<u8>) -> Result<i32, Error> {
    if !Method::parse(&a.store)?.lossless() {
        return Err(Error::config(format!(
            "--store {}: not a lossless method",
            a.store
        )));
    }
    let opts = tenpak::kv::sweep::SweepOptions {
        filter: a.filter.filter(),
        lossless_first_n: a.lossless_first_n,
        store: a.store.clone(),
        block_sizes: list(&a.block_sizes, "block-sizes")?,
        topk_ratios: list(&a.topk_ratios, "topk-ratios")?,
        bits: list(&a.bits_list, "bits-list")?,
        truncate_keep: list(&a.truncate_keep, "truncate-keep")?,
        kivi_bits: list(&a.kivi_bits, "kivi-bits")?,
        kivi_groups: list(&a.kivi_groups, "kivi-groups")?,
        constraints: tenpak::kv::sweep::Constraints {
            min_k_cosine: a.min_k_cosine,
            min_v_cosine: a.min_v_cosine,
            max_k_mae: a.max_k_mae,
            max_v_mae: a.max_v_mae,
        },
        chunk_tokens: a.chunk_tokens,
        top: a.top,
    };
    let r = tenpak::kv::sweep::sweep(&a.root, &a.out, &opts, cx)?;
    if a.json {
        json(out, &r);
        return Ok(0);
    }
    let (n, pass, pass_l) = tenpak::kv::sweep::counts(&r);
    let _ = writeln!(
        out,
        "{n} combos over {} dumps of lossy layers; {pass} pass the reference's constraints, {pass_l} in every layer",
        r.rows
    );
    for p in r.points.iter().filter(|p| p.passes_precision).take(a.top) {
        let _ = writeln!(
            out,
            "  {:<26} KV {:.4} (K {:.4} V {:.4}) {:.3} bits/value  cos K {:.7} V {:.7}  MAE K {:.6} V {:.6}{}",
            p.combo, p.weighted_kv_ratio, p.weighted_k_ratio, p.weighted_v_ratio, p.bits_per_value,
            p.k_cosine, p.v_cosine, p.k_mae, p.v_mae,
            if p.passes_per_layer { "" } else { "  (fails in some layer)" }
        );
    }
    let _ = writeln!(
        out,
        "wrote {}",
        r.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(0)
}
