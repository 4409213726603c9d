//! Applying a mixed-tile config to a model: for each eligible tensor, its per-tile error table
//! ([`crate::assign::Table`]), the configured search, and the resulting assignment, ready for
//! the `mixed` codec (formats-spec/mixed.md). `compress` writes it; `analyze` reports it as a
//! `MIXED` row with its artifacts.

use crate::assign::{self, Goal, Sample, Score, Table};
use crate::codec::mixed::{MixedCodec, TileFormat};
use crate::codec::Pipeline;
use crate::config::{Algorithm, Budget, MixedSpec, Scope};
use crate::error::{Error, Result};
use crate::figure::Figure;
use crate::input::{TensorInfo, TensorSource};
use crate::tiles::TileGeom;
use crate::values::Values;
use crate::Context;
use serde::Serialize;
use std::sync::Arc;
use tpk_format::Layout;

/// The plan for one tensor: its format table, tile grid, assignment and what the search saw.
#[derive(Debug, Clone)]
pub struct MixedTensor {
    /// The algorithm that chose it.
    pub algorithm: Algorithm,
    /// The format table (per-tensor parameters set).
    pub formats: Vec<TileFormat>,
    /// Tiles across and down.
    pub grid: (usize, usize),
    /// Table index per tile, row-major over the grid.
    pub assignment: Arc<[u8]>,
    /// The tensor's metrics under the assignment, as the search computed them.
    pub predicted: Score,
    /// Payload bytes (codes included), as the search counted them.
    pub bytes: u64,
    /// Elements (not padding).
    pub numel: u64,
    /// Each candidate format alone: (name, bytes, metrics), for size-vs-accuracy plots.
    pub uniform: Vec<(String, u64, Score)>,
    /// `mixed-tile-random`'s samples.
    pub samples: Vec<Sample>,
}

/// What reports show of a mixed tensor.
#[derive(Debug, Clone, Serialize)]
pub struct MixedSummary {
    /// The algorithm.
    pub algorithm: String,
    /// Per format of the table: name, tiles, payload bytes of those tiles.
    pub formats: Vec<FormatShare>,
    /// The metrics the search computed (the file's, measured while writing, are the tensor's
    /// `metrics`; they agree to rounding).
    pub predicted: Score,
}

/// One format's part of a mixed tensor.
#[derive(Debug, Clone, Serialize)]
pub struct FormatShare {
    /// Format name.
    pub format: String,
    /// Tiles in this format.
    pub tiles: u64,
    /// Their payload bytes.
    pub bytes: u64,
}

impl MixedTensor {
    /// The pipeline that writes this assignment.
    pub fn pipeline(&self) -> Result<Pipeline> {
        let codec = MixedCodec::new(self.formats.clone(), self.assignment.clone())?;
        Ok(Pipeline::parse("raw")?.with_tensor_codec(Arc::new(codec)))
    }

    /// Tiles per table entry.
    pub fn counts(&self) -> Vec<u64> {
        let mut c = vec![0u64; self.formats.len()];
        for &a in self.assignment.iter() {
            c[a as usize] += 1;
        }
        c
    }

    /// For reports.
    pub fn summary(&self) -> MixedSummary {
        MixedSummary {
            algorithm: self.algorithm.name().into(),
            formats: shares(&self.formats, &self.counts()),
            predicted: self.predicted,
        }
    }
}

/// Per-format tiles and bytes from tile counts.
pub fn shares(formats: &[TileFormat], counts: &[u64]) -> Vec<FormatShare> {
    formats
        .iter()
        .zip(counts)
        .map(|(f, &c)| FormatShare {
            format: f.name().into(),
            tiles: c,
            bytes: c * f.tile_bytes() as u64,
        })
        .collect()
}

/// Whether a tensor gets a mixed assignment: floats of two or more dimensions (vectors too
/// with `tile_vectors`), not empty.
pub fn eligible(info: &TensorInfo, tile_vectors: bool) -> bool {
    info.dtype.is_float() && (info.dims.len() >= 2 || tile_vectors) && info.numel() > 0
}

/// Tile rows per chunk, as the compressor cuts them (`encode_tiled`).
fn rows_per_chunk(geom: &TileGeom, chunk_elems: u64) -> usize {
    (chunk_elems as usize / geom.tile_row_elems().max(1)).max(1)
}

/// The error table of one tensor under `spec`'s formats.
pub fn table(info: &TensorInfo, data: &[u8], spec: &MixedSpec, chunk_elems: u64) -> Result<Table> {
    table_values(info, Values::Loaded(data), spec, chunk_elems)
}

/// [`table`] of values read band by band (a source's tensor is never whole in memory): one pass
/// for the largest magnitude, one over the tile rows.
pub fn table_values(
    info: &TensorInfo,
    v: Values<'_>,
    spec: &MixedSpec,
    chunk_elems: u64,
) -> Result<Table> {
    let geom = TileGeom::new(Layout::Tiles32, &info.dims, u64::MAX)?.expect("a tile layout");
    let formats: Vec<TileFormat> = spec
        .formats
        .iter()
        .map(|n| {
            TileFormat::parse(n).ok_or_else(|| Error::config(format!("'{n}' is not a tile format")))
        })
        .collect::<Result<_>>()?;
    let (top, nonfinite) = v.scan(info)?;
    if nonfinite > 0 {
        return Err(crate::assign::nonfinite(nonfinite));
    }
    Table::build_with(
        &geom,
        &formats,
        rows_per_chunk(&geom, chunk_elems),
        f32::from_bits(top),
        &mut |trs, out| v.tiles(info, &geom, trs, out),
    )
}

fn budget_bytes(b: Budget, numel: u64) -> u64 {
    match b {
        Budget::Bytes(n) => n,
        Budget::Bpw(bpw) => (bpw * numel as f64 / 8.0).floor() as u64,
    }
}

fn finish(algorithm: Algorithm, table: &Table, a: Vec<u8>, samples: Vec<Sample>) -> MixedTensor {
    // The written table holds only the formats in use, in candidate order: fewer code bits,
    // none for a single format.
    let mut remap = vec![u8::MAX; table.formats.len()];
    for &f in &a {
        remap[f as usize] = 0;
    }
    let mut formats = Vec::new();
    for (f, r) in remap.iter_mut().enumerate() {
        if *r == 0 {
            *r = formats.len() as u8;
            formats.push(table.formats[f]);
        }
    }
    let codes: Vec<u8> = a.iter().map(|&f| remap[f as usize]).collect();
    let uniform = (0..table.formats.len())
        .map(|f| {
            let u = vec![f as u8; table.tiles()];
            (
                table.formats[f].name().to_string(),
                table.uniform_bytes(f),
                table.score(&u),
            )
        })
        .collect();
    MixedTensor {
        algorithm,
        formats,
        grid: table.grid,
        predicted: table.score(&a),
        bytes: table.bytes(&a),
        numel: table.n,
        assignment: Arc::from(codes),
        uniform,
        samples,
    }
}

/// Run `spec`'s search on one tensor's table (per-tensor scope).
pub fn search(table: &Table, spec: &MixedSpec) -> Result<MixedTensor> {
    let (m, t) = (spec.metric, spec.threshold);
    let mut samples = Vec::new();
    let a = match spec.algorithm {
        Algorithm::MixedThreshold => assign::threshold(table, m, t),
        Algorithm::MixedGreedy => assign::greedy(table, m, t, spec.seed),
        Algorithm::MixedRandom => {
            let (a, s) = assign::random(table, m, t, spec.iters, spec.seed);
            samples = s;
            a
        }
        Algorithm::MixedOptimal => {
            let goal = match spec.budget {
                Some(b) => Goal::Bytes(budget_bytes(b, table.n)),
                None => Goal::Threshold(m, t),
            };
            assign::optimal(&[table], goal)?.remove(0)
        }
        other => {
            return Err(Error::config(format!(
                "'{}' is not a mixed-tile algorithm",
                other.name()
            )))
        }
    };
    Ok(finish(spec.algorithm, table, a, samples))
}

/// Plan one tensor (per-tensor scope).
pub fn plan_tensor(
    info: &TensorInfo,
    data: &[u8],
    spec: &MixedSpec,
    chunk_elems: u64,
) -> Result<MixedTensor> {
    plan_values(info, Values::Loaded(data), spec, chunk_elems)
}

/// [`plan_tensor`] of values read band by band.
pub fn plan_values(
    info: &TensorInfo,
    v: Values<'_>,
    spec: &MixedSpec,
    chunk_elems: u64,
) -> Result<MixedTensor> {
    search(&table_values(info, v, spec, chunk_elems)?, spec)
}

/// Plan tensors `indices` of `source` together (whole-model scope, `mixed-tile-optimal`): one
/// threshold on the element-weighted mean metric, or one budget over all their bytes. Holds the
/// tables (a few dozen bytes per tile and format), one tensor's data at a time.
pub fn plan_model(
    source: &dyn TensorSource,
    indices: &[usize],
    spec: &MixedSpec,
    chunk_elems: u64,
    cx: &Context<'_>,
) -> Result<Vec<MixedTensor>> {
    if spec.algorithm != Algorithm::MixedOptimal {
        return Err(Error::config(format!(
            "scope \"model\" is for mixed-tile-optimal, not {}",
            spec.algorithm.name()
        )));
    }
    let infos = source.tensors();
    let mut tables = Vec::with_capacity(indices.len());
    for &i in indices {
        if cx.cancelled() {
            return Err(crate::progress::interrupted());
        }
        let info = &infos[i];
        let t = table_values(info, Values::Source(source, i), spec, chunk_elems)
            .map_err(|e| e.with_tensor(&info.name));
        source.release(i);
        tables.push(t?);
    }
    let refs: Vec<&Table> = tables.iter().collect();
    let numel: u64 = tables.iter().map(|t| t.n).sum();
    let goal = match spec.budget {
        Some(b) => Goal::Bytes(budget_bytes(b, numel)),
        None => Goal::Threshold(spec.metric, spec.threshold),
    };
    // Output-aware weights when the spec carries sensitivities; a tensor they do not list takes
    // their median (as the allocation does).
    let alphas: Option<Vec<f64>> = spec.alphas.as_ref().map(|m| {
        let mut v: Vec<f64> = m.values().copied().collect();
        v.sort_by(f64::total_cmp);
        let median = v.get(v.len() / 2).copied().unwrap_or(1.0);
        indices
            .iter()
            .map(|&i| m.get(&infos[i].name).copied().unwrap_or(median))
            .collect()
    });
    let assignments = assign::optimal_weighted(&refs, goal, alphas.as_deref())?;
    Ok(tables
        .iter()
        .zip(assignments)
        .map(|(t, a)| finish(spec.algorithm, t, a, Vec::new()))
        .collect())
}

/// Plans made before any tensor is written: whole-model scope needs every selected eligible
/// tensor's table first. Indexed like `source.tensors()`; `None` where the tensor is planned on
/// its own (or is not eligible).
pub fn plan_ahead(
    source: &dyn TensorSource,
    selected: &[usize],
    spec: Option<&MixedSpec>,
    tile_vectors: bool,
    chunk_elems: u64,
    cx: &Context<'_>,
) -> Result<Vec<Option<MixedTensor>>> {
    let infos = source.tensors();
    let mut plans: Vec<Option<MixedTensor>> = vec![None; infos.len()];
    if let Some(spec) = spec.filter(|s| whole_model(s)) {
        let elig: Vec<usize> = selected
            .iter()
            .copied()
            .filter(|&i| eligible(&infos[i], tile_vectors))
            .collect();
        for (i, p) in elig
            .iter()
            .zip(plan_model(source, &elig, spec, chunk_elems, cx)?)
        {
            plans[*i] = Some(p);
        }
    }
    Ok(plans)
}

/// Whether `spec` plans the whole model at once.
pub fn whole_model(spec: &MixedSpec) -> bool {
    spec.scope == Scope::Model
}

/// An `.npy` file (format version 1.0) of a `uint8` array of shape `(rows, cols)`.
pub fn npy_u8(rows: usize, cols: usize, data: &[u8]) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header, newline-terminated, padded to 64 bytes.
    let total = (10 + header.len() + 1).next_multiple_of(64);
    while 10 + header.len() + 1 < total {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// `assignment_mapping.json`: code -> format, tile size, shape, tile grid, orientation.
pub fn mapping_json(
    tensor: &str,
    dims: &[u64],
    formats: &[TileFormat],
    grid: (usize, usize),
    counts: &[u64],
) -> serde_json::Value {
    let codes: serde_json::Map<String, serde_json::Value> = formats
        .iter()
        .enumerate()
        .map(|(i, f)| (i.to_string(), serde_json::json!(f.name())))
        .collect();
    let view = Layout::Tiles32.view(dims).map(|(r, c)| [r, c]);
    serde_json::json!({
        "tensor": tensor,
        "codes": codes,
        "tile_size": crate::tiles::T,
        "shape": dims,
        "view_2d": view,
        "grid": [grid.1, grid.0],
        "orientation": "as stored (rows = all leading dimensions, columns = the last)",
        "tiles": shares(formats, counts),
    })
}

/// A tensor's artifacts in `dir` (formats-spec/mixed.md §5): `assignment.npy`,
/// `assignment_mapping.json`, `<tensor>_assignment.png`, `size_vs_accuracy.png`, and for
/// `mixed-tile-random` `<tensor>.csv` (every sample) and `<tensor>_samples.png`.
pub fn write_artifacts(
    dir: &std::path::Path,
    tensor: &str,
    safe: &str,
    dims: &[u64],
    plan: &MixedTensor,
    spec: &MixedSpec,
    cx: &Context<'_>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let (wide, high) = plan.grid;
    crate::atomic::write(
        &dir.join("assignment.npy"),
        &npy_u8(high, wide, &plan.assignment),
    )?;
    let mut mapping = mapping_json(tensor, dims, &plan.formats, plan.grid, &plan.counts());
    mapping["algorithm"] = serde_json::json!(plan.algorithm.name());
    mapping["search"] = serde_json::to_value(spec).expect("plain data");
    mapping["predicted"] = serde_json::to_value(plan.predicted).expect("plain data");
    mapping["payload_bytes"] = serde_json::json!(plan.bytes);
    crate::atomic::write(
        &dir.join("assignment_mapping.json"),
        (serde_json::to_string_pretty(&mapping).expect("json") + "\n").as_bytes(),
    )?;
    let names: Vec<&str> = plan.formats.iter().map(|f| f.name()).collect();
    let figures = cx.figures();
    figures.draw(
        &dir.join(format!("{safe}_assignment.png")),
        &Figure::AssignmentMap {
            title: tensor,
            grid: plan.grid,
            assignment: &plan.assignment,
            formats: &names,
        },
    )?;
    let bpw = |b: u64| 8.0 * b as f64 / plan.numel.max(1) as f64;
    let m = spec.metric;
    let mut points: Vec<crate::figure::SizePoint> = plan
        .uniform
        .iter()
        .map(|(n, b, s)| (n.clone(), bpw(*b), s.get(m)))
        .collect();
    points.push((
        format!("MIXED ({})", plan.algorithm.name()),
        bpw(plan.bytes),
        plan.predicted.get(m),
    ));
    let cloud: Vec<(f64, f64)> = plan
        .samples
        .iter()
        .map(|s| (bpw(s.bytes), s.score.get(m)))
        .collect();
    figures.draw(
        &dir.join("size_vs_accuracy.png"),
        &Figure::SizeVsAccuracy {
            title: &format!("{tensor}: {} vs size", m.name()),
            metric: m.name(),
            points: &points,
            cloud: &[],
        },
    )?;
    if !plan.samples.is_empty() {
        let mut csv = String::from("iter,bytes,bpw,pcc,mae,atol,passes\n");
        for s in &plan.samples {
            csv.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                s.iter,
                s.bytes,
                bpw(s.bytes),
                s.score.pcc,
                s.score.mae,
                s.score.atol,
                s.passes
            ));
        }
        crate::atomic::write(&dir.join(format!("{safe}.csv")), csv.as_bytes())?;
        figures.draw(
            &dir.join(format!("{safe}_samples.png")),
            &Figure::SizeVsAccuracy {
                title: &format!("{tensor}: {} random assignments", plan.samples.len()),
                metric: m.name(),
                points: &points,
                cloud: &cloud,
            },
        )?;
    }
    Ok(())
}
