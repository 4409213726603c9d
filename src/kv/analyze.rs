//! `tenpak kv analyze`: the KV reference's reports (`analyze_mixed.py`, kv.md §3.8) from a real
//! `.tpk`: the dumps are compressed with the policy into `<out>/kv.tpk`, decoded back, and
//! measured. Writes `mixed_layer_metrics.csv` and `lossy_error_metrics.csv` (the reference's
//! field orders), `mixed_summary.md`, `summary.json`, and with a `blocknorm` lossy method
//! `blocknorm_metrics.csv`.
//!
//! The reference's summary figures are kept for parity (element-weighted means of per-tensor
//! MAE, RMSE and cosine; the unweighted mean of per-tensor max_abs; payload-only ratios), and
//! tenpak adds the global ones (global MAE, RMSE, max_abs, the smallest per-tensor cosine,
//! per-vector cosine statistics over every (token, head) vector), the container-inclusive ratio
//! and bits per value of the written file, and encode / decode MB/s.

use super::dump::{self, Stage};
use super::method::Which;
use super::pack::{self, KvCompressOptions, KvCompressReport, KvTensorReport};
use crate::context::Context;
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Per-vector (one token, one head) cosine statistics of the lossy tensors.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct VectorCosine {
    /// Vectors measured.
    pub vectors: u64,
    /// Mean.
    pub mean: f64,
    /// Smallest.
    pub min: f64,
    /// First percentile.
    pub p1: f64,
}

/// Error figures over a set of tensors.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ErrorSummary {
    /// Tensors.
    pub tensors: usize,
    /// Element-weighted mean of per-tensor MAE (the reference's).
    pub mae: f64,
    /// Element-weighted mean of per-tensor RMSE (the reference's; not the global RMSE).
    pub rmse: f64,
    /// Element-weighted mean of per-tensor cosine (the reference's).
    pub cosine: f64,
    /// Unweighted mean of per-tensor max_abs (the reference's "max_abs (avg)").
    pub max_abs_avg: f64,
    /// Global MAE over every element.
    pub global_mae: f64,
    /// Global RMSE over every element.
    pub global_rmse: f64,
    /// Largest absolute error of any element.
    pub global_max_abs: f64,
    /// Smallest per-tensor cosine.
    pub min_cosine: f64,
    /// Per-vector cosines.
    pub vector_cosine: VectorCosine,
}

/// Weighted (Σraw / Σcompressed) payload ratios, the reference's definition.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Ratios {
    /// Every tensor.
    pub overall: f64,
    /// Tensors of lossless layers.
    pub lossless: f64,
    /// Tensors of lossy layers.
    pub lossy: f64,
    /// Keys, lossy layers.
    pub k: f64,
    /// Values, lossy layers.
    pub v: f64,
    /// Keys and values, lossy layers.
    pub kv: f64,
    /// Keys, lossless layers.
    pub lossless_k: f64,
    /// Values, lossless layers.
    pub lossless_v: f64,
    /// Plain mean of per-tensor ratios (as `analyze_fp16.py` also prints).
    pub mean_of_ratios: f64,
}

/// What `kv analyze` found.
#[derive(Debug, Clone, Serialize)]
pub struct KvAnalyzeReport {
    /// The folder written.
    pub out_dir: PathBuf,
    /// The `.tpk` the figures come from.
    pub tpk: PathBuf,
    /// The policy, as JSON.
    pub policy: serde_json::Value,
    /// Dumps measured.
    pub dumps: usize,
    /// Payload ratios.
    pub ratios: Ratios,
    /// Bytes of the dumps over the `.tpk`'s size (container and meta files included).
    pub file_ratio: f64,
    /// Bits per cached value of the `.tpk`.
    pub bits_per_value: f64,
    /// Bits per value of the lossy tensors' payloads (codes, scales, outliers).
    pub lossy_bits_per_value: f64,
    /// Keys of the lossy layers.
    pub k: ErrorSummary,
    /// Values of the lossy layers.
    pub v: ErrorSummary,
    /// Encode MB/s (dump bytes over reading, encoding with its check decode, and writing).
    pub encode_mb_s: f64,
    /// Decode MB/s (dump bytes over decoding every tensor from the `.tpk`).
    pub decode_mb_s: f64,
    /// Files written.
    pub files: Vec<PathBuf>,
}

fn ratio(a: u64, b: u64) -> f64 {
    crate::compress::ratio(a, b)
}

/// A tensor's cosine as the KV reports give it: 1 when it decoded exactly (the stored metric
/// is 0 for an all-zero tensor, which would read as a failure).
pub(crate) fn tensor_cosine(m: &crate::metrics::Metrics) -> f64 {
    if m.max_abs == 0.0 {
        1.0
    } else {
        m.cosine
    }
}

/// Cosine with tenpak's edge cases: 1 when the vectors are equal (all-zero included), 0 when
/// only one has zero norm.
fn cosine(dot: f64, na: f64, nb: f64, equal: bool) -> f64 {
    if equal {
        1.0
    } else if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

#[derive(Default)]
struct Acc {
    n: u64,
    w_mae: f64,
    w_rmse: f64,
    w_cos: f64,
    max_abs_sum: f64,
    tensors: usize,
    abs_sum: f64,
    sq_sum: f64,
    max_abs: f64,
    min_cos: f64,
    vec_cos: Vec<f64>,
}

impl Acc {
    fn add(&mut self, m: &crate::metrics::Metrics, x: &[f32], y: &[f32], head_dim: usize) {
        let n = x.len() as u64;
        // A tensor that decodes exactly has cosine 1 by tenpak's definition.
        let cos_t = tensor_cosine(m);
        self.n += n;
        self.w_mae += m.mae * n as f64;
        self.w_rmse += m.rmse * n as f64;
        self.w_cos += cos_t * n as f64;
        self.max_abs_sum += m.max_abs;
        self.min_cos = if self.tensors == 0 {
            cos_t
        } else {
            self.min_cos.min(cos_t)
        };
        self.tensors += 1;
        for (a, b) in x.iter().zip(y) {
            let d = (*a as f64 - *b as f64).abs();
            if d.is_finite() {
                self.abs_sum += d;
                self.sq_sum += d * d;
                self.max_abs = self.max_abs.max(d);
            }
        }
        for (va, vb) in x.chunks(head_dim).zip(y.chunks(head_dim)) {
            let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
            for (a, b) in va.iter().zip(vb) {
                if a.is_finite() && b.is_finite() {
                    dot += *a as f64 * *b as f64;
                    na += *a as f64 * *a as f64;
                    nb += *b as f64 * *b as f64;
                }
            }
            self.vec_cos.push(cosine(dot, na, nb, va == vb));
        }
    }

    fn finish(mut self) -> ErrorSummary {
        if self.n == 0 {
            return ErrorSummary::default();
        }
        let n = self.n as f64;
        self.vec_cos.sort_by(f64::total_cmp);
        let vc = &self.vec_cos;
        let p1 = if vc.is_empty() {
            0.0
        } else {
            // numpy's linear percentile.
            let h = (vc.len() - 1) as f64 * 0.01;
            let i = h.floor() as usize;
            let j = (i + 1).min(vc.len() - 1);
            vc[i] + (h - i as f64) * (vc[j] - vc[i])
        };
        ErrorSummary {
            tensors: self.tensors,
            mae: self.w_mae / n,
            rmse: self.w_rmse / n,
            cosine: self.w_cos / n,
            max_abs_avg: self.max_abs_sum / self.tensors as f64,
            global_mae: self.abs_sum / n,
            global_rmse: (self.sq_sum / n).sqrt(),
            global_max_abs: self.max_abs,
            min_cosine: self.min_cos,
            vector_cosine: VectorCosine {
                vectors: vc.len() as u64,
                mean: vc.iter().sum::<f64>() / vc.len().max(1) as f64,
                min: vc.first().copied().unwrap_or(0.0),
                p1,
            },
        }
    }
}

/// Weighted ratios of a compress report.
pub fn ratios(r: &KvCompressReport) -> Ratios {
    let sum = |f: &dyn Fn(&KvTensorReport) -> bool| {
        r.tensors
            .iter()
            .filter(|t| f(t))
            .fold((0u64, 0u64), |(a, b), t| {
                (a + t.raw_bytes, b + t.payload_bytes)
            })
    };
    let rr = |(a, b): (u64, u64)| ratio(a, b);
    let n = r.tensors.len().max(1) as f64;
    Ratios {
        overall: rr(sum(&|_| true)),
        lossless: rr(sum(&|t| t.lossless)),
        lossy: rr(sum(&|t| !t.lossless)),
        k: rr(sum(&|t| !t.lossless && t.which == Which::K)),
        v: rr(sum(&|t| !t.lossless && t.which == Which::V)),
        kv: rr(sum(&|t| !t.lossless)),
        lossless_k: rr(sum(&|t| t.lossless && t.which == Which::K)),
        lossless_v: rr(sum(&|t| t.lossless && t.which == Which::V)),
        mean_of_ratios: r
            .tensors
            .iter()
            .map(|t| ratio(t.raw_bytes, t.payload_bytes))
            .sum::<f64>()
            / n,
    }
}

fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::Prefill => "prefill",
        Stage::Decode => "decode",
    }
}

/// The reference's `blocknorm_metrics.csv` fields, in its order.
const BLOCKNORM_FIELDS: &str = "layer_id,stage,seq_len,kv_heads,head_dim,bytes_per_elem,block_size,topk_ratio,bits,k_ratio,v_ratio,k_mae,k_cosine,v_mae,v_cosine\n";

/// Run the analysis: compress `root` into `out_dir/kv.tpk` with `opts`, decode it, measure, and
/// write the reports. With the reference's block-norm (`--lossy blocknorm-ref:...`), which is
/// not a storage format, the lossy layers are measured in memory as the reference does and
/// `blocknorm_metrics.csv` / `blocknorm_summary.md` are written instead.
pub fn analyze(
    root: &Path,
    out_dir: &Path,
    opts: &KvCompressOptions,
    cx: &Context<'_>,
) -> Result<KvAnalyzeReport> {
    std::fs::create_dir_all(out_dir)
        .map_err(|e| Error::io("create the output folder", e).with_file(out_dir))?;
    if let Some(m) = opts
        .policy
        .lossy
        .as_ref()
        .filter(|m| m.blocknorm_ref().is_some())
    {
        return blocknorm_reference(root, out_dir, opts, m, cx);
    }
    let tpk = out_dir.join("kv.tpk");
    let opts = KvCompressOptions {
        force: true,
        ..opts.clone()
    };
    let c = pack::compress(root, &tpk, &opts, cx)?;
    let dumps = dump::scan(root, &opts.filter)?;
    let a = crate::archive::Archive::open(&tpk)?;
    // Decode every tensor once (timed), keeping the lossy ones for the error pass.
    let start = std::time::Instant::now();
    let mut decoded: HashMap<String, Vec<u8>> = HashMap::new();
    cx.event(crate::progress::Event::Start {
        total_bytes: a.file.tensors().iter().map(|t| t.source_bytes).sum(),
        tensors: a.file.tensors().len(),
    });
    pack::decode_dump_tensors(&a, &tpk, cx, &mut |name, buf| {
        decoded.insert(name.to_string(), buf);
        Ok(())
    })?;
    cx.event(crate::progress::Event::Finish);
    let decode_s = start.elapsed().as_secs_f64();
    let by_name: HashMap<&str, &KvTensorReport> =
        c.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let (mut k_acc, mut v_acc) = (Acc::default(), Acc::default());
    let mut layer_csv = String::from(
        "layer_id,stage,seq_len,kv_heads,head_dim,bytes_per_elem,lossless,k_ratio,v_ratio\n",
    );
    let mut err_csv = String::from(
        "layer_id,stage,seq_len,kv_heads,head_dim,bytes_per_elem,k_mae,k_rmse,k_max_abs,k_cosine,v_mae,v_rmse,v_max_abs,v_cosine\n",
    );
    let mut bn_csv = String::from(BLOCKNORM_FIELDS);
    let blocknorm = opts
        .policy
        .lossy
        .as_ref()
        .is_some_and(|m| m.spec.starts_with("blocknorm"));
    let (bn_block, bn_bits) = opts.policy.lossy.as_ref().map_or((0, 0), |m| {
        let opt = |k: &str, d: u64| {
            m.spec
                .split([':', ','])
                .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.parse().ok()))
                .unwrap_or(d)
        };
        (opt("block=", 64), opt("bits=", 10))
    });
    for d in &dumps {
        let m = &d.meta;
        let layer = d
            .dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kname = format!("{}/{layer}/{}", d.run, m.k_file);
        let vname = format!("{}/{layer}/{}", d.run, m.v_file);
        let (Some(kt), Some(vt)) = (by_name.get(kname.as_str()), by_name.get(vname.as_str()))
        else {
            continue;
        };
        let lossless = kt.lossless && vt.lossless;
        let _ = writeln!(
            layer_csv,
            "{},{},{},{},{},{},{},{:.6},{:.6}",
            m.layer_id,
            stage_name(m.stage),
            m.seq_len,
            m.kv_heads,
            m.head_dim,
            m.dtype.size(),
            if lossless { "True" } else { "False" },
            ratio(kt.raw_bytes, kt.payload_bytes),
            ratio(vt.raw_bytes, vt.payload_bytes)
        );
        if lossless {
            continue;
        }
        let dt = m.dtype.dtype();
        for (t, acc, which) in [(kt, &mut k_acc, Which::K), (vt, &mut v_acc, Which::V)] {
            let orig = match which {
                Which::K => d.read_k()?,
                Which::V => d.read_v()?,
            };
            let back = decoded.get(t.name.as_str()).ok_or_else(|| {
                Error::internal(format!("{} is missing from the analysis .tpk", t.name))
            })?;
            let (mut x, mut y) = (Vec::new(), Vec::new());
            crate::dtype::to_f32(dt, &orig, &mut x);
            crate::dtype::to_f32(dt, back, &mut y);
            acc.add(&t.metrics, &x, &y, m.head_dim as usize);
        }
        let cosv = |t: &KvTensorReport| tensor_cosine(&t.metrics);
        let _ = writeln!(
            err_csv,
            "{},{},{},{},{},{},{:.9},{:.9},{:.9},{:.9},{:.9},{:.9},{:.9},{:.9}",
            m.layer_id,
            stage_name(m.stage),
            m.seq_len,
            m.kv_heads,
            m.head_dim,
            m.dtype.size(),
            kt.metrics.mae,
            kt.metrics.rmse,
            kt.metrics.max_abs,
            cosv(kt),
            vt.metrics.mae,
            vt.metrics.rmse,
            vt.metrics.max_abs,
            cosv(vt)
        );
        if blocknorm {
            let _ = writeln!(
                bn_csv,
                "{},{},{},{},{},{},{},0.0,{},{:.6},{:.6},{:.9},{:.9},{:.9},{:.9}",
                m.layer_id,
                stage_name(m.stage),
                m.seq_len,
                m.kv_heads,
                m.head_dim,
                m.dtype.size(),
                bn_block,
                bn_bits,
                ratio(kt.raw_bytes, kt.payload_bytes),
                ratio(vt.raw_bytes, vt.payload_bytes),
                kt.metrics.mae,
                cosv(kt),
                vt.metrics.mae,
                cosv(vt)
            );
        }
    }
    let r = ratios(&c);
    let lossy: Vec<&KvTensorReport> = c.tensors.iter().filter(|t| !t.lossless).collect();
    let lossy_elems: u64 = lossy.iter().map(|t| t.numel()).sum();
    let lossy_bits = if lossy_elems == 0 {
        0.0
    } else {
        8.0 * lossy.iter().map(|t| t.payload_bytes).sum::<u64>() as f64 / lossy_elems as f64
    };
    let report = KvAnalyzeReport {
        out_dir: out_dir.to_path_buf(),
        tpk: tpk.clone(),
        policy: c.policy.clone(),
        dumps: c.dumps,
        ratios: r,
        file_ratio: c.file_ratio,
        bits_per_value: c.bits_per_value,
        lossy_bits_per_value: lossy_bits,
        k: k_acc.finish(),
        v: v_acc.finish(),
        encode_mb_s: mb_s(c.raw_bytes, c.seconds),
        decode_mb_s: mb_s(c.raw_bytes, decode_s),
        files: Vec::new(),
    };
    let mut files = Vec::new();
    let mut put = |name: &str, text: &str| -> Result<()> {
        let p = out_dir.join(name);
        crate::atomic::write(&p, text.as_bytes())?;
        files.push(p);
        Ok(())
    };
    put("mixed_layer_metrics.csv", &layer_csv)?;
    put("lossy_error_metrics.csv", &err_csv)?;
    if blocknorm {
        put("blocknorm_metrics.csv", &bn_csv)?;
    }
    put("mixed_summary.md", &summary_md(&report, &c))?;
    let mut report = report;
    files.push(out_dir.join("summary.json"));
    report.files = files;
    let js = serde_json::to_string_pretty(&report).expect("json") + "\n";
    crate::atomic::write(&out_dir.join("summary.json"), js.as_bytes())?;
    Ok(report)
}

fn mb_s(bytes: u64, s: f64) -> f64 {
    if s > 0.0 {
        bytes as f64 / s / 1e6
    } else {
        0.0
    }
}

fn summary_md(r: &KvAnalyzeReport, c: &KvCompressReport) -> String {
    let mut s = String::new();
    let p = &r.policy;
    let _ = writeln!(s, "# Mixed KV compression summary\n");
    let _ = writeln!(s, "- dumps: {} ({} tensors)", r.dumps, c.tensors.len());
    let _ = writeln!(
        s,
        "- lossless_first_n: {}; lossless: {}; lossy: {}",
        p["lossless_first_n"],
        p["lossless"].as_str().unwrap_or(""),
        p["lossy"].as_str().unwrap_or("none")
    );
    if p["layers"].as_object().is_some_and(|o| !o.is_empty()) {
        let _ = writeln!(s, "- per-layer rules: {}", p["layers"]);
    }
    let _ = writeln!(
        s,
        "- sink_tokens: {}; recent_tokens: {}\n",
        p["sink_tokens"], p["recent_tokens"]
    );
    let _ = writeln!(s, "## Ratios (payload only, weighted Σraw/Σcompressed)\n");
    let _ = writeln!(s, "| set | ratio |\n|---|---|");
    let rr = &r.ratios;
    for (k, v) in [
        ("overall", rr.overall),
        ("lossless layers", rr.lossless),
        ("lossless K", rr.lossless_k),
        ("lossless V", rr.lossless_v),
        ("lossy layers", rr.lossy),
        ("lossy K", rr.k),
        ("lossy V", rr.v),
        ("lossy KV", rr.kv),
        ("mean of per-tensor ratios", rr.mean_of_ratios),
    ] {
        let _ = writeln!(s, "| {k} | {v:.4} |");
    }
    let _ = writeln!(
        s,
        "\nWith the container (index, chunk table, meta files): ratio {:.4}, {:.4} bits per \
         cached value ({} -> {} bytes). Lossy tensors' payloads: {:.4} bits per value.\n",
        r.file_ratio, r.bits_per_value, c.raw_bytes, c.file_bytes, r.lossy_bits_per_value
    );
    let _ = writeln!(s, "## Error on lossy layers\n");
    let _ = writeln!(
        s,
        "| | MAE | RMSE | cosine | max_abs (avg) | global MAE | global RMSE | global max_abs | min cosine | vector cosine mean | min | p1 |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (name, e) in [("K", &r.k), ("V", &r.v)] {
        let _ = writeln!(
            s,
            "| {name} | {:.6} | {:.6} | {:.6} | {:.6} | {:.6} | {:.6} | {:.6} | {:.6} | {:.6} | {:.6} | {:.6} |",
            e.mae,
            e.rmse,
            e.cosine,
            e.max_abs_avg,
            e.global_mae,
            e.global_rmse,
            e.global_max_abs,
            e.min_cosine,
            e.vector_cosine.mean,
            e.vector_cosine.min,
            e.vector_cosine.p1
        );
    }
    let _ = writeln!(
        s,
        "\nMAE, RMSE and cosine are element-weighted means of per-tensor values and max_abs (avg) \
         the plain mean of per-tensor maxima, as the reference reports them; the global columns \
         are over every element.\n\nSpeed: encode {:.0} MB/s (read, encode, check decode, write), \
         decode {:.0} MB/s.",
        r.encode_mb_s, r.decode_mb_s
    );
    s
}

/// `kv analyze --lossy blocknorm-ref:...`: the reference's `analyze_blocknorm.py` on the lossy
/// layers, in memory.
fn blocknorm_reference(
    root: &Path,
    out_dir: &Path,
    opts: &KvCompressOptions,
    m: &super::method::Method,
    cx: &Context<'_>,
) -> Result<KvAnalyzeReport> {
    use super::method::Transform;
    use rayon::prelude::*;
    let Some(Transform::BlockNormRef {
        block, bits, topk, ..
    }) = m.blocknorm_ref()
    else {
        return Err(Error::internal("not a blocknorm-ref method"));
    };
    let start = std::time::Instant::now();
    let dumps: Vec<_> = dump::scan(root, &opts.filter)?
        .into_iter()
        .filter(|d| d.meta.layer_id >= opts.policy.lossless_first_n)
        .collect();
    if dumps.is_empty() {
        return Err(Error::input("no dumps of lossy layers here").with_file(root));
    }
    type Evals = Vec<(super::sweep::TensorEval, Vec<f32>, Vec<f32>)>;
    let evals: Vec<Result<Evals>> = cx.install(|| {
        dumps
            .par_iter()
            .map(|d| {
                cx.check_cancelled()?;
                let mut v = Vec::with_capacity(2);
                for w in [Which::K, Which::V] {
                    let (t, recon) = super::sweep::eval_tensor(d, w, m, opts.chunk_tokens)
                        .map_err(|e| e.with_file(d.source()))?;
                    let raw = match w {
                        Which::K => d.read_k()?,
                        Which::V => d.read_v()?,
                    };
                    let mut x = Vec::new();
                    crate::dtype::to_f32(d.meta.dtype.dtype(), &raw, &mut x);
                    v.push((t, x, recon));
                }
                Ok(v)
            })
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut csv = String::from(BLOCKNORM_FIELDS);
    let (mut k_acc, mut v_acc) = (Acc::default(), Acc::default());
    let (mut kr, mut kc, mut vr, mut vc) = (0u64, 0u64, 0u64, 0u64);
    let mut ratios_sum = 0f64;
    for (d, e) in dumps.iter().zip(evals) {
        let e = e?;
        let (k, v) = (&e[0], &e[1]);
        let mm = &d.meta;
        let cos = |t: &super::sweep::TensorEval| tensor_cosine(&t.metrics);
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{:.6},{:.6},{:.9},{:.9},{:.9},{:.9}",
            mm.layer_id,
            stage_name(mm.stage),
            mm.seq_len,
            mm.kv_heads,
            mm.head_dim,
            mm.dtype.size(),
            block,
            topk,
            bits,
            ratio(k.0.raw_bytes, k.0.payload_bytes),
            ratio(v.0.raw_bytes, v.0.payload_bytes),
            k.0.metrics.mae,
            cos(&k.0),
            v.0.metrics.mae,
            cos(&v.0)
        );
        k_acc.add(&k.0.metrics, &k.1, &k.2, mm.head_dim as usize);
        v_acc.add(&v.0.metrics, &v.1, &v.2, mm.head_dim as usize);
        kr += k.0.raw_bytes;
        kc += k.0.payload_bytes;
        vr += v.0.raw_bytes;
        vc += v.0.payload_bytes;
        ratios_sum +=
            ratio(k.0.raw_bytes, k.0.payload_bytes) + ratio(v.0.raw_bytes, v.0.payload_bytes);
    }
    let elems: u64 = dumps.iter().map(|d| 2 * d.meta.numel().unwrap_or(0)).sum();
    let ratios = Ratios {
        overall: ratio(kr + vr, kc + vc),
        lossless: 0.0,
        lossy: ratio(kr + vr, kc + vc),
        k: ratio(kr, kc),
        v: ratio(vr, vc),
        kv: ratio(kr + vr, kc + vc),
        lossless_k: 0.0,
        lossless_v: 0.0,
        mean_of_ratios: ratios_sum / (2 * dumps.len()) as f64,
    };
    let bpv = if elems == 0 {
        0.0
    } else {
        8.0 * (kc + vc) as f64 / elems as f64
    };
    let mut report = KvAnalyzeReport {
        out_dir: out_dir.to_path_buf(),
        tpk: PathBuf::new(),
        policy: opts.policy.to_json(),
        dumps: dumps.len(),
        ratios,
        file_ratio: 0.0,
        bits_per_value: bpv,
        lossy_bits_per_value: bpv,
        k: k_acc.finish(),
        v: v_acc.finish(),
        encode_mb_s: mb_s(kr + vr, seconds),
        decode_mb_s: 0.0,
        files: Vec::new(),
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Block-norm summary (the reference's analysis)\n\n- {}\n- dumps of lossy layers (layer_id >= {}): {}\n- sizes: the stored codes through the lossless method plus the scales and top-k metadata counted raw, as the reference counts them; not a .tpk\n",
        m.spec,
        opts.policy.lossless_first_n,
        dumps.len()
    );
    let _ = writeln!(
        md,
        "| | ratio | MAE | cosine | RMSE | max_abs (avg) | vector cosine p1 |\n|---|---|---|---|---|---|---|"
    );
    for (n, r, e) in [("K", ratios.k, &report.k), ("V", ratios.v, &report.v)] {
        let _ = writeln!(
            md,
            "| {n} | {r:.4} | {:.6} | {:.7} | {:.6} | {:.6} | {:.6} |",
            e.mae, e.cosine, e.rmse, e.max_abs_avg, e.vector_cosine.p1
        );
    }
    let _ = writeln!(md, "\nWeighted KV ratio: {:.4}", ratios.kv);
    let mut files = Vec::new();
    for (name, text) in [
        ("blocknorm_metrics.csv", &csv),
        ("blocknorm_summary.md", &md),
    ] {
        let p = out_dir.join(name);
        crate::atomic::write(&p, text.as_bytes())?;
        files.push(p);
    }
    files.push(out_dir.join("summary.json"));
    report.files = files;
    let js = serde_json::to_string_pretty(&report).expect("json") + "\n";
    crate::atomic::write(&out_dir.join("summary.json"), js.as_bytes())?;
    Ok(report)
}
