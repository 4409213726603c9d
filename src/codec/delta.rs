//! `delta` (id 23): a tensor stored as its difference from the same tensor of a base model.
//! Spec: formats-spec/delta.md.
//!
//! Two modes. `xor`: the XOR of the tensor's bytes with the base's (same dtype), through a
//! lossless value codec (byteplane, zstd): bit-exact, and the exponent planes of a fine-tune are
//! mostly zeros. `sub`: `x - base` in f32 through any row-major value codec (int8, f16, ...),
//! decoded as `base + delta`. The params carry a SHA-256 fingerprint of the base tensor
//! ([`fingerprint`]), so a wrong base is refused by name.
//!
//! The codec's own decode gives the stored difference (what `verify` checks); putting the
//! base back is the archive's job (`Archive::with_base`). Made by `compress --base`.

use super::{Codec, CodecEntry, Props, TensorCodec};
use crate::dtype::DType;
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Registry id of `delta`.
pub const DELTA_ID: u16 = 23;

/// How the difference is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes XOR base bytes (lossless).
    Xor,
    /// f32 `x - base`.
    Sub,
}

/// A tensor as a difference from its base.
#[derive(Debug, Clone)]
pub struct DeltaCodec {
    /// How the difference is formed.
    pub mode: Mode,
    /// SHA-256 of the base tensor ([`fingerprint`]).
    pub base: [u8; 32],
    inner: Arc<dyn TensorCodec>,
}

/// SHA-256 of a tensor: its dtype name, a zero byte, its dims as u64 LE, its bytes.
pub fn fingerprint(dtype: DType, dims: &[u64], data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(dtype.name().as_bytes());
    h.update([0]);
    for d in dims {
        h.update(d.to_le_bytes());
    }
    h.update(data);
    h.finalize().into()
}

/// Hex of a fingerprint's first 8 bytes, for messages.
pub fn short(f: &[u8; 32]) -> String {
    f[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl DeltaCodec {
    /// A difference against a base with fingerprint `base`, stored through `inner`.
    pub fn new(mode: Mode, base: [u8; 32], inner: Arc<dyn TensorCodec>) -> Result<DeltaCodec> {
        if inner.tiled() || inner.id() == DELTA_ID {
            return Err(Error::config(format!(
                "a delta is stored with a row-major value codec, not {}",
                inner.spec()
            )));
        }
        if mode == Mode::Xor && !inner.lossless() {
            return Err(Error::config("xor deltas need a lossless value codec"));
        }
        Ok(DeltaCodec { mode, base, inner })
    }

    /// Read stored params.
    pub fn from_params(p: &[u8]) -> Result<DeltaCodec> {
        let bad = |m: &str| Error::bad_params(format!("delta parameters: {m}"));
        if p.len() < 41 {
            return Err(bad("cut short"));
        }
        let mode = match p[0] {
            0 => Mode::Xor,
            1 => Mode::Sub,
            m => return Err(bad(&format!("unknown mode {m}"))),
        };
        let base: [u8; 32] = p[1..33].try_into().expect("32 bytes");
        DeltaCodec::new(mode, base, super::inner_from_params("delta", &p[33..])?)
    }

    /// The value codec.
    pub fn inner(&self) -> &dyn TensorCodec {
        &*self.inner
    }

    /// The tensor from its decoded difference `delta` (of `decoded_dtype`) and
    /// the base's bytes (`base_dtype`, same element count): `xor` gives `src` bytes, `sub` f32.
    pub fn apply(&self, delta: &mut [u8], base: &[u8], base_dtype: DType) {
        match self.mode {
            Mode::Xor => {
                for (d, b) in delta.iter_mut().zip(base) {
                    *d ^= b;
                }
            }
            Mode::Sub => {
                let mut bf = Vec::new();
                crate::dtype::to_f32(base_dtype, base, &mut bf);
                for (d, b) in delta.chunks_exact_mut(4).zip(bf) {
                    let v = f32::from_le_bytes(d.try_into().expect("4 bytes")) + b;
                    d.copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
}

pub(super) const ENTRY: CodecEntry = CodecEntry {
    id: DELTA_ID,
    name: "delta",
    version: 1,
    summary: "a tensor as its difference from a base model's (xor + lossless, or f32 difference + any codec); made by --base",
    from_options: |_| {
        Err(Error::config(
            "deltas are made by compress --base BASE around --codec, not named themselves",
        ))
    },
    from_params: |p| Ok(Codec::Tensor(Arc::new(DeltaCodec::from_params(p)?))),
};

impl TensorCodec for DeltaCodec {
    /// The value codec's, under delta's id; a difference (`sub`) decodes to f32.
    fn props(&self) -> Props {
        let inner = self.inner.props();
        Props {
            id: DELTA_ID,
            name: "delta",
            version: 1,
            decodes_to: match self.mode {
                Mode::Xor => inner.decodes_to,
                Mode::Sub => Some(DType::F32),
            },
            ..inner
        }
    }
    fn params(&self) -> Vec<u8> {
        let ip = self.inner.params();
        let mut p = vec![match self.mode {
            Mode::Xor => 0,
            Mode::Sub => 1,
        }];
        p.extend_from_slice(&self.base);
        p.extend_from_slice(&self.inner.id().to_le_bytes());
        p.extend_from_slice(&self.inner.version().to_le_bytes());
        p.extend_from_slice(&(ip.len() as u32).to_le_bytes());
        p.extend(ip);
        p
    }
    fn spec(&self) -> String {
        let m = match self.mode {
            Mode::Xor => "xor",
            Mode::Sub => "sub",
        };
        format!("delta[{m},{}]", self.inner.spec())
    }
    fn max_encoded_len(&self, src: DType, n: usize) -> usize {
        self.inner.max_encoded_len(src, n)
    }
    /// Encodes a difference already formed (the compressor forms it against the base).
    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        self.inner.encode(src, bytes)
    }
    /// Decodes the stored difference (as f32 for `sub`); see [`DeltaCodec::apply`].
    fn decode(&self, payload: &[u8], src: DType, n: usize, out: &mut [u8]) -> Result<()> {
        let inner = self.inner.decoded_dtype(src);
        if self.mode == Mode::Xor || inner == DType::F32 {
            return self.inner.decode(payload, src, n, out);
        }
        let mut tmp = vec![0u8; n * inner.size()];
        self.inner.decode(payload, src, n, &mut tmp)?;
        let mut f = Vec::new();
        crate::dtype::to_f32(inner, &tmp, &mut f);
        for (o, v) in out.chunks_exact_mut(4).zip(f) {
            o.copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Pipeline;

    #[test]
    fn params_roundtrip_and_modes() {
        let inner = Pipeline::parse("byteplane").unwrap().tensor_codec_arc();
        let fp = fingerprint(DType::F32, &[2, 2], &[0; 16]);
        let c = DeltaCodec::new(Mode::Xor, fp, inner).unwrap();
        let Codec::Tensor(back) = (ENTRY.from_params)(&c.params()).unwrap() else {
            panic!()
        };
        assert_eq!(back.spec(), "delta[xor,byteplane]");
        assert!(back.lossless());
        let lossy = Pipeline::parse("int8_g64").unwrap().tensor_codec_arc();
        assert!(DeltaCodec::new(Mode::Xor, fp, lossy.clone()).is_err());
        let s = DeltaCodec::new(Mode::Sub, fp, lossy).unwrap();
        let mut d: Vec<u8> = [0.5f32, -1.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let base: Vec<u8> = [1.0f32, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        s.apply(&mut d, &base, DType::F32);
        assert_eq!(
            d,
            [1.5f32, 0.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>()
        );
        assert!(DeltaCodec::new(
            Mode::Sub,
            fp,
            Pipeline::parse("bfp8").unwrap().tensor_codec_arc()
        )
        .is_err());
        for bad in [&[][..], &[2; 41], &[0; 40]] {
            assert!((ENTRY.from_params)(bad).is_err());
        }
        assert_ne!(
            fp,
            fingerprint(DType::F32, &[4], &[0; 16]),
            "the shape is part of it"
        );
    }
}
