//! `sparse` (id 22): sparse storage around a value codec, for pruned tensors. Spec:
//! formats-spec/sparse.md.
//!
//! A chunk keeps only its elements whose bytes are not all zero (pruned weights are +0; a -0.0
//! is kept, so a lossless value codec stays bit-exact) and records where they were, by
//! whichever is smaller for that chunk: a bitmap (one bit per element) or the gaps between kept
//! indices as LEB128 varints. The kept values, packed together, go through the inner value
//! codec (f32, f16, bf16, int, byteplane, ...). Decoding scatters them back over zeros.
//!
//! Made by `--prune` (compress) around `--codec`'s tensor codec; `sparse` is not a `--codec`.

use super::{Binds, Codec, CodecEntry, Props, TensorCodec};
use crate::dtype::DType;
use crate::error::{Error, Result};
use std::sync::Arc;

/// Registry id of `sparse`.
pub const SPARSE_ID: u16 = 22;

/// Index section modes.
const BITMAP: u8 = 0;
const GAPS: u8 = 1;

/// Sparse storage around `inner`.
#[derive(Debug, Clone)]
pub struct SparseCodec {
    inner: Arc<dyn TensorCodec>,
}

impl SparseCodec {
    /// Wrap a row-major value codec.
    pub fn new(inner: Arc<dyn TensorCodec>) -> Result<SparseCodec> {
        if inner.tiled() || inner.id() == SPARSE_ID {
            return Err(Error::config(format!(
                "pruned tensors store their kept values with a row-major value codec (f32, f16, bf16, int..., byteplane), not {}",
                inner.spec()
            )));
        }
        // Kept values are a flat run with no shape: a grouping that follows the tensor's shape
        // (rows, the whole tensor, channels along an axis) has nothing to follow. Unbound it is a
        // config error; bound to channels (whole-tensor groups) it is a malformed file.
        if inner.props().binds == Binds::Shape {
            return Err(Error::config(
                "int group=row, group=tensor and axis= follow the tensor's shape; kept values of a pruned tensor have none: use group=N (e.g. int4_g32)",
            ));
        }
        if inner.props().chunk_multiple == u64::MAX {
            return Err(Error::bad_params(format!(
                "sparse: value codec {} groups by channel of the tensor's shape; kept values have none",
                inner.spec()
            )));
        }
        Ok(SparseCodec { inner })
    }

    /// The value codec.
    pub fn inner(&self) -> &dyn TensorCodec {
        &*self.inner
    }

    /// Elements kept in one chunk's payload (for `inspect`), after checking its header.
    pub fn kept(payload: &[u8], n: usize) -> Result<u64> {
        let (k, _, _) = parse_header(payload, n)?;
        Ok(k as u64)
    }
}

/// `(kept count, where the index section ends for a bitmap (5 for gaps), mode)`, after
/// checking what the header alone can tell.
fn parse_header(payload: &[u8], n: usize) -> Result<(usize, usize, u8)> {
    let bad = |m: String| Error::bad_payload(format!("sparse payload: {m}"));
    if payload.len() < 5 {
        return Err(bad(format!(
            "{} bytes, shorter than its header",
            payload.len()
        )));
    }
    let mode = payload[0];
    let k = u32::from_le_bytes(payload[1..5].try_into().expect("4 bytes")) as usize;
    if k > n {
        return Err(bad(format!("{k} kept elements of {n}")));
    }
    let at = match mode {
        BITMAP => {
            let end = 5 + n.div_ceil(8);
            if payload.len() < end {
                return Err(bad("the bitmap is cut short".into()));
            }
            end
        }
        GAPS => 5, // the varints' length is known only by reading them
        m => return Err(bad(format!("unknown index mode {m}"))),
    };
    Ok((k, at, mode))
}

/// Kept indices of a chunk and where the inner payload starts.
fn indices(payload: &[u8], n: usize) -> Result<(Vec<usize>, usize)> {
    let bad = |m: &str| Error::bad_payload(format!("sparse payload: {m}"));
    let (k, at, mode) = parse_header(payload, n)?;
    let mut idx = Vec::with_capacity(k);
    if mode == BITMAP {
        let map = &payload[5..at];
        for (i, &b) in map.iter().enumerate() {
            let mut b = b;
            while b != 0 {
                let j = i * 8 + b.trailing_zeros() as usize;
                if j >= n {
                    return Err(bad("bitmap bits set past the chunk's end"));
                }
                idx.push(j);
                b &= b - 1;
            }
        }
        if idx.len() != k {
            return Err(bad("the bitmap's count differs from the header's"));
        }
        return Ok((idx, at));
    }
    let mut pos = at;
    let mut next = 0usize;
    for _ in 0..k {
        let mut gap = 0u64;
        let mut shift = 0;
        loop {
            let b = *payload
                .get(pos)
                .ok_or_else(|| bad("an index gap is cut short"))?;
            pos += 1;
            if shift >= 64 {
                return Err(bad("an index gap is longer than 64 bits"));
            }
            gap |= ((b & 0x7F) as u64) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let j = usize::try_from(gap)
            .ok()
            .and_then(|g| next.checked_add(g))
            .filter(|&j| j < n)
            .ok_or_else(|| bad("an index points past the chunk's end"))?;
        idx.push(j);
        next = j + 1;
    }
    Ok((idx, pos))
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

pub(super) const ENTRY: CodecEntry = CodecEntry {
    id: SPARSE_ID,
    name: "sparse",
    version: 1,
    summary: "pruned tensors: kept values through a value codec, their places as a bitmap or index gaps (made by --prune)",
    from_options: |_| {
        Err(Error::config(
            "sparse storage is made by --prune around --codec's value codec, not named itself",
        ))
    },
    from_params: |p| {
        let inner = super::inner_from_params("sparse", p)?;
        Ok(Codec::Tensor(Arc::new(SparseCodec::new(inner)?)))
    },
};

impl TensorCodec for SparseCodec {
    /// The value codec's, under sparse's id; kept values are row-major runs of any length.
    fn props(&self) -> Props {
        Props {
            id: SPARSE_ID,
            name: "sparse",
            version: 1,
            chunk_multiple: 1,
            sized: false,
            ..self.inner.props()
        }
    }
    fn params(&self) -> Vec<u8> {
        super::inner_params(&*self.inner)
    }
    fn spec(&self) -> String {
        format!("sparse[{}]", self.inner.spec())
    }
    fn max_encoded_len(&self, src: DType, n: usize) -> usize {
        // Header, the larger index section (up to 10 bytes a gap), the inner payload.
        5usize
            .saturating_add(n.saturating_mul(10).max(n.div_ceil(8)))
            .saturating_add(self.inner.max_encoded_len(src, n))
    }
    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        let es = src.size();
        let n = bytes.len() / es;
        let mut kept = Vec::new();
        let mut values = Vec::new();
        for (i, e) in bytes.chunks_exact(es).enumerate() {
            if e.iter().any(|&b| b != 0) {
                kept.push(i);
                values.extend_from_slice(e);
            }
        }
        let k = u32::try_from(kept.len())
            .map_err(|_| Error::config("sparse: a chunk keeps more than 2^32 elements"))?;
        let mut gaps = Vec::new();
        let mut next = 0;
        for &i in &kept {
            varint((i - next) as u64, &mut gaps);
            next = i + 1;
        }
        let mut out = Vec::new();
        if gaps.len() < n.div_ceil(8) {
            out.push(GAPS);
            out.extend_from_slice(&k.to_le_bytes());
            out.extend(gaps);
        } else {
            out.push(BITMAP);
            out.extend_from_slice(&k.to_le_bytes());
            let mut map = vec![0u8; n.div_ceil(8)];
            for &i in &kept {
                map[i / 8] |= 1 << (i % 8);
            }
            out.extend(map);
        }
        out.extend(self.inner.encode(src, &values)?);
        Ok(out)
    }
    fn decode(&self, payload: &[u8], src: DType, n: usize, out: &mut [u8]) -> Result<()> {
        let (idx, at) = indices(payload, n)?;
        let od = self.inner.decoded_dtype(src).size();
        let mut vals = vec![0u8; idx.len() * od];
        self.inner
            .decode(&payload[at..], src, idx.len(), &mut vals)?;
        out.fill(0);
        for (v, &j) in vals.chunks_exact(od).zip(&idx) {
            out[j * od..(j + 1) * od].copy_from_slice(v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Pipeline;

    fn sparse(spec: &str) -> SparseCodec {
        SparseCodec::new(Pipeline::parse(spec).unwrap().tensor_codec_arc()).unwrap()
    }

    fn data(n: usize, keep_every: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                let v = if i % keep_every == 0 {
                    (i as f32).sin() + 1.5
                } else {
                    0.0
                };
                v.to_le_bytes()
            })
            .collect()
    }

    #[test]
    fn roundtrip_picks_the_smaller_index() {
        for (keep, mode) in [(2, BITMAP), (50, GAPS)] {
            let b = data(1000, keep);
            let c = sparse("f32");
            let p = c.encode(DType::F32, &b).unwrap();
            assert_eq!(p[0], mode, "keep 1 in {keep}");
            let mut out = vec![0u8; b.len()];
            c.decode(&p, DType::F32, 1000, &mut out).unwrap();
            assert_eq!(out, b);
            assert_eq!(
                SparseCodec::kept(&p, 1000).unwrap(),
                1000u64.div_ceil(keep as u64)
            );
            let back = (ENTRY.from_params)(&c.params()).unwrap();
            let Codec::Tensor(t) = back else { panic!() };
            assert_eq!(t.spec(), "sparse[f32]");
        }
        // -0.0 is kept: a lossless value codec stays bit-exact.
        let b: Vec<u8> = [0.0f32, -0.0, 1.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let c = sparse("byteplane");
        assert!(c.props().lossless);
        let p = c.encode(DType::F32, &b).unwrap();
        let mut out = vec![0u8; 12];
        c.decode(&p, DType::F32, 3, &mut out).unwrap();
        assert_eq!(out, b);
        // Values through int8: the kept values are quantized, zeros stay zeros.
        let c = sparse("int8_g64");
        let b = data(4096, 3);
        let p = c.encode(DType::F32, &b).unwrap();
        let mut out = vec![0u8; b.len()];
        c.decode(&p, DType::F32, 4096, &mut out).unwrap();
        for (x, y) in b.chunks_exact(4).zip(out.chunks_exact(4)) {
            let (x, y) = (
                f32::from_le_bytes(x.try_into().unwrap()),
                f32::from_le_bytes(y.try_into().unwrap()),
            );
            assert!((x - y).abs() < 0.02 && (x == 0.0) == (y == 0.0));
        }
    }

    #[test]
    fn bad_payloads_are_errors() {
        let c = sparse("f32");
        let b = data(64, 3);
        let p = c.encode(DType::F32, &b).unwrap();
        let mut out = vec![0u8; b.len()];
        for cut in [0, 4, 6, p.len() - 1] {
            assert!(
                c.decode(&p[..cut], DType::F32, 64, &mut out).is_err(),
                "{cut}"
            );
        }
        let mut q = p.clone();
        q[1] = 200; // more kept than elements
        assert!(c.decode(&q, DType::F32, 64, &mut out).is_err());
        let mut q = p.clone();
        q[0] = 7;
        assert!(c.decode(&q, DType::F32, 64, &mut out).is_err());
        assert!(SparseCodec::new(Pipeline::parse("bfp8").unwrap().tensor_codec_arc()).is_err());
        assert!(SparseCodec::new(Pipeline::parse("int4_row").unwrap().tensor_codec_arc()).is_err());
        assert!(
            (ENTRY.from_params)(&[22, 0, 1, 0, 0, 0, 0, 0]).is_err(),
            "sparse in sparse"
        );
        // An int value codec with per-channel groups (a bound axis=) is refused.
        let int = crate::codec::Pipeline::parse("int4_axis0").unwrap();
        let bound = int.bind(&crate::codec::TensorFacts {
            dims: &[4, 64],
            amax: None,
            values: None,
        });
        let inner = bound.tensor_codec();
        let mut params = inner.id().to_le_bytes().to_vec();
        params.extend(inner.version().to_le_bytes());
        params.extend((inner.params().len() as u32).to_le_bytes());
        params.extend(inner.params());
        assert!(inner.spec().contains("channels"), "{}", inner.spec());
        assert!(
            (ENTRY.from_params)(&params).is_err(),
            "per-channel groups in sparse"
        );
    }
}
