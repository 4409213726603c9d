//! Plan, then encode: compress options and configs become a typed per-tensor [`Plan`] once
//! (which tensors, through which pipeline, in which layout, pruned, per tile, or against a
//! base), before any tensor is read. [`crate::encode`] executes a plan; `compress`, `analyze`
//! and the evaluation sweep consume the same plan, and `compress --dry-run` prints it with the
//! sizes it predicts.
//!
//! Every option error is found here, before any output is created or any tensor is read.

use crate::base::Base;
use crate::codec::sparse::SparseCodec;
use crate::codec::{Pipeline, RawCodec, TensorFacts};
use crate::compress::CompressOptions;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::input::{self, TensorInfo, TensorSource};
use crate::prune::Prune;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use tpk_format::Layout;

/// How one tensor is stored.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Through `pipeline` (bound to the tensor's shape) in `layout`.
    Codec {
        /// The pipeline.
        pipeline: Pipeline,
        /// Element order of the chunks.
        layout: Layout,
    },
    /// Pruned by `rule`, the kept values stored sparsely (`pipeline` is the `sparse` wrapper
    /// around the value codec), row-major.
    Pruned {
        /// The sparse pipeline.
        pipeline: Pipeline,
        /// The value pipeline inside it.
        values: Pipeline,
        /// The pruning rule.
        rule: Prune,
    },
    /// A format per 32x32 tile, chosen by the plan's mixed-tile search from the tensor's values
    /// when it is encoded (whole-model scope: from every tensor's, before the first is written).
    Mixed,
    /// As its difference from the base model's tensor of the same name, shape and dtype,
    /// through `pipeline` (formats-spec/delta.md); an unchanged tensor through `byteplane`.
    Delta {
        /// The value pipeline of the difference.
        pipeline: Pipeline,
    },
}

/// One tensor of a plan.
#[derive(Debug, Clone)]
pub struct TensorPlan {
    /// Index in the source's tensor list.
    pub index: usize,
    /// The tensor as the source describes it.
    pub info: TensorInfo,
    /// How it is stored.
    pub storage: Storage,
}

/// A whole compression, decided: the typed form of [`CompressOptions`] and a config.
pub struct Plan {
    /// The default pipeline (`--codec`), as parsed.
    pub pipeline: Pipeline,
    /// Elements per chunk.
    pub chunk_elems: u64,
    /// The selected tensors, in name order.
    pub tensors: Vec<TensorPlan>,
    /// The mixed-tile search of [`Storage::Mixed`] tensors.
    pub mixed: Option<crate::config::MixedSpec>,
    /// Whether vectors are tiled too (mixed-tile eligibility).
    pub tile_vectors: bool,
    /// The base model of [`Storage::Delta`] tensors, opened.
    pub base: Option<Base>,
    /// Calibration statistics, opened: codecs with a calibrated encoder use them.
    pub calibration: Option<Arc<crate::calib::Calibration>>,
    /// How calibrated encoders use them.
    pub calib_mode: crate::codec::calibrated::Mode,
    /// What the user should hear about before anything is written (an `--override` that
    /// matches no tensor).
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("pipeline", &self.pipeline.describe())
            .field("chunk_elems", &self.chunk_elems)
            .field("tensors", &self.tensors.len())
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// Check `opts` and decide how each selected tensor of `source` (read from `input`, named in
    /// errors) is stored. Reads tensor descriptions only, never their data.
    pub fn new(source: &dyn TensorSource, input: &Path, opts: &CompressOptions) -> Result<Plan> {
        let selected = input::select(source.tensors(), opts.filter.as_deref(), opts.limit);
        if selected.is_empty() {
            return Err(Error::input(match &opts.filter {
                Some(q) => format!("no tensor matches the filter '{q}'"),
                None => "the model has no tensors".to_string(),
            })
            .with_file(input));
        }
        Plan::for_selection(source, input, opts, &selected)
    }

    /// [`Plan::new`] for tensors chosen by the caller (indices into `source.tensors()`), with
    /// `opts`' filter and limit not applied again.
    pub fn for_selection(
        source: &dyn TensorSource,
        input: &Path,
        opts: &CompressOptions,
        selected: &[usize],
    ) -> Result<Plan> {
        if opts.chunk_elems == 0 {
            return Err(Error::config("--chunk-elems must be at least 1"));
        }
        let pipeline = Pipeline::parse(&opts.codec)?;
        let overrides = opts
            .overrides
            .iter()
            .map(|(f, spec)| Ok((f.as_str(), Pipeline::parse(spec)?)))
            .collect::<Result<Vec<_>>>()?;
        if !overrides.is_empty() && (opts.mixed.is_some() || opts.base.is_some()) {
            return Err(Error::config(
                "--override does not combine with a mixed-tile config or --base",
            ));
        }
        if opts.transpose && opts.mixed.is_some() {
            // mixed.md: a mixed tensor's tiles are always those of the `tiles32` layout.
            return Err(Error::config(
                "--transpose does not apply to a mixed-tile config: mixed tensors are tiled as stored (layout tiles32); drop --transpose",
            ));
        }
        if opts.base.is_some() && (opts.prune.is_some() || opts.mixed.is_some()) {
            return Err(Error::config(
                "--base stores differences from a base model; it does not combine with --prune or a mixed-tile config",
            ));
        }
        let base = opts.base.as_deref().map(Base::open).transpose()?;
        let calibration = opts
            .calibration
            .as_deref()
            .map(crate::calib::Calibration::open)
            .transpose()?
            .map(Arc::new);
        let calib_mode = match (opts.calib_mode, &calibration) {
            (Some(m), _) => m,
            (None, Some(c)) if c.info.hessian => crate::codec::calibrated::Mode::Gptq,
            _ => crate::codec::calibrated::Mode::Weighted,
        };
        if calibration.is_none() && opts.calib_mode.is_some() {
            return Err(Error::config("--gptq and --weighted need --calibration"));
        }
        if calib_mode == crate::codec::calibrated::Mode::Gptq
            && calibration.as_ref().is_some_and(|c| !c.info.hessian)
        {
            return Err(Error::config(
                "GPTQ needs the second moments: the calibration file was made with --no-hessian",
            )
            .with_file(opts.calibration.as_deref().unwrap_or(input)));
        }
        let infos = source.tensors();
        let mut tensors = Vec::with_capacity(selected.len());
        let mut used = vec![false; overrides.len()];
        for &i in selected {
            let info = &infos[i];
            let hit = overrides
                .iter()
                .position(|(f, _)| input::name_matches(&info.name, f));
            if let Some(k) = hit {
                used[k] = true;
            }
            let p = hit.map_or(&pipeline, |k| &overrides[k].1);
            let storage = storage(p, info, opts, base.as_ref())
                .map_err(|e| e.with_tensor(&info.name).with_file(input))?;
            tensors.push(TensorPlan {
                index: i,
                info: info.clone(),
                storage,
            });
        }
        // A filter that matches nothing is most often a typo in a tensor name.
        let warnings = opts
            .overrides
            .iter()
            .zip(&used)
            .filter(|(_, &u)| !u)
            .map(|((f, spec), _)| {
                let matches = selected
                    .iter()
                    .any(|&i| input::name_matches(&infos[i].name, f));
                if matches {
                    format!("--override '{f}={spec}' applies to no tensor: an earlier --override takes every tensor it matches")
                } else {
                    format!(
                        "--override '{f}={spec}' matches none of the {} selected tensors",
                        selected.len()
                    )
                }
            })
            .collect();
        Ok(Plan {
            pipeline,
            chunk_elems: opts.chunk_elems,
            warnings,
            tensors,
            mixed: opts.mixed.clone(),
            tile_vectors: opts.tile_vectors,
            base,
            calibration,
            calib_mode,
        })
    }

    /// The calibration statistics of tensor `name`'s input, when the plan has a calibration
    /// file that covers it.
    pub fn calibration_for(&self, name: &str) -> Option<crate::calib::TensorCalib> {
        self.calibration.as_ref()?.get(name)
    }

    /// What the plan predicts for each tensor, for `compress --dry-run`.
    pub fn report(&self) -> PlanReport {
        let tensors: Vec<PlannedTensor> = self
            .tensors
            .iter()
            .map(|t| {
                let (codec, layout, how) = match &t.storage {
                    Storage::Codec { pipeline, layout } => (pipeline.describe(), *layout, "codec"),
                    Storage::Pruned { pipeline, .. } => {
                        (pipeline.describe(), Layout::RowMajor, "pruned")
                    }
                    Storage::Mixed => (
                        self.mixed.as_ref().map_or("mixed".into(), |m| {
                            format!("mixed ({})", m.algorithm.name())
                        }),
                        Layout::Tiles32,
                        "mixed",
                    ),
                    Storage::Delta { pipeline } => (
                        format!("delta[{}]", pipeline.describe()),
                        Layout::RowMajor,
                        "delta",
                    ),
                };
                let (chunks, size) = self.predicted(t);
                PlannedTensor {
                    name: t.info.name.clone(),
                    shape: t.info.dims.clone(),
                    source_dtype: t.info.source_dtype.clone(),
                    storage: how,
                    codec,
                    layout: layout.name(),
                    chunks,
                    source_bytes: t.info.source_bytes,
                    predicted_bytes: size.bytes(),
                    exact: matches!(size, SizeBound::Exact(_)),
                    padded_elems: padded_elems(layout, &t.info.dims),
                }
            })
            .collect();
        let predicted: u64 = tensors.iter().map(|t| t.predicted_bytes).sum();
        let exact = tensors.iter().all(|t| t.exact);
        let source_bytes = tensors.iter().map(|t| t.source_bytes).sum();
        let mut warnings = self.warnings.clone();
        warnings.extend(crate::compress::size_warnings(
            &self.tensors,
            tensors.iter().map(|t| t.padded_elems),
            source_bytes,
            predicted,
        ));
        PlanReport {
            source_bytes,
            predicted_payload_bytes: predicted,
            exact,
            tensors,
            warnings,
        }
    }

    /// Chunks and payload bytes of one tensor: exact where every chunk's size follows from its
    /// element count (fixed-size codecs, no byte stage), an upper bound otherwise.
    fn predicted(&self, t: &TensorPlan) -> (usize, SizeBound) {
        let info = &t.info;
        let (pipeline, layout) = match &t.storage {
            Storage::Codec { pipeline, layout } => (pipeline.clone(), *layout),
            Storage::Pruned { pipeline, .. } | Storage::Delta { pipeline } => {
                (pipeline.clone(), Layout::RowMajor)
            }
            Storage::Mixed => {
                // The search decides; the widest format bounds it.
                let bound = self
                    .mixed
                    .iter()
                    .flat_map(|m| &m.formats)
                    .filter_map(|n| crate::codec::mixed::TileFormat::parse(n))
                    .map(|f| f.tile_bytes())
                    .max()
                    .unwrap_or(0);
                let chunks =
                    crate::encode::chunk_ranges(info, None, Layout::Tiles32, self.chunk_elems);
                let tiles: u64 = chunks.iter().map(|c| c.1).sum::<u64>() / 1024;
                // Tile codes take at most 4 bits a tile, a byte more per chunk.
                let codes = tiles.div_ceil(2) + chunks.len() as u64;
                return (
                    chunks.len(),
                    SizeBound::AtMost(tiles * bound as u64 + codes),
                );
            }
        };
        let chunks = crate::encode::chunk_ranges(info, Some(&pipeline), layout, self.chunk_elems);
        let fed = if layout == Layout::RowMajor {
            info.dtype
        } else {
            DType::F32
        };
        let codec = pipeline.tensor_codec();
        let bytes: u64 = chunks
            .iter()
            .map(|&(_, n)| match &t.storage {
                // The encoder keeps the smaller index section, so a bitmap bounds it.
                Storage::Pruned { values, .. } => {
                    5 + n.div_ceil(8)
                        + values.tensor_codec().max_encoded_len(fed, n as usize) as u64
                }
                _ => codec.max_encoded_len(fed, n as usize) as u64,
            })
            .sum();
        let exact = codec.props().sized
            && pipeline.byte_stages() == 0
            && !matches!(t.storage, Storage::Delta { .. } | Storage::Pruned { .. });
        let size = if exact {
            SizeBound::Exact(bytes)
        } else if pipeline.byte_stages() > 0 {
            // zstd's worst case: a few bytes per 128 KiB block beyond the input.
            SizeBound::AtMost(bytes + bytes / 1024 + 64 * chunks.len() as u64)
        } else {
            SizeBound::AtMost(bytes)
        };
        (chunks.len(), size)
    }
}

/// How a tensor's pipeline and layout follow from the options: the vector policy (lossy codecs
/// quantize matrices and leave vectors and scalars raw unless `tile_vectors`, as quantizers do:
/// a norm costs nothing to keep and much to lose), then pruning, the mixed-tile search and the
/// base, which take precedence in that order reversed.
fn storage(
    p: &Pipeline,
    info: &TensorInfo,
    opts: &CompressOptions,
    base: Option<&Base>,
) -> Result<Storage> {
    if base.is_some_and(|b| b.has(&info.name, &info.dims, info.dtype)) {
        let (pipeline, _) = tensor_plan(p, info, opts);
        return Ok(Storage::Delta { pipeline });
    }
    if opts.mixed.is_some() && crate::mixed::eligible(info, opts.tile_vectors) {
        return Ok(Storage::Mixed);
    }
    if opts.prune.is_some() && Prune::applies(info.dtype, &info.dims) {
        // Refuse a value codec kept values cannot use (a grouping by the tensor's shape) as
        // asked, before its bind step would turn it into something else.
        SparseCodec::new(effective_pipeline(p, info.dtype).tensor_codec_arc())
            .map_err(|e| e.with_tensor(&info.name))?;
    }
    let (pipeline, layout) = tensor_plan(p, info, opts);
    match opts.prune {
        Some(rule) if Prune::applies(info.dtype, &info.dims) => {
            let sparse = SparseCodec::new(pipeline.tensor_codec_arc())?;
            Ok(Storage::Pruned {
                pipeline: pipeline.with_tensor_codec(Arc::new(sparse)),
                values: pipeline,
                rule,
            })
        }
        _ => Ok(Storage::Codec { pipeline, layout }),
    }
}

/// The pipeline a tensor of `dtype` really gets: lossy codecs leave integer and bool tensors
/// bit-exact by storing them raw (behind the same byte stages).
pub fn effective_pipeline(p: &Pipeline, dtype: DType) -> Pipeline {
    if p.tensor_codec().accepts(dtype) {
        p.clone()
    } else {
        p.with_tensor_codec(Arc::new(RawCodec))
    }
}

/// Parse `FILTER=SPEC` (the filter may itself contain no `=`).
pub fn parse_override(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((f, c)) if !f.is_empty() && !c.is_empty() => Ok((f.to_string(), c.to_string())),
        _ => Err(Error::config(format!(
            "--override '{s}' is not FILTER=SPEC (for example token_embd.weight=int8)"
        ))),
    }
}

/// How a tensor is stored through `p`: its pipeline (bound to the tensor's shape) and element
/// layout, after the vector policy: lossy codecs quantize matrices and leave vectors and
/// scalars (norms, biases) raw unless `tile_vectors`. Deltas against a base keep their codec
/// on vectors too.
pub fn tensor_plan(p: &Pipeline, info: &TensorInfo, opts: &CompressOptions) -> (Pipeline, Layout) {
    let p = effective_pipeline(p, info.dtype);
    let p = p.bind(&TensorFacts {
        dims: &info.dims,
        amax: None,
        values: None,
    });
    if !p.tensor_codec().tiled() {
        if info.dims.len() < 2
            && !opts.tile_vectors
            && opts.base.is_none()
            && !p.tensor_codec().lossless_for(info.dtype)
        {
            return (p.with_tensor_codec(Arc::new(RawCodec)), Layout::RowMajor);
        }
        return (p, Layout::RowMajor);
    }
    if info.dims.len() < 2 && !opts.tile_vectors {
        return (p.with_tensor_codec(Arc::new(RawCodec)), Layout::RowMajor);
    }
    let layout = if opts.transpose {
        Layout::Tiles32Transposed
    } else {
        Layout::Tiles32
    };
    (p, layout)
}

/// Elements a tensor of shape `dims` takes in `layout` once padded to whole 32x32 tiles, where
/// that is more than it has.
pub fn padded_elems(layout: Layout, dims: &[u64]) -> Option<u64> {
    if layout == Layout::RowMajor {
        return None;
    }
    let space = layout.space(dims)?;
    let numel = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
    (space > numel).then_some(space)
}

/// A predicted payload size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeBound {
    /// Exactly this many bytes.
    Exact(u64),
    /// At most this many bytes.
    AtMost(u64),
}

impl SizeBound {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        match self {
            SizeBound::Exact(b) | SizeBound::AtMost(b) => b,
        }
    }
}

/// `compress --dry-run`: what would be written.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    /// Per tensor, in name order.
    pub tensors: Vec<PlannedTensor>,
    /// Sum of the tensors' source bytes.
    pub source_bytes: u64,
    /// Sum of the predicted payload bytes.
    pub predicted_payload_bytes: u64,
    /// Whether every prediction is exact (else some are upper bounds).
    pub exact: bool,
    /// What the user should hear about (see [`crate::compress::CompressReport::warnings`]).
    pub warnings: Vec<String>,
}

/// One tensor of a [`PlanReport`].
#[derive(Debug, Clone, Serialize)]
pub struct PlannedTensor {
    /// Name.
    pub name: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Type in the source file.
    pub source_dtype: String,
    /// `codec`, `pruned`, `mixed` or `delta`.
    pub storage: &'static str,
    /// The pipeline.
    pub codec: String,
    /// `row-major`, `tiles32` or `tiles32-transposed`.
    pub layout: &'static str,
    /// Chunks.
    pub chunks: usize,
    /// Bytes in the source file.
    pub source_bytes: u64,
    /// Predicted payload bytes.
    pub predicted_bytes: u64,
    /// Whether `predicted_bytes` is exact (else an upper bound).
    pub exact: bool,
    /// Elements after padding to 32x32 tiles, for tiled layouts whose shape needs padding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub padded_elems: Option<u64>,
}
