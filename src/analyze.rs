//! `analyze`: the per-tensor, per-format error report.
//!
//! Every selected float tensor is encoded once per format, through the same code as `compress`
//! (so sizes are real payload bytes, padding tiles included), decoded again, and measured against
//! the source. Formats of one tensor run in parallel (and each format's chunks too); one tensor
//! is in memory at a time. With a config, the `none` baseline runs beside its algorithm.
//!
//! Unlike `compress`, `analyze` tiles vectors too by default (`tile_vectors`), so a norm or bias
//! shows the format's error rather than the raw copy compress would store.
//!
//! Results go to `results/<model>/<algorithm>/<timestamp>/` (or `out_dir`): `table.txt`,
//! `table.csv`, `table.json` and `compression_config.used.json`.

use crate::compress::CompressOptions;
use crate::config::{Algorithm, Config};
use crate::encode::{encode_loaded, encode_tensor};
use crate::error::{Error, Result};
use crate::input::{self, TensorSource};
use crate::metrics::{fmt_pcc, fmt_sci as sci};
use crate::plan::Plan;
use crate::progress::Event;
use crate::Context;
use rayon::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// (original, decoded) samples of one encoding, for plots.
type Pairs = Vec<(f32, f32)>;

/// Options of [`analyze`].
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    /// Formats (pipeline specs), in report order.
    pub formats: Vec<String>,
    /// The config (algorithm and seed); `None` runs the `none` baseline only.
    pub config: Option<Config>,
    /// Tensor filter (see [`input::name_matches`]).
    pub filter: Option<String>,
    /// Only the first N selected tensors.
    pub limit: Option<usize>,
    /// Elements per chunk.
    pub chunk_elems: u64,
    /// Tile vectors and scalars too (default true).
    pub tile_vectors: bool,
    /// Results folder; `None` makes `results/<model>/<algorithm>/<timestamp>/`.
    pub out_dir: Option<PathBuf>,
    /// Write no files (the report is still returned).
    pub no_files: bool,
    /// Also draw `plots/<tensor>.png` per tensor: reconstructed vs original, one series per
    /// format (and algorithm).
    pub plots: bool,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            formats: crate::config::DEFAULT_FORMATS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            config: None,
            filter: None,
            limit: None,
            chunk_elems: crate::compress::DEFAULT_CHUNK_ELEMS,
            tile_vectors: true,
            out_dir: None,
            no_files: false,
            plots: false,
        }
    }
}

/// `-c all`: every lossy format, the analyzer's seven first.
pub fn all_formats() -> Vec<String> {
    let mut v: Vec<String> = crate::config::DEFAULT_FORMATS
        .iter()
        .map(|s| s.to_string())
        .collect();
    for e in crate::codec::REGISTRY {
        // `f32` loses nothing on f32 weights; it is not a quantization format.
        if e.name != "f32"
            && crate::config::check_format(e.name).is_ok()
            && !v.iter().any(|f| f == e.name)
        {
            v.push(e.name.to_string());
        }
    }
    v
}

/// One tensor under one algorithm and format.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Tensor name.
    pub tensor: String,
    /// `none` or the config's algorithm.
    pub algorithm: String,
    /// The format as requested.
    pub format: String,
    /// What was really stored (`raw` for non-float tensors).
    pub codec: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Elements.
    pub numel: u64,
    /// Pearson correlation; `null` where undefined (`fp0`).
    pub pcc: Option<f64>,
    /// Mean absolute error.
    pub mae: f64,
    /// Largest absolute error.
    pub atol: f64,
    /// Root mean square error.
    pub rmse: f64,
    /// Payload bytes of the real encoding.
    pub encoded_bytes: u64,
    /// encoded_bytes / numel.
    pub bytes_per_elem: f64,
    /// 8 * bytes_per_elem.
    pub bits_per_weight: f64,
    /// 4 * numel / encoded_bytes (0 when nothing is stored).
    pub ratio_vs_fp32: f64,
}

/// One algorithm and format over all tensors: element-weighted PCC, MAE and RMSE, largest atol.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow {
    /// `none` or the config's algorithm.
    pub algorithm: String,
    /// The format.
    pub format: String,
    /// Tensors.
    pub tensors: usize,
    /// Elements.
    pub numel: u64,
    /// Element-weighted mean PCC (`null` if any tensor has none).
    pub pcc: Option<f64>,
    /// Element-weighted MAE.
    pub mae: f64,
    /// Largest atol.
    pub atol: f64,
    /// Root of the element-weighted mean squared error.
    pub rmse: f64,
    /// Total payload bytes.
    pub encoded_bytes: u64,
    /// encoded_bytes / numel.
    pub bytes_per_elem: f64,
    /// 8 * bytes_per_elem.
    pub bits_per_weight: f64,
    /// 4 * numel / encoded_bytes.
    pub ratio_vs_fp32: f64,
}

/// The analysis.
#[derive(Debug, Clone, Serialize)]
pub struct AnalyzeReport {
    /// Input description.
    pub source: String,
    /// The config used (resolved).
    pub config: serde_json::Value,
    /// Where the files went (`null` with `no_files`).
    pub out_dir: Option<PathBuf>,
    /// Rows: tensors in name order, then algorithm, then format.
    pub rows: Vec<Row>,
    /// Per algorithm and format.
    pub summary: Vec<SummaryRow>,
}

/// Analyze `input`.
pub fn analyze(input: &Path, opts: &AnalyzeOptions, cx: &Context<'_>) -> Result<AnalyzeReport> {
    let source = input::open(input)?;
    analyze_source(&*source, input, opts, cx)
}

/// Analyze an opened source.
pub fn analyze_source(
    source: &dyn TensorSource,
    input: &Path,
    opts: &AnalyzeOptions,
    cx: &Context<'_>,
) -> Result<AnalyzeReport> {
    cx.install(|| analyze_source_on_threads(source, input, opts, cx))
}

fn analyze_source_on_threads(
    source: &dyn TensorSource,
    input: &Path,
    opts: &AnalyzeOptions,
    cx: &Context<'_>,
) -> Result<AnalyzeReport> {
    if opts.formats.is_empty() {
        return Err(Error::config("no format to analyze"));
    }
    for f in &opts.formats {
        crate::config::check_format(f).map_err(|m| Error::config(format!("format '{f}': {m}")))?;
    }
    let config = opts.config.clone().unwrap_or_default();
    let mut runs = vec![Algorithm::None];
    if config.algorithm != Algorithm::None {
        runs.push(config.algorithm);
    }
    let infos = source.tensors();
    let selected: Vec<usize> = input::select(infos, opts.filter.as_deref(), opts.limit)
        .into_iter()
        .filter(|&i| infos[i].dtype.is_float())
        .collect();
    if selected.is_empty() {
        return Err(Error::input(match &opts.filter {
            Some(q) => format!("no float tensor matches the filter '{q}'"),
            None => "the model has no float tensors".to_string(),
        })
        .with_file(input));
    }
    if opts.plots && opts.no_files {
        return Err(Error::config(
            "plots are files: --plots needs a results folder",
        ));
    }
    let dir = match (&opts.out_dir, opts.no_files) {
        (_, true) => None,
        (Some(d), _) => Some(d.clone()),
        (None, _) => Some(results_dir(input, runs.last().expect("a run").name())?),
    };
    let total: u64 = selected.iter().map(|&i| infos[i].source_bytes).sum();
    cx.event(Event::Start {
        total_bytes: total,
        tensors: selected.len(),
    });
    // Whole-model mixed-tile plans come first: they need every tensor's error table.
    let mut plans = crate::mixed::plan_ahead(
        source,
        &selected,
        config.mixed.as_ref(),
        opts.tile_vectors,
        opts.chunk_elems,
        cx,
    )
    .map_err(|e| e.with_file(input))?;
    // One plan per (algorithm, format): each tensor through that format as compress would
    // store it, but for the vector policy (analyze tiles vectors unless told not to).
    let jobs: Vec<(Algorithm, usize, Plan)> = runs
        .iter()
        .filter(|a| !a.is_mixed())
        .flat_map(|&a| (0..opts.formats.len()).map(move |f| (a, f)))
        .map(|(alg, f)| {
            let copts = CompressOptions {
                codec: opts.formats[f].clone(),
                chunk_elems: opts.chunk_elems,
                transpose: alg == Algorithm::Transpose,
                tile_vectors: opts.tile_vectors,
                ..CompressOptions::default()
            };
            Ok((
                alg,
                f,
                Plan::for_selection(source, input, &copts, &selected)?,
            ))
        })
        .collect::<Result<_>>()?;
    let mut rows = Vec::new();
    for (k, &i) in selected.iter().enumerate() {
        let info = &infos[i];
        cx.event(Event::Tensor { name: &info.name });
        let data = source.data(i).map_err(|e| e.with_tensor(&info.name))?;
        let done: Vec<Result<(Row, Pairs)>> = jobs
            .par_iter()
            .map(|(alg, f, plan)| {
                let mut kept = Vec::new();
                let e = encode_loaded(
                    plan,
                    &plan.tensors[k],
                    &data,
                    None,
                    cx,
                    &mut |payload, s, c| {
                        if opts.plots {
                            kept.push((payload.to_vec(), s, c));
                        }
                        Ok(())
                    },
                )
                .map_err(|e| e.with_tensor(&info.name).with_file(input))?;
                let pairs = if opts.plots {
                    sample_pairs(info, &data, &e.encoded, e.layout, &kept)
                        .map_err(|e| e.with_tensor(&info.name))?
                } else {
                    Vec::new()
                };
                Ok((row(info, *alg, &opts.formats[*f], &e.encoded), pairs))
            })
            .collect();
        let mut series = Vec::new();
        for r in done {
            let (row, pairs) = r?;
            let label = if row.algorithm == "none" {
                row.format.clone()
            } else {
                format!("{} ({})", row.format, row.algorithm)
            };
            series.push((label, pairs));
            rows.push(row);
        }
        if let Some(spec) = config
            .mixed
            .as_ref()
            .filter(|_| crate::mixed::eligible(info, opts.tile_vectors))
        {
            let plan = match plans[i].take() {
                Some(p) => p,
                None => crate::mixed::plan_tensor(info, &data, spec, opts.chunk_elems)
                    .map_err(|e| e.with_tensor(&info.name).with_file(input))?,
            };
            let e = encode_tensor(
                info,
                &data,
                &plan.pipeline()?,
                tpk_format::Layout::Tiles32,
                opts.chunk_elems,
                cx,
                &mut |_, _, _| Ok(()),
            )
            .map_err(|e| e.with_tensor(&info.name).with_file(input))?;
            rows.push(row(info, spec.algorithm, "MIXED", &e));
            if let Some(d) = &dir {
                let safe = file_safe(&info.name);
                let tdir = d.join(spec.algorithm.name().replace('-', "_")).join(&safe);
                crate::mixed::write_artifacts(
                    &tdir, &info.name, &safe, &info.dims, &plan, spec, cx,
                )
                .map_err(|e| e.with_tensor(&info.name))?;
            }
        }
        if opts.plots {
            let pdir = dir.as_ref().expect("a results folder").join("plots");
            std::fs::create_dir_all(&pdir)
                .map_err(|e| Error::io(format!("create {}", pdir.display()), e))?;
            cx.figures().draw(
                &pdir.join(format!("{}.png", file_safe(&info.name))),
                &crate::figure::Figure::TensorPairs {
                    tensor: &info.name,
                    series: &series,
                },
            )?;
        }
        cx.event(Event::Advance {
            bytes: info.source_bytes,
        });
    }
    cx.event(Event::Finish);
    let summary = summarize(&rows, &runs, &opts.formats);
    let mut report = AnalyzeReport {
        source: source.describe(),
        config: {
            let mut j = config.used_json();
            j["quantization_formats"] = serde_json::json!(opts.formats);
            j
        },
        out_dir: None,
        rows,
        summary,
    };
    if let Some(dir) = dir {
        write_files(&dir, &report)?;
        report.out_dir = Some(dir);
    }
    Ok(report)
}

/// One report row from an encoding.
fn row(
    info: &crate::input::TensorInfo,
    alg: Algorithm,
    format: &str,
    e: &crate::encode::Encoded,
) -> Row {
    let n = info.numel();
    let bpe = if n == 0 {
        0.0
    } else {
        e.encoded_bytes as f64 / n as f64
    };
    Row {
        tensor: info.name.clone(),
        algorithm: alg.name().to_string(),
        format: format.to_string(),
        codec: e.pipeline.describe(),
        shape: info.dims.clone(),
        numel: n,
        pcc: (!e.metrics.pcc_undefined).then_some(e.metrics.pcc),
        mae: e.metrics.mae,
        atol: e.metrics.max_abs,
        rmse: e.metrics.rmse,
        encoded_bytes: e.encoded_bytes,
        bytes_per_elem: bpe,
        bits_per_weight: 8.0 * bpe,
        ratio_vs_fp32: crate::compress::ratio(4 * n, e.encoded_bytes),
    }
}

/// A name (tensor, model) as a file name: anything but ASCII letters, digits, `-_.` becomes `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// At most 4000 (original, decoded) pairs of one encoding, evenly spaced over the tensor, from
/// its chunks decoded back into row-major order.
fn sample_pairs(
    info: &crate::input::TensorInfo,
    data: &[u8],
    e: &crate::encode::Encoded,
    layout: tpk_format::Layout,
    chunks: &[(Vec<u8>, u64, u64)],
) -> Result<Vec<(f32, f32)>> {
    let out_dtype = e.pipeline.tensor_codec().decoded_dtype(e.dtype);
    let esize = out_dtype.size();
    let n = info.numel() as usize;
    let space = layout
        .space(&info.dims)
        .ok_or_else(|| Error::internal("shape overflows"))? as usize;
    let mut buf = vec![0u8; space * esize];
    for (payload, s, c) in chunks {
        let (s, c) = (*s as usize, *c as usize);
        e.pipeline
            .decode_into(payload, e.dtype, c, &mut buf[s * esize..(s + c) * esize])?;
    }
    let buf = match crate::tiles::TileGeom::new(layout, &info.dims, u64::MAX)? {
        Some(g) => {
            let mut out = vec![0u8; n * esize];
            g.scatter(&buf, esize, &mut out);
            out
        }
        None => buf,
    };
    let y = crate::dtype::to_f64(out_dtype, &buf);
    let mut x = Vec::new();
    crate::dtype::to_f32(info.dtype, data, &mut x);
    let step = n.div_ceil(4000).max(1);
    Ok((0..n).step_by(step).map(|i| (x[i], y[i] as f32)).collect())
}

fn summarize(rows: &[Row], runs: &[Algorithm], formats: &[String]) -> Vec<SummaryRow> {
    let mut out = Vec::new();
    let mixed = ["MIXED".to_string()];
    for a in runs {
        let fs: &[String] = if a.is_mixed() { &mixed } else { formats };
        for f in fs {
            let rs: Vec<&Row> = rows
                .iter()
                .filter(|r| r.algorithm == a.name() && &r.format == f)
                .collect();
            let numel: u64 = rs.iter().map(|r| r.numel).sum();
            let bytes: u64 = rs.iter().map(|r| r.encoded_bytes).sum();
            let w = |r: &Row| r.numel as f64 / numel.max(1) as f64;
            // One tensor without a PCC (fp0) leaves the aggregate without one too: averaging
            // only the others (say, vectors stored raw) would report a meaningless 1.
            let pcc = rs.iter().all(|r| r.pcc.is_some()).then(|| {
                rs.iter()
                    .map(|r| r.pcc.unwrap_or(0.0) * r.numel as f64)
                    .sum::<f64>()
                    / numel.max(1) as f64
            });
            let bpe = bytes as f64 / numel.max(1) as f64;
            out.push(SummaryRow {
                algorithm: a.name().to_string(),
                format: f.clone(),
                tensors: rs.len(),
                numel,
                pcc,
                mae: rs.iter().map(|r| r.mae * w(r)).sum(),
                atol: rs.iter().map(|r| r.atol).fold(0.0, f64::max),
                rmse: rs
                    .iter()
                    .map(|r| r.rmse * r.rmse * w(r))
                    .sum::<f64>()
                    .sqrt(),
                encoded_bytes: bytes,
                bytes_per_elem: bpe,
                bits_per_weight: 8.0 * bpe,
                ratio_vs_fp32: crate::compress::ratio(4 * numel, bytes),
            });
        }
    }
    out
}

/// A model's name for the results path: the file stem, or the folder's name for a folder or a
/// generic `model.safetensors`.
pub fn model_name(input: &Path) -> String {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let generic = input.is_dir() || stem == "model" || stem.starts_with("model.safetensors");
    let name = if generic {
        let dir = if input.is_dir() {
            input.to_path_buf()
        } else {
            input.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        std::fs::canonicalize(&dir)
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or(stem)
    } else {
        stem
    };
    let clean = file_safe(&name);
    if clean.is_empty() {
        "model".into()
    } else {
        clean
    }
}

/// `YYYYMMDD-HHMMSS` in UTC.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A new `results/<model>/<algorithm>/<timestamp>[-k]/` under the current folder.
fn results_dir(input: &Path, algorithm: &str) -> Result<PathBuf> {
    let base = Path::new("results")
        .join(model_name(input))
        .join(algorithm)
        .join(timestamp());
    let mut dir = base.clone();
    let mut k = 2;
    while dir.exists() {
        dir = PathBuf::from(format!("{}-{k}", base.display()));
        k += 1;
    }
    Ok(dir)
}

/// The report as a text table (what `table.txt` holds and the command prints).
pub fn table(r: &AnalyzeReport, summary_only: bool) -> String {
    let mut s = String::new();
    let aw = r
        .summary
        .iter()
        .map(|x| x.algorithm.len())
        .max()
        .unwrap_or(9)
        .max(9);
    if !summary_only {
        let w = r
            .rows
            .iter()
            .map(|x| x.tensor.len())
            .max()
            .unwrap_or(6)
            .clamp(6, 60);
        let _ = writeln!(
            s,
            "{:<w$} {:<aw$} {:<16} {:>10} {:>10} {:>10} {:>10} {:>12} {:>7} {:>7} {:>8}",
            "tensor",
            "algorithm",
            "format",
            "pcc",
            "mae",
            "atol",
            "rmse",
            "bytes",
            "B/elem",
            "bpw",
            "vs fp32"
        );
        for x in &r.rows {
            let _ = writeln!(
                s,
                "{:<w$} {:<aw$} {:<16} {:>10} {:>10} {:>10} {:>10} {:>12} {:>7.4} {:>7.3} {:>7.2}x",
                x.tensor,
                x.algorithm,
                x.format,
                fmt_pcc(x.pcc),
                sci(x.mae),
                sci(x.atol),
                sci(x.rmse),
                x.encoded_bytes,
                x.bytes_per_elem,
                x.bits_per_weight,
                x.ratio_vs_fp32
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "summary (element-weighted pcc, mae, rmse; largest atol; total bytes)"
    );
    let _ = writeln!(
        s,
        "{:<aw$} {:<16} {:>7} {:>12} {:>10} {:>10} {:>10} {:>10} {:>12} {:>7} {:>7} {:>8}",
        "algorithm",
        "format",
        "tensors",
        "elements",
        "pcc",
        "mae",
        "atol",
        "rmse",
        "bytes",
        "B/elem",
        "bpw",
        "vs fp32"
    );
    for x in &r.summary {
        let _ = writeln!(
            s,
            "{:<aw$} {:<16} {:>7} {:>12} {:>10} {:>10} {:>10} {:>10} {:>12} {:>7.4} {:>7.3} {:>7.2}x",
            x.algorithm,
            x.format,
            x.tensors,
            x.numel,
            fmt_pcc(x.pcc),
            sci(x.mae),
            sci(x.atol),
            sci(x.rmse),
            x.encoded_bytes,
            x.bytes_per_elem,
            x.bits_per_weight,
            x.ratio_vs_fp32
        );
    }
    s
}

/// The rows as CSV (`pcc` empty where undefined).
pub fn csv(r: &AnalyzeReport) -> String {
    let mut s = String::from(
        "tensor,algorithm,format,codec,shape,numel,pcc,mae,atol,rmse,encoded_bytes,bytes_per_elem,bits_per_weight,ratio_vs_fp32\n",
    );
    for x in &r.rows {
        let shape: Vec<String> = x.shape.iter().map(|d| d.to_string()).collect();
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{:e},{:e},{:e},{},{},{},{}",
            csv_field(&x.tensor),
            x.algorithm,
            csv_field(&x.format),
            csv_field(&x.codec),
            shape.join("x"),
            x.numel,
            x.pcc.map(|p| p.to_string()).unwrap_or_default(),
            x.mae,
            x.atol,
            x.rmse,
            x.encoded_bytes,
            x.bytes_per_elem,
            x.bits_per_weight,
            x.ratio_vs_fp32
        );
    }
    s
}

/// A CSV field, quoted (RFC 4180) when it holds a comma, a quote or a newline: codec specs
/// such as `tenpakx:rank=16,group=64` do.
pub fn csv_field(v: &str) -> String {
    // The csv crate's writer quotes only where RFC 4180 needs it (a comma, a quote, a line
    // break) and doubles quotes inside.
    // A one-field record, its line end cut; an empty field stays empty (alone on a line the
    // writer would quote it so the record is not a blank line).
    if v.is_empty() {
        return String::new();
    }
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    if w.write_record([v]).is_err() {
        return v.to_string();
    }
    match w.into_inner() {
        Ok(mut b) => {
            b.pop(); // the terminator
            String::from_utf8(b).unwrap_or_else(|_| v.to_string())
        }
        Err(_) => v.to_string(),
    }
}

/// Write the four files, each through a temporary file renamed into place.
fn write_files(dir: &Path, r: &AnalyzeReport) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let put = |name: &str, text: &str| crate::atomic::write(&dir.join(name), text.as_bytes());
    put("table.txt", &table(r, false))?;
    put("table.csv", &csv(r))?;
    put(
        "table.json",
        &(serde_json::to_string_pretty(r).expect("report serializes") + "\n"),
    )?;
    put(
        "compression_config.used.json",
        &(serde_json::to_string_pretty(&r.config).expect("config serializes") + "\n"),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_where_needed() {
        assert_eq!(
            csv_field("kv:kivi:bits=2,group=32"),
            "\"kv:kivi:bits=2,group=32\""
        );
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field(""), "");
    }

    #[test]
    fn timestamp_shape() {
        let t = timestamp();
        assert_eq!(t.len(), 15, "{t}");
        assert!(t.starts_with("20"));
        assert_eq!(&t[8..9], "-");
    }
}
