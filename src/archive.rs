//! An opened `.tpk` file and chunk-parallel decoding of its tensors.

use crate::codec::Pipeline;
use crate::dtype::DType;
use crate::error::{Error, ErrorKind, Result};
use crate::set::TpkSet;
use crate::tiles::TileGeom;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use tpk_format::{Layout, Limits, TensorEntry};

/// Decoded bytes per batch of [`Archive::decode_pieces`]: a reader holds about three such
/// buffers (decoded tiles, the band in place, its conversion), so this bounds its memory.
pub const DECODE_BATCH_BYTES: u64 = 16 << 20;

/// A `.tpk` file, memory-mapped and validated.
pub struct Archive {
    /// Where it was opened from.
    pub path: PathBuf,
    /// The container: one `.tpk` file, or a multi-file set opened through its index.
    pub file: TpkSet,
    /// Limits used for decoding.
    pub limits: Limits,
    /// The base model that delta tensors are decoded against, if given.
    pub base: Option<crate::base::Base>,
}

impl Archive {
    /// Open and validate header and index (payloads are not read): a `.tpk` file, or a
    /// multi-file set through its `*.tpk.index.json` ([`crate::set`]).
    pub fn open(path: &Path) -> Result<Archive> {
        if path.is_dir() {
            return Err(Error::input(
                "a folder, not a .tpk file: name the .tpk file (a model folder is what compress reads)",
            )
            .with_file(path));
        }
        let limits = Limits::default();
        if crate::set::is_index(path) {
            return Ok(Archive {
                path: path.to_path_buf(),
                file: TpkSet::open_path(path, &limits).map_err(|e| e.with_file(path))?,
                limits,
                base: None,
            });
        }
        let file = tpk_format::TpkFile::open_path(path, &limits).map_err(|e| {
            let not_tpk = matches!(e, tpk_format::FormatError::NotTpk);
            let mut err = Error::from(e).with_file(path);
            if not_tpk {
                if let Some(what) = model_kind(path) {
                    err.message = format!(
                        "a {what} model, not a .tpk file: compress it first (tenpak compress {} -o OUT.tpk)",
                        path.display()
                    );
                }
            }
            err
        })?;
        Ok(Archive {
            path: path.to_path_buf(),
            file: TpkSet::single(path, file),
            limits,
            base: None,
        })
    }

    /// Decode delta tensors against the base model at `path`.
    pub fn with_base(mut self, path: &Path) -> Result<Archive> {
        self.base = Some(crate::base::Base::open(path)?);
        Ok(self)
    }

    /// Tensor `i`'s delta codec, if it is stored as a delta.
    pub fn delta(&self, i: usize) -> Option<crate::codec::delta::DeltaCodec> {
        let t = &self.file.tensors()[i];
        let s = t
            .stages
            .first()
            .filter(|s| s.codec_id == crate::codec::delta::DELTA_ID)?;
        crate::codec::delta::DeltaCodec::from_params(&s.params).ok()
    }

    /// The source dtype and pipeline of tensor `i`; `Unsupported` if this tenpak lacks a codec.
    pub fn pipeline(&self, i: usize) -> Result<(DType, Pipeline)> {
        let t = &self.file.tensors()[i];
        let dtype = DType::from_name(&t.dtype).map_err(|e| e.with_tensor(&t.name))?;
        let p = Pipeline::from_stages(&t.stages).map_err(|e| e.with_tensor(&t.name))?;
        if p.tensor_codec().tiled() != (t.layout != tpk_format::Layout::RowMajor) {
            return Err(Error::bad_params(format!(
                "codec {} does not match the tensor's {:?} element layout",
                p.describe(),
                t.layout
            ))
            .with_tensor(&t.name));
        }
        Ok((dtype, p))
    }

    /// The dtype tensor `i` decodes to (its pipeline's decoded dtype for the source dtype).
    pub fn decoded_dtype(&self, i: usize) -> Result<DType> {
        let (src, p) = self.pipeline(i)?;
        Ok(p.tensor_codec().decoded_dtype(src))
    }

    /// Decode chunk `c` of tensor `i` (CRC checked) into bytes of the pipeline's decoded dtype.
    pub fn decode_chunk(&self, i: usize, c: usize, dtype: DType, p: &Pipeline) -> Result<Vec<u8>> {
        let t = &self.file.tensors()[i];
        let ch = &t.chunks[c];
        let payload = self.file.chunk(i, c).map_err(Error::from)?;
        p.decode(
            payload,
            dtype,
            ch.elem_count as usize,
            self.limits.max_decoded_bytes,
        )
        .map_err(|e| e.with_chunk(c).with_tensor(&t.name))
    }

    /// Decode a whole tensor, chunks in parallel. Returns the decoded dtype and its bytes.
    pub fn decode_tensor(&self, i: usize) -> Result<(DType, Vec<u8>)> {
        let t = &self.file.tensors()[i];
        let (dtype, p) = self.pipeline(i)?;
        if let Some(d) = self.delta(i) {
            let base = self.base.as_ref().ok_or_else(|| {
                Error::input(format!(
                    "tensor '{}' is stored as a delta against a base model: pass --base BASE",
                    t.name
                ))
            })?;
            let (bdt, bdata) = base.for_delta(&t.name, &t.dims, &d)?;
            let out_dtype = p.tensor_codec().decoded_dtype(dtype);
            let total = decoded_len(t, out_dtype, &self.limits)?;
            let mut out = self.decode_chunks(
                i,
                dtype,
                &p,
                out_dtype.size(),
                total / out_dtype.size().max(1),
            )?;
            d.apply(&mut out, &bdata, bdt);
            return Ok((out_dtype, out));
        }
        let out_dtype = p.tensor_codec().decoded_dtype(dtype);
        let total = decoded_len(t, out_dtype, &self.limits)?;
        let esize = out_dtype.size();
        if let Some(geom) = TileGeom::new(
            t.layout,
            &t.dims,
            self.limits.max_decoded_bytes / esize as u64,
        )
        .map_err(|e| e.with_tensor(&t.name))?
        {
            // Chunks hold tiles: decode into tile order, then put the elements in place.
            let tiles = self.decode_chunks(i, dtype, &p, esize, geom.prows * geom.pcols)?;
            let mut out = vec![0u8; total];
            geom.scatter(&tiles, esize, &mut out);
            return Ok((out_dtype, out));
        }
        let n = total / esize.max(1);
        Ok((out_dtype, self.decode_chunks(i, dtype, &p, esize, n)?))
    }

    /// Rows `rows` of the first dimension of tensor `i`, decoded (its decoded dtype, row-major).
    /// A row-major tensor decodes only the chunks holding them; tiled and delta tensors are
    /// decoded whole first. Rows past the end are left out (as a Python slice would).
    pub fn decode_rows(&self, i: usize, rows: std::ops::Range<u64>) -> Result<(DType, Vec<u8>)> {
        let t = &self.file.tensors()[i];
        let first = t.dims.first().copied().unwrap_or(1);
        let row_len: u64 = t.dims.iter().skip(1).product();
        let r0 = rows.start.min(first);
        let r1 = rows.end.clamp(r0, first);
        let (e0, e1) = (r0 * row_len, r1 * row_len);
        let (dtype, p) = self.pipeline(i)?;
        let out_dtype = p.tensor_codec().decoded_dtype(dtype);
        let es = out_dtype.size();
        if t.layout != Layout::RowMajor || self.delta(i).is_some() {
            let (dt, all) = self.decode_tensor(i)?;
            return Ok((dt, all[e0 as usize * es..e1 as usize * es].to_vec()));
        }
        // The chunks overlapping [e0, e1): chunks are in element order.
        let cs: Vec<usize> = (0..t.chunks.len())
            .filter(|&c| {
                let ch = &t.chunks[c];
                ch.elem_start < e1 && ch.elem_start + ch.elem_count > e0
            })
            .collect();
        let (Some(&c0), Some(&c1)) = (cs.first(), cs.last()) else {
            return Ok((out_dtype, Vec::new()));
        };
        let base = t.chunks[c0].elem_start;
        let n: u64 = t.chunks[c0..=c1].iter().map(|c| c.elem_count).sum();
        let bytes = self.decode_chunk_range(i, c0..c1 + 1, dtype, &p, es, n as usize)?;
        let at = (e0 - base) as usize * es;
        Ok((out_dtype, bytes[at..at + (e1 - e0) as usize * es].to_vec()))
    }

    /// Decode tensor `i` a batch of chunks at a time (about [`DECODE_BATCH_BYTES`] decoded, or
    /// two chunks per thread if more, chunks in parallel), handing `emit` pieces of the row-major tensor as (first
    /// element, bytes of the decoded dtype). Every element comes exactly once; pieces arrive in
    /// increasing order except for matrices stored with reversed axes, whose pieces are runs of
    /// the tensor's rows. Memory is one batch, not the tensor; delta tensors and tensors of more
    /// than two dimensions stored with reversed axes are decoded whole. Returns the decoded
    /// dtype.
    pub fn decode_pieces(
        &self,
        i: usize,
        emit: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<DType> {
        use crate::tiles::BandKind;
        let t = &self.file.tensors()[i];
        let (dtype, p) = self.pipeline(i)?;
        let out_dtype = p.tensor_codec().decoded_dtype(dtype);
        let esize = out_dtype.size();
        decoded_len(t, out_dtype, &self.limits)?;
        let geom = TileGeom::new(
            t.layout,
            &t.dims,
            self.limits.max_decoded_bytes / esize as u64,
        )
        .map_err(|e| e.with_tensor(&t.name))?;
        if self.delta(i).is_some()
            || geom.as_ref().map(|g| g.band_kind()) == Some(BandKind::Scattered)
        {
            let (d, bytes) = self.decode_tensor(i)?;
            emit(0, &bytes)?;
            return Ok(d);
        }
        // Batches of whole chunks, about BATCH_BYTES decoded each, ending on a tile row (the
        // writer's chunks are whole tile rows; a file whose chunks are not is decoded in one
        // batch, correctly).
        let tre = geom
            .as_ref()
            .map_or(1, |g| g.tile_row_elems().max(1) as u64);
        let largest = t.chunks.iter().map(|c| c.elem_count).max().unwrap_or(0) * esize as u64;
        let batch_bytes = DECODE_BATCH_BYTES.max(2 * rayon::current_num_threads() as u64 * largest);
        let mut batches = Vec::new();
        let (mut start, mut bytes) = (0, 0u64);
        for (c, ch) in t.chunks.iter().enumerate() {
            bytes += ch.elem_count * esize as u64;
            let row_end = (ch.elem_start + ch.elem_count).is_multiple_of(tre);
            if (bytes >= batch_bytes && row_end) || c + 1 == t.chunks.len() {
                batches.push(start..c + 1);
                start = c + 1;
                bytes = 0;
            }
        }
        let mut band = Vec::new();
        for b in batches {
            let first = t.chunks[b.start].elem_start;
            let n: u64 = t.chunks[b.clone()].iter().map(|c| c.elem_count).sum();
            let n = usize::try_from(n).map_err(|_| Error::bad_params("chunk too large"))?;
            let decoded = self.decode_chunk_range(i, b.clone(), dtype, &p, esize, n)?;
            self.file.release_chunks(i, b);
            let Some(geom) = &geom else {
                emit(first, &decoded)?;
                continue;
            };
            // Chunks hold whole tile rows: put the band's elements in place.
            let tre = geom.tile_row_elems() as u64;
            let (tr0, tr1) = ((first / tre) as usize, ((first + n as u64) / tre) as usize);
            let (r0, r1) = (
                tr0 * crate::tiles::T,
                (tr1 * crate::tiles::T).min(geom.rows),
            );
            if r0 >= r1 {
                continue;
            }
            match geom.band_kind() {
                BandKind::Rows => {
                    let base = geom.base(r0);
                    band.clear();
                    band.resize((r1 - r0) * geom.cols * esize, 0);
                    geom.for_each(tr0..tr1, |k, idx| {
                        let at = (idx - base) * esize;
                        band[at..at + esize].copy_from_slice(&decoded[k * esize..(k + 1) * esize]);
                    });
                    emit(base as u64, &band)?;
                }
                BandKind::Columns | BandKind::Scattered => {
                    // View column c is the tensor's row c; the band is one run in each.
                    let tiles_wide = geom.pcols / crate::tiles::T;
                    let tt = crate::tiles::T * crate::tiles::T;
                    for c in 0..geom.cols {
                        band.clear();
                        let (tc, j) = (c / crate::tiles::T, c % crate::tiles::T);
                        for r in r0..r1 {
                            let k = ((r / crate::tiles::T - tr0) * tiles_wide + tc) * tt
                                + (r % crate::tiles::T) * crate::tiles::T
                                + j;
                            band.extend_from_slice(&decoded[k * esize..(k + 1) * esize]);
                        }
                        emit((c * geom.col_stride() + geom.base(r0)) as u64, &band)?;
                    }
                }
            }
        }
        Ok(out_dtype)
    }

    /// Decode chunks `cs` of tensor `i` in parallel into one buffer of `n` elements.
    fn decode_chunk_range(
        &self,
        i: usize,
        cs: std::ops::Range<usize>,
        dtype: DType,
        p: &Pipeline,
        esize: usize,
        n: usize,
    ) -> Result<Vec<u8>> {
        let t = &self.file.tensors()[i];
        let mut out = vec![0u8; n * esize];
        let mut slices = Vec::with_capacity(cs.len());
        let mut rest = &mut out[..];
        for ch in &t.chunks[cs.clone()] {
            let (a, b) = rest.split_at_mut(ch.elem_count as usize * esize);
            slices.push(a);
            rest = b;
        }
        slices.into_par_iter().zip(cs).try_for_each(|(slice, c)| {
            let payload = self.file.chunk(i, c).map_err(Error::from)?;
            p.decode_into(payload, dtype, t.chunks[c].elem_count as usize, slice)
                .map_err(|e| e.with_chunk(c).with_tensor(&t.name))
        })?;
        Ok(out)
    }

    /// Decode every chunk of tensor `i` in parallel into one buffer of `n` elements.
    fn decode_chunks(
        &self,
        i: usize,
        dtype: DType,
        p: &Pipeline,
        esize: usize,
        n: usize,
    ) -> Result<Vec<u8>> {
        let chunks = self.file.tensors()[i].chunks.len();
        let out = self.decode_chunk_range(i, 0..chunks, dtype, p, esize, n)?;
        self.file.release_chunks(i, 0..chunks);
        Ok(out)
    }

    /// The stored tile assignment of a `mixed` tensor: its format table, tile grid (tiles
    /// across, down) and one table index per tile, read from the chunks' code headers (CRC
    /// checked). `None` for other codecs.
    pub fn mixed_assignment(&self, i: usize) -> Result<Option<StoredAssignment>> {
        use crate::codec::mixed::{MixedCodec, MIXED_ID};
        let t = &self.file.tensors()[i];
        let Some(first) = t.stages.first().filter(|s| s.codec_id == MIXED_ID) else {
            return Ok(None);
        };
        if t.stages.len() != 1 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "a mixed tensor behind byte stages: its tile codes are not readable in place",
            )
            .with_tensor(&t.name));
        }
        let codec = MixedCodec::from_params(&first.params).map_err(|e| e.with_tensor(&t.name))?;
        let geom = TileGeom::new(t.layout, &t.dims, self.limits.max_decoded_bytes / 4)
            .map_err(|e| e.with_tensor(&t.name))?
            .ok_or_else(|| {
                Error::bad_params("a mixed tensor in row-major layout").with_tensor(&t.name)
            })?;
        let mut codes = Vec::new();
        for (c, ch) in t.chunks.iter().enumerate() {
            let payload = self.file.chunk(i, c).map_err(Error::from)?;
            codes.extend(
                codec
                    .chunk_codes(payload, ch.elem_count as usize)
                    .map_err(|e| e.with_chunk(c).with_tensor(&t.name))?,
            );
        }
        let grid = (geom.pcols / crate::tiles::T, geom.tile_rows());
        if codes.len() != grid.0 * grid.1 {
            return Err(Error::bad_payload(format!(
                "{} tile codes for a grid of {} x {} tiles",
                codes.len(),
                grid.0,
                grid.1
            ))
            .with_tensor(&t.name));
        }
        Ok(Some(StoredAssignment {
            formats: codec.table().to_vec(),
            grid,
            codes,
        }))
    }

    /// A sparse (pruned) tensor's stored elements and total, read from its chunks' headers (CRC
    /// checked); `None` for other codecs.
    pub fn sparse_counts(&self, i: usize) -> Result<Option<(u64, u64)>> {
        let t = &self.file.tensors()[i];
        if t.stages.first().map(|s| s.codec_id) != Some(crate::codec::sparse::SPARSE_ID) {
            return Ok(None);
        }
        let (dtype, p) = self.pipeline(i)?;
        let mut kept = 0;
        for (c, ch) in t.chunks.iter().enumerate() {
            let n = ch.elem_count as usize;
            let payload = self.file.chunk(i, c).map_err(Error::from)?;
            let staged = p
                .tensor_payload(payload, dtype, n)
                .map_err(|e| e.with_chunk(c).with_tensor(&t.name))?;
            kept += crate::codec::sparse::SparseCodec::kept(&staged, n)
                .map_err(|e| e.with_chunk(c).with_tensor(&t.name))?;
        }
        Ok(Some((kept, t.numel().unwrap_or(0))))
    }

    /// Index of the tensor named `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.file.tensors().iter().position(|t| t.name == name)
    }
}

/// "GGUF" or "safetensors" when `path` is a model file of that kind (its magic, or a
/// safetensors name), for refusals that say what the file is.
fn model_kind(path: &Path) -> Option<&'static str> {
    let mut magic = [0u8; 4];
    let ok = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok();
    if ok && &magic == b"GGUF" {
        return Some("GGUF");
    }
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
        .then_some("safetensors")
}

/// A mixed tensor's assignment as stored.
#[derive(Debug, Clone)]
pub struct StoredAssignment {
    /// The format table.
    pub formats: Vec<crate::codec::mixed::TileFormat>,
    /// Tiles across and down.
    pub grid: (usize, usize),
    /// Table index per tile, row-major over the grid.
    pub codes: Vec<u8>,
}

impl StoredAssignment {
    /// Tiles per table entry.
    pub fn counts(&self) -> Vec<u64> {
        let mut c = vec![0u64; self.formats.len()];
        for &a in &self.codes {
            c[a as usize] += 1;
        }
        c
    }
}

/// Bytes a tensor decodes to, checked against the limit before anything is allocated.
pub fn decoded_len(t: &TensorEntry, dtype: DType, limits: &Limits) -> Result<usize> {
    t.numel()
        .and_then(|n| n.checked_mul(dtype.size() as u64))
        .filter(|&b| b <= limits.max_decoded_bytes)
        .map(|b| b as usize)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Limit,
                format!(
                    "shape {:?} of {dtype} exceeds the decode limit of {} bytes",
                    t.dims, limits.max_decoded_bytes
                ),
            )
            .with_tensor(&t.name)
        })
}
