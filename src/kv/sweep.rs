//! `tenpak kv sweep`: the reference's block-norm grid (`sweep_blocknorm.py`, kv.md §3.8)
//! extended to quant, truncate and KIVI with real codes, measured in memory on the lossy layers
//! of a dump folder; the reference's constraints on the weighted summary and the same
//! constraints per layer (worst layer); the Pareto front of bits per value against error.
//!
//! Each combo is evaluated by [`evaluate`]: every lossy-layer dump tensor is encoded and decoded
//! exactly as `kv compress` would store it (same methods, same chunks), or, for the reference's
//! block-norm (`blocknorm-ref`), through the reference's own computation. Sizes are payload
//! bytes (the `.tpk` adds its index and the meta files; `kv analyze` reports those).

use super::dump::{self, Dump, DumpFilter, Stage};
use super::method::{Method, Transform, Which};
use super::transform;
use crate::codec::TensorFacts;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::figure::{Figure, SizePoint};
use crate::metrics::{Accumulator, Metrics};
use rayon::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One K or V tensor, encoded and decoded in memory.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TensorEval {
    /// Layer.
    pub layer_id: u32,
    /// Prefill or decode.
    pub stage: Stage,
    /// K or V.
    pub which: Which,
    /// Elements.
    pub elements: u64,
    /// Bytes in the dump.
    pub raw_bytes: u64,
    /// Bytes it took.
    pub payload_bytes: u64,
    /// Error against the dump.
    pub metrics: Metrics,
}

/// Encode and decode one dump tensor with `method`; `store` is the lossless method that stores
/// the reference block-norm's codes.
pub fn eval_tensor(
    d: &Dump,
    which: Which,
    method: &Method,
    chunk_tokens: u64,
) -> Result<(TensorEval, Vec<f32>)> {
    let m = &d.meta;
    let bytes = match which {
        Which::K => d.read_k()?,
        Which::V => d.read_v()?,
    };
    let dtype = m.dtype.dtype();
    let dims = [m.seq_len, m.kv_heads, m.head_dim];
    let row = m.kv_heads * m.head_dim;
    let r = method.for_kind(which);
    let mut x = Vec::new();
    crate::dtype::to_f32(dtype, &bytes, &mut x);
    let mut payload = 0u64;
    let recon: Vec<f32>;
    if let Some(Transform::BlockNormRef {
        block,
        bits,
        topk,
        scale_bytes,
        topk_extra_bytes,
        index_bytes,
    }) = method.blocknorm_ref()
    {
        let b = transform::blocknorm_ref(
            dtype,
            &bytes,
            m.head_dim as usize,
            block,
            bits,
            topk,
            scale_bytes,
            topk_extra_bytes > 0,
        )?;
        let p = r.pipeline.bind(&TensorFacts {
            dims: &dims,
            amax: None,
            values: None,
        });
        payload += p.encode(dtype, &b.stored)?.len() as u64;
        payload += b.blocks as u64 * scale_bytes as u64
            + b.topk as u64 * (topk_extra_bytes as u64 + index_bytes as u64);
        recon = b.restored;
    } else {
        let mut data = bytes.clone();
        for t in &r.transforms {
            data = transform::apply(t, dtype, &data)?;
        }
        let mut v = Vec::new();
        crate::dtype::to_f32(dtype, &data, &mut v);
        let amax = v
            .iter()
            .filter(|e| e.is_finite())
            .fold(0f32, |a, e| a.max(e.abs()));
        let p = r.pipeline.bind(&TensorFacts {
            dims: &dims,
            amax: Some(amax),
            values: None,
        });
        let mult = p.tensor_codec().chunk_multiple().max(1);
        let chunk = if chunk_tokens == 0 {
            (m.seq_len * row).max(1)
        } else {
            (chunk_tokens * row).div_ceil(mult) * mult
        };
        let es = dtype.size();
        let dt = p.tensor_codec().decoded_dtype(dtype);
        let mut out = Vec::with_capacity(x.len());
        let mut f = Vec::new();
        for c in data.chunks(chunk as usize * es) {
            let enc = p.encode(dtype, c)?;
            payload += enc.len() as u64;
            let dec = p.decode(&enc, dtype, c.len() / es, u64::MAX)?;
            crate::dtype::to_f32(dt, &dec, &mut f);
            out.extend_from_slice(&f);
        }
        recon = out;
    }
    let metrics = Accumulator::from_f32_pairs(&x, &recon).finish();
    Ok((
        TensorEval {
            layer_id: m.layer_id,
            stage: m.stage,
            which,
            elements: x.len() as u64,
            raw_bytes: bytes.len() as u64,
            payload_bytes: payload,
            metrics,
        },
        recon,
    ))
}

/// Evaluate `method` on the dumps of layers `>= lossless_first_n` (K and V of each), in
/// parallel; results in dump order.
pub fn evaluate(
    dumps: &[Dump],
    method: &Method,
    lossless_first_n: u32,
    chunk_tokens: u64,
    cx: &Context<'_>,
) -> Result<Vec<TensorEval>> {
    cx.install(|| {
        let lossy: Vec<&Dump> = dumps
            .iter()
            .filter(|d| d.meta.layer_id >= lossless_first_n)
            .collect();
        let r: Vec<Result<[TensorEval; 2]>> = lossy
            .par_iter()
            .map(|d| {
                cx.check_cancelled()?;
                let k = eval_tensor(d, Which::K, method, chunk_tokens)
                    .map_err(|e| e.with_file(d.source()))?
                    .0;
                let v = eval_tensor(d, Which::V, method, chunk_tokens)
                    .map_err(|e| e.with_file(d.source()))?
                    .0;
                Ok([k, v])
            })
            .collect();
        let mut out = Vec::with_capacity(2 * r.len());
        for x in r {
            out.extend(x?);
        }
        Ok(out)
    })
}

/// The reference's precision constraints.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Constraints {
    /// Smallest K cosine.
    pub min_k_cosine: f64,
    /// Smallest V cosine.
    pub min_v_cosine: f64,
    /// Largest K MAE.
    pub max_k_mae: f64,
    /// Largest V MAE.
    pub max_v_mae: f64,
}

impl Default for Constraints {
    fn default() -> Self {
        Constraints {
            min_k_cosine: 0.9999,
            min_v_cosine: 0.9999,
            max_k_mae: 0.01,
            max_v_mae: 0.002,
        }
    }
}

/// One combo's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    /// `bs{B}_topk{r}_b{bits}` for the reference block-norm, `quant_b8`, `kivi_b4_g64`, ...
    pub combo: String,
    /// `blocknorm-ref`, `blocknorm`, `quant`, `truncate` or `kivi`.
    pub family: String,
    /// The method spec.
    pub method: String,
    /// Block size (block-norm), group (KIVI), 0 otherwise.
    pub block_size: u64,
    /// Top-k share (reference block-norm), 0 otherwise.
    pub topk_ratio: f64,
    /// Code width (mantissa bits kept, for truncate).
    pub bits: u32,
    /// Σraw/Σpayload of K.
    pub weighted_k_ratio: f64,
    /// Σraw/Σpayload of V.
    pub weighted_v_ratio: f64,
    /// Σraw/Σpayload of K and V.
    pub weighted_kv_ratio: f64,
    /// Element-weighted mean of per-tensor MAE, K.
    pub k_mae: f64,
    /// Same, V.
    pub v_mae: f64,
    /// Element-weighted mean of per-tensor cosine, K.
    pub k_cosine: f64,
    /// Same, V.
    pub v_cosine: f64,
    /// Dumps.
    pub rows: usize,
    /// The reference's test, on the weighted summary.
    pub passes_precision: bool,
    /// Bits per value of the payloads.
    pub bits_per_value: f64,
    /// The worst layer's K cosine (each layer's element-weighted mean).
    pub worst_k_cosine: f64,
    /// The worst layer's V cosine.
    pub worst_v_cosine: f64,
    /// The worst layer's K MAE.
    pub worst_k_mae: f64,
    /// The worst layer's V MAE.
    pub worst_v_mae: f64,
    /// The constraints hold for every layer.
    pub passes_per_layer: bool,
    /// On the Pareto front of bits per value against `error`.
    pub pareto: bool,
    /// `max(1 - k_cosine, 1 - v_cosine)`, the front's error axis.
    pub error: f64,
}

fn summarize(
    combo: &str,
    family: &str,
    method: &str,
    (block_size, topk_ratio, bits): (u64, f64, u32),
    t: &[TensorEval],
    c: &Constraints,
) -> SweepPoint {
    let sum = |w: Option<Which>| {
        t.iter()
            .filter(|e| w.is_none_or(|w| e.which == w))
            .fold((0u64, 0u64), |(a, b), e| {
                (a + e.raw_bytes, b + e.payload_bytes)
            })
    };
    let r = |(a, b): (u64, u64)| crate::compress::ratio(a, b);
    let wmean = |w: Which, f: &dyn Fn(&Metrics) -> f64, layer: Option<u32>| {
        let (mut s, mut n) = (0f64, 0f64);
        for e in t
            .iter()
            .filter(|e| e.which == w && layer.is_none_or(|l| e.layer_id == l))
        {
            s += f(&e.metrics) * e.elements as f64;
            n += e.elements as f64;
        }
        if n > 0.0 {
            s / n
        } else {
            0.0
        }
    };
    let cos = super::analyze::tensor_cosine;
    let mae = |m: &Metrics| m.mae;
    let layers: std::collections::BTreeSet<u32> = t.iter().map(|e| e.layer_id).collect();
    let (mut wkc, mut wvc, mut wkm, mut wvm) = (1f64, 1f64, 0f64, 0f64);
    for &l in &layers {
        wkc = wkc.min(wmean(Which::K, &cos, Some(l)));
        wvc = wvc.min(wmean(Which::V, &cos, Some(l)));
        wkm = wkm.max(wmean(Which::K, &mae, Some(l)));
        wvm = wvm.max(wmean(Which::V, &mae, Some(l)));
    }
    let (kc, vc, km, vm) = (
        wmean(Which::K, &cos, None),
        wmean(Which::V, &cos, None),
        wmean(Which::K, &mae, None),
        wmean(Which::V, &mae, None),
    );
    let passes = |kc: f64, vc: f64, km: f64, vm: f64| {
        kc >= c.min_k_cosine && vc >= c.min_v_cosine && km <= c.max_k_mae && vm <= c.max_v_mae
    };
    let elems: u64 = t.iter().map(|e| e.elements).sum();
    let all = sum(None);
    SweepPoint {
        combo: combo.to_string(),
        family: family.to_string(),
        method: method.to_string(),
        block_size,
        topk_ratio,
        bits,
        weighted_k_ratio: r(sum(Some(Which::K))),
        weighted_v_ratio: r(sum(Some(Which::V))),
        weighted_kv_ratio: r(all),
        k_mae: km,
        v_mae: vm,
        k_cosine: kc,
        v_cosine: vc,
        rows: t.len() / 2,
        passes_precision: passes(kc, vc, km, vm),
        bits_per_value: if elems == 0 {
            0.0
        } else {
            8.0 * all.1 as f64 / elems as f64
        },
        worst_k_cosine: wkc,
        worst_v_cosine: wvc,
        worst_k_mae: wkm,
        worst_v_mae: wvm,
        passes_per_layer: passes(wkc, wvc, wkm, wvm),
        pareto: false,
        error: (1.0 - kc).max(1.0 - vc).max(0.0),
    }
}

/// What to sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Which dumps.
    pub filter: DumpFilter,
    /// Layers below are lossless and left out.
    pub lossless_first_n: u32,
    /// The lossless method that stores the reference block-norm's codes (and truncated values).
    pub store: String,
    /// Block sizes of the block-norm grids.
    pub block_sizes: Vec<u64>,
    /// Top-k shares of the reference block-norm grid.
    pub topk_ratios: Vec<f64>,
    /// Code widths of the block-norm and quant grids.
    pub bits: Vec<u32>,
    /// Mantissa bits of the truncate grid.
    pub truncate_keep: Vec<u32>,
    /// KIVI code widths.
    pub kivi_bits: Vec<u32>,
    /// KIVI group sizes.
    pub kivi_groups: Vec<u64>,
    /// The constraints.
    pub constraints: Constraints,
    /// Tokens per chunk (0: whole tensors, as the reference).
    pub chunk_tokens: u64,
    /// Rows per table of the best-of markdown.
    pub top: usize,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions {
            filter: DumpFilter::default(),
            lossless_first_n: 2,
            store: "gear-delta".into(),
            block_sizes: vec![64, 128, 256],
            topk_ratios: vec![0.02, 0.05, 0.1],
            bits: vec![8, 10],
            truncate_keep: vec![4, 6, 8],
            kivi_bits: vec![2, 3, 4, 8],
            kivi_groups: vec![32, 64, 128],
            constraints: Constraints::default(),
            chunk_tokens: 0,
            top: 10,
        }
    }
}

/// What the sweep found.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// The folder written.
    pub out_dir: PathBuf,
    /// Dumps of lossy layers.
    pub rows: usize,
    /// Every combo, by weighted KV ratio, descending.
    pub points: Vec<SweepPoint>,
    /// Files written.
    pub files: Vec<PathBuf>,
}

/// Python's `repr` of a float as the reference's combo names use it (`0.02`, `0.1`).
fn py_float(x: f64) -> String {
    let s = format!("{x}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

/// Run the sweep over `root` and write `kv_sweep.csv`, `blocknorm_sweep.csv`,
/// `blocknorm_best.md`, `kv_best.md`, `pareto.csv` and `pareto.png` into `out_dir`.
pub fn sweep(
    root: &Path,
    out_dir: &Path,
    opts: &SweepOptions,
    cx: &Context<'_>,
) -> Result<SweepReport> {
    let dumps = dump::scan(root, &opts.filter)?;
    if !dumps
        .iter()
        .any(|d| d.meta.layer_id >= opts.lossless_first_n)
    {
        return Err(Error::input(format!(
            "no dumps of layers >= {} (the lossy layers) here",
            opts.lossless_first_n
        ))
        .with_file(root));
    }
    std::fs::create_dir_all(out_dir)
        .map_err(|e| Error::io("create the output folder", e).with_file(out_dir))?;
    let store = &opts.store;
    // (combo name, family, method spec, (block size or group, top-k share, bits)).
    type Combo<'a> = (String, &'a str, String, (u64, f64, u32));
    let mut combos: Vec<Combo> = Vec::new();
    for &b in &opts.block_sizes {
        for &r in &opts.topk_ratios {
            for &bits in &opts.bits {
                combos.push((
                    format!("bs{b}_topk{}_b{bits}", py_float(r)),
                    "blocknorm-ref",
                    format!("blocknorm-ref:block={b},topk={r},bits={bits},store={store}"),
                    (b, r, bits),
                ));
            }
        }
    }
    for &b in &opts.block_sizes {
        for &bits in &opts.bits {
            combos.push((
                format!("blocknorm_bs{b}_b{bits}"),
                "blocknorm",
                format!("blocknorm:block={b},bits={bits}"),
                (b, 0.0, bits),
            ));
        }
    }
    for &bits in opts.bits.iter().chain(&[4, 6]) {
        combos.push((
            format!("quant_b{bits}"),
            "quant",
            format!("quant:bits={bits}"),
            (0, 0.0, bits),
        ));
    }
    for &k in &opts.truncate_keep {
        combos.push((
            format!("truncate_k{k}"),
            "truncate",
            format!("truncate:keep={k},store={store}"),
            (0, 0.0, k),
        ));
    }
    for &bits in &opts.kivi_bits {
        for &g in &opts.kivi_groups {
            combos.push((
                format!("kivi_b{bits}_g{g}"),
                "kivi",
                format!("kivi:bits={bits},group={g}"),
                (g, 0.0, bits),
            ));
        }
    }
    combos.dedup_by(|a, b| a.0 == b.0);
    let mut points = Vec::with_capacity(combos.len());
    cx.event(crate::progress::Event::Start {
        total_bytes: combos.len() as u64,
        tensors: combos.len(),
    });
    for (combo, family, spec, params) in &combos {
        cx.event(crate::progress::Event::Tensor { name: combo });
        let m = Method::parse(spec)?;
        let t = evaluate(&dumps, &m, opts.lossless_first_n, opts.chunk_tokens, cx)?;
        points.push(summarize(
            combo,
            family,
            spec,
            *params,
            &t,
            &opts.constraints,
        ));
        cx.event(crate::progress::Event::Advance { bytes: 1 });
    }
    cx.event(crate::progress::Event::Finish);
    // The front: no other point has fewer (or equal) bits and a smaller (or equal) error, one
    // of them strictly.
    let n = points.len();
    for i in 0..n {
        let (bi, ei) = (points[i].bits_per_value, points[i].error);
        points[i].pareto = !(0..n).any(|j| {
            let (bj, ej) = (points[j].bits_per_value, points[j].error);
            j != i && bj <= bi && ej <= ei && (bj < bi || ej < ei)
        });
    }
    points.sort_by(|a, b| {
        b.weighted_kv_ratio
            .total_cmp(&a.weighted_kv_ratio)
            .then(a.combo.cmp(&b.combo))
    });
    let rows = points.first().map_or(0, |p| p.rows);
    let mut files = Vec::new();
    let mut put = |name: &str, text: &str| -> Result<()> {
        let p = out_dir.join(name);
        crate::atomic::write(&p, text.as_bytes())?;
        files.push(p);
        Ok(())
    };
    // The reference's CSV, block-norm rows only, its fields in its order.
    let mut bn = String::from(
        "combo,block_size,topk_ratio,bits,weighted_k_ratio,weighted_v_ratio,weighted_kv_ratio,k_mae,v_mae,k_cosine,v_cosine,rows,passes_precision,out_dir\n",
    );
    for p in points.iter().filter(|p| p.family == "blocknorm-ref") {
        let _ = writeln!(
            bn,
            "{},{},{},{},{:.6},{:.6},{:.6},{:.9},{:.9},{:.9},{:.9},{},{},",
            p.combo,
            p.block_size,
            py_float(p.topk_ratio),
            p.bits,
            p.weighted_k_ratio,
            p.weighted_v_ratio,
            p.weighted_kv_ratio,
            p.k_mae,
            p.v_mae,
            p.k_cosine,
            p.v_cosine,
            p.rows,
            if p.passes_precision { "True" } else { "False" }
        );
    }
    put("blocknorm_sweep.csv", &bn)?;
    let mut all = String::from(
        "combo,family,method,block_size,topk_ratio,bits,weighted_k_ratio,weighted_v_ratio,weighted_kv_ratio,k_mae,v_mae,k_cosine,v_cosine,rows,passes_precision,bits_per_value,worst_k_cosine,worst_v_cosine,worst_k_mae,worst_v_mae,passes_per_layer,pareto\n",
    );
    for p in &points {
        let _ = writeln!(
            all,
            "{},{},\"{}\",{},{},{},{:.6},{:.6},{:.6},{:.9},{:.9},{:.9},{:.9},{},{},{:.4},{:.9},{:.9},{:.9},{:.9},{},{}",
            p.combo,
            p.family,
            p.method,
            p.block_size,
            py_float(p.topk_ratio),
            p.bits,
            p.weighted_k_ratio,
            p.weighted_v_ratio,
            p.weighted_kv_ratio,
            p.k_mae,
            p.v_mae,
            p.k_cosine,
            p.v_cosine,
            p.rows,
            p.passes_precision,
            p.bits_per_value,
            p.worst_k_cosine,
            p.worst_v_cosine,
            p.worst_k_mae,
            p.worst_v_mae,
            p.passes_per_layer,
            p.pareto
        );
    }
    put("kv_sweep.csv", &all)?;
    let mut front: Vec<&SweepPoint> = points.iter().filter(|p| p.pareto).collect();
    front.sort_by(|a, b| a.bits_per_value.total_cmp(&b.bits_per_value));
    let mut pf = String::from(
        "combo,family,bits_per_value,error,k_cosine,v_cosine,k_mae,v_mae,weighted_kv_ratio\n",
    );
    for p in &front {
        let _ = writeln!(
            pf,
            "{},{},{:.4},{:.3e},{:.9},{:.9},{:.9},{:.9},{:.6}",
            p.combo,
            p.family,
            p.bits_per_value,
            p.error,
            p.k_cosine,
            p.v_cosine,
            p.k_mae,
            p.v_mae,
            p.weighted_kv_ratio
        );
    }
    put("pareto.csv", &pf)?;
    let table = |title: &str, ps: &[&SweepPoint]| {
        let mut s = format!(
            "## {title}\n\n| combo | KV ratio | K ratio | V ratio | bits/value | K MAE | V MAE | K cos | V cos | worst-layer K cos | worst-layer V cos | passes (per layer) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        );
        for p in ps {
            let _ = writeln!(
                s,
                "| {} | {:.4} | {:.4} | {:.4} | {:.3} | {:.6} | {:.6} | {:.7} | {:.7} | {:.7} | {:.7} | {} ({}) |",
                p.combo,
                p.weighted_kv_ratio,
                p.weighted_k_ratio,
                p.weighted_v_ratio,
                p.bits_per_value,
                p.k_mae,
                p.v_mae,
                p.k_cosine,
                p.v_cosine,
                p.worst_k_cosine,
                p.worst_v_cosine,
                p.passes_precision,
                p.passes_per_layer
            );
        }
        s.push('\n');
        s
    };
    let c = &opts.constraints;
    let rule = format!(
        "Constraints: k_cos >= {}, v_cos >= {}, k_mae <= {}, v_mae <= {} on the weighted summary (the reference's rule), and per layer (worst layer) in parentheses. {} dumps of lossy layers (layer_id >= {}).\n\n",
        c.min_k_cosine, c.min_v_cosine, c.max_k_mae, c.max_v_mae, rows, opts.lossless_first_n
    );
    let bnp: Vec<&SweepPoint> = points
        .iter()
        .filter(|p| p.family == "blocknorm-ref")
        .collect();
    let mut md = String::from("# Block-norm sweep (the reference's grid)\n\n");
    md.push_str(&rule);
    md.push_str(&table(
        &format!("Top {} overall", opts.top),
        &bnp.iter().take(opts.top).copied().collect::<Vec<_>>(),
    ));
    md.push_str(&table(
        &format!("Top {} passing", opts.top),
        &bnp.iter()
            .filter(|p| p.passes_precision)
            .take(opts.top)
            .copied()
            .collect::<Vec<_>>(),
    ));
    put("blocknorm_best.md", &md)?;
    let all_refs: Vec<&SweepPoint> = points.iter().collect();
    let mut md = String::from("# KV sweep: every family\n\n");
    md.push_str(&rule);
    md.push_str(&table(
        &format!("Top {} passing (weighted)", opts.top),
        &all_refs
            .iter()
            .filter(|p| p.passes_precision)
            .take(opts.top)
            .copied()
            .collect::<Vec<_>>(),
    ));
    md.push_str(&table(
        &format!("Top {} passing in every layer", opts.top),
        &all_refs
            .iter()
            .filter(|p| p.passes_per_layer)
            .take(opts.top)
            .copied()
            .collect::<Vec<_>>(),
    ));
    md.push_str(&table("Pareto front (bits per value vs error)", &front));
    put("kv_best.md", &md)?;
    let ours: Vec<SizePoint> = points
        .iter()
        .map(|p| (p.combo.clone(), p.bits_per_value, p.error.max(1e-12)))
        .collect();
    let png = out_dir.join("pareto.png");
    cx.figures().draw(
        &png,
        &Figure::Frontier {
            title: "KV sweep: bits per value vs error (lossy layers)",
            x_desc: "bits per value (payload)",
            y_desc: "max(1 - K cosine, 1 - V cosine)",
            ours: &ours,
            others: &[],
        },
    )?;
    if png.is_file() {
        files.push(png);
    }
    Ok(SweepReport {
        out_dir: out_dir.to_path_buf(),
        rows,
        points,
        files,
    })
}

/// Per-combo counts for a caller's summary line: (combos, passing, passing per layer).
pub fn counts(r: &SweepReport) -> (usize, usize, usize) {
    (
        r.points.len(),
        r.points.iter().filter(|p| p.passes_precision).count(),
        r.points.iter().filter(|p| p.passes_per_layer).count(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn python_floats() {
        assert_eq!(super::py_float(0.02), "0.02");
        assert_eq!(super::py_float(0.1), "0.1");
        assert_eq!(super::py_float(1.0), "1.0");
    }
}
