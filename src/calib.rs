//! Calibration statistics: what each matrix product of a model reads, measured by running
//! calibration text through it (`tenpak calibrate`, in the evaluation crate), and what the
//! calibrated encoders do with them (formats-spec/calibration.md).
//!
//! For each distinct input of a matrix product (the query/key/value projections of a layer
//! share one, so do gate and up), the file holds the mean square of every input channel,
//! `E[x_j^2]` (llama.cpp's importance matrix), and optionally the whole second moment
//! `E[x x^T]` (the Hessian of the layer's output error, up to a factor 2, that GPTQ needs).
//! Weights that read the same input point at the same key. The file is a safetensors file, so
//! numpy and safetensors read it as they are; its `__metadata__` holds the provenance (model,
//! corpus, which tokens) as JSON under [`META_KEY`].
//!
//! GPTQ (Frantar et al., arXiv 2210.17323) is here as one driver, [`Gptq::quantize_rows`],
//! for every group-wise scalar codec: the codec says how a group's scale is fitted and how a
//! value rounds, the driver rounds the columns of each row in order and spreads each
//! rounding error over the columns not yet rounded through the Cholesky factor of the inverse
//! Hessian (faer's, single-threaded: the same bytes for any thread count).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// The `__metadata__` key holding [`CalibInfo`] as JSON.
pub const META_KEY: &str = "tenpak.calibration";

/// Suffix of a Hessian's tensor name (after the input's key).
pub const HESSIAN_SUFFIX: &str = ".hessian";

/// Which text calibrated: always a slice disjoint from the evaluation text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenSlice {
    /// The corpus file's name.
    pub corpus: String,
    /// `tokens` (causal LMs: windows of corpus tokens) or `sentences` (encoders: corpus
    /// sentences, `first_token` and `windows` counting sentences, `ctx` the truncation).
    #[serde(default = "tokens_unit")]
    pub unit: String,
    /// First corpus token (or sentence) used (the evaluation text ends before it).
    pub first_token: u64,
    /// Windows of `ctx` tokens (a BOS, then `ctx - 1` corpus tokens each), or sentences.
    pub windows: u64,
    /// Tokens per window (most word pieces per sentence).
    pub ctx: u64,
    /// SHA-256 of the slice's corpus token ids (little-endian i32).
    pub sha256: String,
    /// What the slice is disjoint from, in words.
    pub disjoint_from: String,
}

fn tokens_unit() -> String {
    "tokens".into()
}

/// A calibration file's provenance and layout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CalibInfo {
    /// Layout version of the file (1).
    pub format: u32,
    /// The model, as loaded.
    pub model: String,
    /// The calibration tokens.
    pub slice: TokenSlice,
    /// Rows (token positions) averaged per input.
    pub rows: u64,
    /// Weight name -> the key of the input it reads.
    pub inputs: BTreeMap<String, String>,
    /// Whether the second moments (`<key>.hessian`) are stored.
    pub hessian: bool,
}

/// One input's statistics, as a calibration run accumulated them.
#[derive(Debug, Clone)]
pub struct InputStats {
    /// The key: the first weight reading this input.
    pub key: String,
    /// `E[x_j^2]` per input channel.
    pub importance: Vec<f32>,
    /// `E[x x^T]`, `[cols, cols]` row-major, when kept.
    pub hessian: Option<Vec<f32>>,
}

/// What a calibrated encoder knows of one weight's input.
#[derive(Debug, Clone)]
pub struct TensorCalib {
    /// `E[x_j^2]` per input channel (the weight's columns).
    pub importance: Arc<[f32]>,
    /// `E[x x^T]`, when the file has it.
    pub hessian: Option<Arc<[f32]>>,
}

impl TensorCalib {
    /// Input channels.
    pub fn cols(&self) -> usize {
        self.importance.len()
    }

    /// Per-element weights of a row-major chunk of whole rows: the importance of each element's
    /// column, normalized to mean 1 (so unweighted and weighted errors are on one scale).
    pub fn column_weights(&self) -> Vec<f32> {
        let n = self.importance.len().max(1) as f64;
        let mean = self.importance.iter().map(|&v| v as f64).sum::<f64>() / n;
        if mean.is_nan() || mean <= 0.0 {
            return vec![1.0; self.importance.len()];
        }
        // A floor keeps a channel that never fired from being ignored outright.
        self.importance
            .iter()
            .map(|&v| ((v as f64 / mean) as f32).max(1e-3))
            .collect()
    }
}

/// Write statistics to `path` (atomically; an existing file only with `force`).
pub fn write(path: &Path, info: &CalibInfo, stats: &[InputStats], force: bool) -> Result<()> {
    if path.exists() && !force {
        return Err(Error::config("the output exists (use --force to replace it)").with_file(path));
    }
    let as_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for s in stats {
        let c = s.importance.len();
        owned.push((s.key.clone(), vec![c], as_bytes(&s.importance)));
        if let Some(h) = &s.hessian {
            if h.len() != c * c {
                return Err(Error::internal(format!(
                    "{}: a {}-element second moment for {c} channels",
                    s.key,
                    h.len()
                )));
            }
            owned.push((
                format!("{}{HESSIAN_SUFFIX}", s.key),
                vec![c, c],
                as_bytes(h),
            ));
        }
    }
    let views = owned
        .iter()
        .map(|(n, d, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, d.clone(), b)
                .map(|v| (n.as_str(), v))
                .map_err(|e| Error::internal(format!("calibration tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([(
        META_KEY.to_string(),
        serde_json::to_string(info).expect("serializable"),
    )]);
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::internal(format!("serialize calibration: {e}")))?;
    crate::atomic::write(path, &bytes)
}

/// The bytes of an opened calibration file.
enum Backing {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// An opened calibration file.
pub struct Calibration {
    /// Provenance and layout.
    pub info: CalibInfo,
    map: Backing,
    /// Tensor name -> (shape, byte range).
    entries: HashMap<String, (Vec<usize>, std::ops::Range<usize>)>,
}

impl std::fmt::Debug for Calibration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calibration")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Calibration {
    /// Open and check a calibration file: a safetensors file whose metadata has
    /// [`META_KEY`], every input key an f32 vector, every Hessian f32 `[c, c]` of its key's
    /// width, every weight pointing at a key that is there.
    pub fn open(path: &Path) -> Result<Calibration> {
        let file = std::fs::File::open(path).map_err(|e| Error::io("open", e).with_file(path))?;
        // SAFETY: read-only map; a file changed underneath gives wrong numbers, not UB in Rust
        // code that only copies bytes out of it.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| Error::io("map", e).with_file(path))?;
        Self::parse(Backing::Map(map)).map_err(|e| e.with_file(path))
    }

    /// [`Calibration::open`] of a file's bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Calibration> {
        Self::parse(Backing::Owned(bytes))
    }

    fn parse(map: Backing) -> Result<Calibration> {
        let bad = |m: String| Error::input(format!("not a tenpak calibration file: {m}"));
        let (n, meta) = safetensors::SafeTensors::read_metadata(&map)
            .map_err(|e| bad(format!("safetensors header: {e}")))?;
        let info: CalibInfo = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| bad(format!("no {META_KEY} in the metadata")))
            .and_then(|j| serde_json::from_str(j).map_err(|e| bad(format!("{META_KEY}: {e}"))))?;
        if info.format != 1 {
            return Err(Error::new(
                crate::ErrorKind::Unsupported,
                format!("calibration format {} (this tenpak reads 1)", info.format),
            ));
        }
        let data_start = 8 + n;
        let mut entries = HashMap::new();
        for (name, t) in meta.tensors() {
            if t.dtype != safetensors::Dtype::F32 {
                return Err(bad(format!("tensor {name} is {:?}, not F32", t.dtype)));
            }
            let (s, e) = t.data_offsets;
            let want = t
                .shape
                .iter()
                .try_fold(4usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| bad(format!("tensor {name}: shape {:?} overflows", t.shape)))?;
            let range = data_start.checked_add(s).zip(data_start.checked_add(e));
            match range {
                Some((a, b)) if a <= b && b <= map.len() && b - a == want => {
                    entries.insert(name, (t.shape.clone(), a..b));
                }
                _ => {
                    return Err(bad(format!(
                        "tensor {name}: bytes {s}..{e} do not hold shape {:?} in a {}-byte file",
                        t.shape,
                        map.len()
                    )))
                }
            }
        }
        for (w, key) in &info.inputs {
            let c = match entries.get(key) {
                Some((d, _)) if d.len() == 1 && d[0] > 0 => d[0],
                Some((d, _)) => return Err(bad(format!("input {key} has shape {d:?}"))),
                None => return Err(bad(format!("{w} reads input {key}, which is missing"))),
            };
            if info.hessian {
                match entries.get(&format!("{key}{HESSIAN_SUFFIX}")) {
                    Some((d, _)) if d[..] == [c, c] => {}
                    Some((d, _)) => {
                        return Err(bad(format!(
                            "{key}{HESSIAN_SUFFIX} has shape {d:?}, not [{c}, {c}]"
                        )))
                    }
                    None => return Err(bad(format!("{key}{HESSIAN_SUFFIX} is missing"))),
                }
            }
        }
        Ok(Calibration { info, map, entries })
    }

    fn floats(&self, name: &str) -> Option<Arc<[f32]>> {
        let (_, r) = self.entries.get(name)?;
        Some(
            self.map[r.clone()]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect(),
        )
    }

    /// The statistics of the input weight `name` reads, if the file covers it.
    pub fn get(&self, name: &str) -> Option<TensorCalib> {
        let key = self.info.inputs.get(name)?;
        Some(TensorCalib {
            importance: self.floats(key)?,
            hessian: if self.info.hessian {
                self.floats(&format!("{key}{HESSIAN_SUFFIX}"))
            } else {
                None
            },
        })
    }
}

/// GPTQ's per-tensor state: the upper Cholesky factor `U` of the damped inverse Hessian
/// (`H^-1 = U^T U`), shared by every row.
#[derive(Debug)]
pub struct Gptq {
    cols: usize,
    /// `[cols, cols]` row-major, upper triangular.
    u: Vec<f32>,
    /// Columns no calibration row touched: GPTQ's convention, they are rounded from zero.
    dead: Vec<bool>,
}

/// GPTQ's damping: this fraction of the mean diagonal is added to the Hessian's diagonal.
pub const GPTQ_DAMP: f64 = 0.01;

impl Gptq {
    /// From a second moment `[cols, cols]`.
    pub fn new(hessian: &[f32], cols: usize) -> Result<Gptq> {
        use faer::linalg::solvers::DenseSolveCore;
        if hessian.len() != cols * cols || cols == 0 {
            return Err(Error::config(format!(
                "a {}-element second moment for a {cols}-column weight",
                hessian.len()
            )));
        }
        let dead: Vec<bool> = (0..cols)
            .map(|i| {
                let d = hessian[i * cols + i];
                d.is_nan() || d <= 0.0
            })
            .collect();
        let mean_diag = (0..cols)
            .filter(|&i| !dead[i])
            .map(|i| hessian[i * cols + i] as f64)
            .sum::<f64>()
            / (cols as f64).max(1.0);
        let damp = (GPTQ_DAMP * mean_diag).max(1e-12);
        let h = faer::Mat::<f64>::from_fn(cols, cols, |i, j| {
            if dead[i] || dead[j] {
                return if i == j { 1.0 } else { 0.0 };
            }
            let v = 0.5 * (hessian[i * cols + j] as f64 + hessian[j * cols + i] as f64);
            if i == j {
                v + damp
            } else {
                v
            }
        });
        let not_pd = || Error::input("the calibration second moment is not positive definite");
        let inv = h.llt(faer::Side::Lower).map_err(|_| not_pd())?.inverse();
        let l = inv.llt(faer::Side::Lower).map_err(|_| not_pd())?;
        let l = l.L();
        let mut u = vec![0f32; cols * cols];
        for i in 0..cols {
            for j in i..cols {
                u[i * cols + j] = l[(j, i)] as f32;
            }
        }
        Ok(Gptq { cols, u, dead })
    }

    /// Input channels.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Round whole rows (`w`, row-major, a multiple of `cols` long) in place: columns in order;
    /// at the start of each group of `group` columns `fit` sees the group's first column and
    /// current values (earlier errors included) and returns its parameters; `round` gives a value's
    /// reconstruction under them. Returns each row's group parameters in order. `w` ends up
    /// holding the reconstruction.
    pub fn quantize_rows<P>(
        &self,
        w: &mut [f32],
        group: usize,
        mut fit: impl FnMut(usize, &[f32]) -> Result<P>,
        mut round: impl FnMut(f32, &P) -> f32,
    ) -> Result<Vec<P>> {
        let c = self.cols;
        if c == 0 || !w.len().is_multiple_of(c) || group == 0 {
            return Err(Error::internal(format!(
                "GPTQ of {} values in rows of {c}, groups of {group}",
                w.len()
            )));
        }
        let mut params = Vec::with_capacity(w.len() / group + 1);
        for row in w.chunks_exact_mut(c) {
            for (j, d) in self.dead.iter().enumerate() {
                if *d {
                    row[j] = 0.0;
                }
            }
            let mut p = None;
            for j in 0..c {
                if j % group == 0 {
                    let end = (j + group).min(c);
                    p = Some(fit(j, &row[j..end])?);
                }
                let q = round(row[j], p.as_ref().expect("fitted at the group start"));
                let urow = &self.u[j * c..(j + 1) * c];
                let e = (row[j] - q) / urow[j];
                row[j] = q;
                // The error spread over the columns not yet rounded (a loop that vectorizes).
                for (x, &uk) in row[j + 1..].iter_mut().zip(&urow[j + 1..]) {
                    *x -= e * uk;
                }
                if (j + 1) % group == 0 || j + 1 == c {
                    params.push(p.take().expect("one per group"));
                }
            }
        }
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng_normal(s: &mut crate::assign::Rng) -> f32 {
        let u = ((s.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let v = ((s.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    /// GPTQ lowers the output error `||(W - Q) X||` against round-to-nearest on the same grid,
    /// on correlated inputs.
    #[test]
    fn gptq_beats_round_to_nearest_on_the_output() {
        let (rows, cols, n) = (16, 64, 512);
        let mut s = crate::assign::Rng::new(7);
        // Correlated inputs: x = A z.
        let a: Vec<f32> = (0..cols * cols).map(|_| rng_normal(&mut s)).collect();
        let mut x = vec![0f32; n * cols];
        for t in 0..n {
            let z: Vec<f32> = (0..cols).map(|_| rng_normal(&mut s)).collect();
            for i in 0..cols {
                x[t * cols + i] = (0..cols).map(|k| a[i * cols + k] * z[k]).sum::<f32>() * 0.1;
            }
        }
        let mut h = vec![0f32; cols * cols];
        for t in 0..n {
            for i in 0..cols {
                for j in 0..cols {
                    h[i * cols + j] += x[t * cols + i] * x[t * cols + j] / n as f32;
                }
            }
        }
        let w: Vec<f32> = (0..rows * cols).map(|_| rng_normal(&mut s)).collect();
        let step = 0.5f32;
        let round = |v: f32, _: &()| (v / step).round() * step;
        let rtn: Vec<f32> = w.iter().map(|&v| round(v, &())).collect();
        let g = Gptq::new(&h, cols).unwrap();
        let mut q = w.clone();
        let p = g.quantize_rows(&mut q, 16, |_, _| Ok(()), round).unwrap();
        assert_eq!(p.len(), rows * cols / 16);
        assert!(q.iter().all(|v| (v / step).fract() == 0.0), "on the grid");
        let out_err = |q: &[f32]| -> f64 {
            let mut e = 0f64;
            for r in 0..rows {
                for t in 0..n {
                    let d: f32 = (0..cols)
                        .map(|i| (w[r * cols + i] - q[r * cols + i]) * x[t * cols + i])
                        .sum();
                    e += (d as f64).powi(2);
                }
            }
            e
        };
        let (eg, er) = (out_err(&q), out_err(&rtn));
        assert!(eg < 0.8 * er, "gptq {eg} vs round-to-nearest {er}");
    }

    #[test]
    fn a_file_round_trips_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        let info = CalibInfo {
            format: 1,
            model: "m".into(),
            slice: TokenSlice {
                corpus: "c.txt".into(),
                unit: "tokens".into(),
                first_token: 100,
                windows: 2,
                ctx: 8,
                sha256: "00".into(),
                disjoint_from: "evaluation".into(),
            },
            rows: 16,
            inputs: BTreeMap::from([("a".into(), "a".into()), ("b".into(), "a".into())]),
            hessian: true,
        };
        let stats = [InputStats {
            key: "a".into(),
            importance: vec![1.0, 2.0],
            hessian: Some(vec![1.0, 0.5, 0.5, 2.0]),
        }];
        write(&p, &info, &stats, false).unwrap();
        assert!(
            write(&p, &info, &stats, false).is_err(),
            "no silent overwrite"
        );
        let c = Calibration::open(&p).unwrap();
        assert_eq!(c.info, info);
        let t = c.get("b").unwrap();
        assert_eq!(&t.importance[..], &[1.0, 2.0]);
        assert_eq!(&t.hessian.unwrap()[..], &[1.0, 0.5, 0.5, 2.0]);
        assert!(c.get("z").is_none());
        // A weight pointing at a missing input.
        let mut bad = info.clone();
        bad.inputs.insert("c".into(), "nope".into());
        write(&p, &bad, &stats, true).unwrap();
        let e = Calibration::open(&p).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        // Not safetensors at all.
        std::fs::write(&p, b"garbage").unwrap();
        assert!(Calibration::open(&p).is_err());
    }
}
