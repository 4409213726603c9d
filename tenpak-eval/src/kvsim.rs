//! A KV cache stored in a KV method's format, inside the model (`eval ppl --kv SPEC`): each
//! layer's keys (after RoPE) and values are cast to f16 (the cache's storage type, as
//! llama.cpp's default cache), encoded with the policy's method for that (layer, K/V) in
//! 256-token chunks exactly as `tenpak kv compress` stores a dump, decoded, and only then read
//! by attention. The policy's sink and recent tokens are kept exact (f16). Every token of a window attends to the decoded cache of the whole window
//! prefix, so the figures are those of a cache written once and read back (groups that span
//! tokens are filled from the whole window, not streamed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tenpak::dtype::DType;
use tenpak::kv::method::{Policy, Which};
use tenpak::{Error, Result};

/// Tokens per encoded chunk (as `kv compress`'s default).
const CHUNK_TOKENS: u64 = 256;

/// The simulated cache: a policy and the bytes its encodings took.
pub struct KvSim {
    policy: Policy,
    kv_heads: usize,
    head_dim: usize,
    payload: AtomicU64,
    values: AtomicU64,
}

impl KvSim {
    /// A cache of `kv_heads` x `head_dim` per token under `policy`.
    pub fn new(policy: Policy, kv_heads: usize, head_dim: usize) -> Arc<KvSim> {
        Arc::new(KvSim {
            policy,
            kv_heads,
            head_dim,
            payload: AtomicU64::new(0),
            values: AtomicU64::new(0),
        })
    }

    /// Bits per cached value so far: payload bytes of every chunk (codes, scales, outliers),
    /// over the values encoded.
    pub fn bits_per_value(&self) -> f64 {
        let v = self.values.load(Ordering::Relaxed);
        if v == 0 {
            return 0.0;
        }
        8.0 * self.payload.load(Ordering::Relaxed) as f64 / v as f64
    }

    /// Encode and decode one layer's K or V of one sequence, in place.
    pub fn apply(&self, layer: usize, which: Which, x: &mut [f32]) -> Result<()> {
        let row = self.kv_heads * self.head_dim;
        let t = x.len() / row.max(1);
        let m = self.policy.method(layer as u32, which);
        // Sink and recent tokens: kept exact (f16, through the lossless method), zeroed in
        // what the lossy method encodes.
        let kept = if m.lossless() {
            Vec::new()
        } else {
            self.policy.kept(0, t as u64, t as u64)
        };
        let mut exact: Vec<(usize, Vec<f32>)> = Vec::new();
        let mut kept_payload = 0u64;
        for &(a, b) in &kept {
            let r = a as usize * row..b as usize * row;
            let v: Vec<f32> = x[r.clone()]
                .iter()
                .map(|v| half::f16::from_f32(*v).to_f32())
                .collect();
            let mut hb = Vec::new();
            tenpak::dtype::from_f32(DType::F16, &v, &mut hb)?;
            let dims = [b - a, self.kv_heads as u64, self.head_dim as u64];
            let lp =
                self.policy
                    .lossless
                    .for_kind(which)
                    .pipeline
                    .bind(&tenpak::codec::TensorFacts {
                        dims: &dims,
                        amax: None,
                        values: None,
                    });
            kept_payload += lp.encode(DType::F16, &hb)?.len() as u64;
            x[r.clone()].fill(0.0);
            exact.push((r.start, v));
        }
        let mut b = Vec::new();
        tenpak::dtype::from_f32(DType::F16, x, &mut b)?;
        for tr in &m.transforms {
            b = tenpak::kv::transform::apply(tr, DType::F16, &b)?;
        }
        let mut vals = Vec::new();
        tenpak::dtype::to_f32(DType::F16, &b, &mut vals);
        let amax = vals
            .iter()
            .filter(|v| v.is_finite())
            .fold(0f32, |a, v| a.max(v.abs()));
        let dims = [t as u64, self.kv_heads as u64, self.head_dim as u64];
        let p = m.pipeline.bind(&tenpak::codec::TensorFacts {
            dims: &dims,
            amax: Some(amax),
            values: None,
        });
        let mult = p.tensor_codec().chunk_multiple().max(1);
        let chunk = (CHUNK_TOKENS * row as u64).div_ceil(mult) * mult;
        let es = DType::F16.size();
        let mut out = Vec::with_capacity(b.len());
        let mut payload = 0u64;
        for c in b.chunks((chunk as usize) * es) {
            let enc = p.encode(DType::F16, c)?;
            payload += enc.len() as u64;
            let dec = p.decode(&enc, DType::F16, c.len() / es, u64::MAX)?;
            let dt = p.tensor_codec().decoded_dtype(DType::F16);
            if dt == DType::F16 {
                out.extend_from_slice(&dec);
            } else {
                let mut f = Vec::new();
                tenpak::dtype::to_f32(dt, &dec, &mut f);
                let mut h = Vec::new();
                tenpak::dtype::from_f32(DType::F16, &f, &mut h)?;
                out.extend_from_slice(&h);
            }
        }
        if out.len() != b.len() {
            return Err(Error::internal("KV simulation decoded a different length"));
        }
        self.payload
            .fetch_add(payload + kept_payload, Ordering::Relaxed);
        self.values.fetch_add(x.len() as u64, Ordering::Relaxed);
        let mut back = Vec::new();
        tenpak::dtype::to_f32(DType::F16, &out, &mut back);
        x.copy_from_slice(&back);
        for (at, v) in exact {
            x[at..at + v.len()].copy_from_slice(&v);
        }
        Ok(())
    }

    /// The filter to give [`crate::llama::Llama::with_kv_filter`].
    pub fn filter(self: &Arc<Self>) -> Arc<crate::llama::KvFilter> {
        let s = Arc::clone(self);
        Arc::new(move |layer, k: &mut [f32], v: &mut [f32]| {
            s.apply(layer, Which::K, k)?;
            s.apply(layer, Which::V, v)
        })
    }
}
