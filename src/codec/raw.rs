//! `raw` (id 1): the source bytes, unchanged. Bit-exact for every dtype.
//!
//! Spec: formats-spec/codecs.md §raw. Config: `--codec raw` (no options).

use super::{expect_len, no_params, Codec, CodecEntry, Props, TensorCodec};
use crate::dtype::DType;
use crate::error::Result;
use std::sync::Arc;

/// Stores the little-endian source elements as they are.
#[derive(Debug, Clone, Copy)]
pub struct RawCodec;

pub(super) const ENTRY: CodecEntry = CodecEntry {
    id: 1,
    name: "raw",
    version: 1,
    summary: "source bytes, unchanged (lossless)",
    from_options: |_| Ok(Codec::Tensor(Arc::new(RawCodec))),
    from_params: |p| {
        no_params("raw", p)?;
        Ok(Codec::Tensor(Arc::new(RawCodec)))
    },
};

const PROPS: Props = Props {
    sized: true,
    ..Props::lossless(ENTRY.id, ENTRY.name)
};

impl TensorCodec for RawCodec {
    fn props(&self) -> Props {
        PROPS
    }
    fn max_encoded_len(&self, src: DType, n: usize) -> usize {
        n.saturating_mul(src.size())
    }
    fn encode(&self, _: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        Ok(bytes.to_vec())
    }
    fn decode(&self, payload: &[u8], _: DType, _: usize, out: &mut [u8]) -> Result<()> {
        expect_len("raw", payload, out.len())?;
        out.copy_from_slice(payload);
        Ok(())
    }
}
