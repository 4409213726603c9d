//! `f32` (id 2), `f16` (id 3), `bf16` (id 4): convert float elements to one float type.
//!
//! Spec: formats-spec/codecs.md §float. Elements are converted to f32, then to the target with
//! round-to-nearest-even (bf16: the tt-metal rule, NaN -> 0x7FC0); stored little-endian,
//! row-major. Lossless only when the source already is the target type.
//! Config: `--codec bf16`; `bf16:order=tile` stores the elements in TTNN tile order (the
//! container's `tiles32` layout: 32x32 tiles, 2048 bytes each) instead of row-major.

use super::{expect_len, no_params, Codec, CodecEntry, Props, TensorCodec};
use crate::dtype::{self, DType};
use crate::error::Result;
use std::sync::Arc;

/// Float conversion codec to `target` (F32, F16 or BF16).
#[derive(Debug, Clone, Copy)]
pub struct FloatCodec {
    target: DType,
    /// bf16 only: elements in 32x32 tile order (payload version 2, params `[1]`).
    tile: bool,
}

impl FloatCodec {
    /// The codec for `target`, which must be F32, F16 or BF16.
    pub fn new(target: DType) -> Option<Self> {
        matches!(target, DType::F32 | DType::F16 | DType::BF16).then_some(FloatCodec {
            target,
            tile: false,
        })
    }
}

macro_rules! entry {
    ($id:expr, $name:expr, $dt:expr, $summary:expr) => {
        CodecEntry {
            id: $id,
            name: $name,
            version: 1,
            summary: $summary,
            from_options: |_| {
                Ok(Codec::Tensor(Arc::new(FloatCodec {
                    target: $dt,
                    tile: false,
                })))
            },
            from_params: |p| {
                no_params($name, p)?;
                Ok(Codec::Tensor(Arc::new(FloatCodec {
                    target: $dt,
                    tile: false,
                })))
            },
        }
    };
}

pub(super) const F32_ENTRY: CodecEntry = entry!(2, "f32", DType::F32, "convert floats to f32");
pub(super) const F16_ENTRY: CodecEntry = entry!(
    3,
    "f16",
    DType::F16,
    "convert floats to IEEE f16 (round to nearest even)"
);
pub(super) const BF16_ENTRY: CodecEntry = CodecEntry {
    id: 4,
    name: "bf16",
    version: 2,
    summary: "convert floats to bf16 (round to nearest even); order=tile for TTNN tile order",
    from_options: |o| {
        let tile = o.choice("order", &["row", "tile"])? == "tile";
        Ok(Codec::Tensor(Arc::new(FloatCodec {
            target: DType::BF16,
            tile,
        })))
    },
    from_params: |p| {
        let tile = match p {
            [] => false,
            [1] => true,
            _ => {
                return Err(crate::error::Error::bad_params(format!(
                    "bf16 parameters {p:?}: expected none or [1] (tile order)"
                )))
            }
        };
        Ok(Codec::Tensor(Arc::new(FloatCodec {
            target: DType::BF16,
            tile,
        })))
    },
};

/// A lossy float conversion: exact for the sources it keeps or widens.
const fn float_props(entry: &CodecEntry, target: DType, exact_for: &'static [DType]) -> Props {
    Props {
        exact_for,
        decodes_to: Some(target),
        ..Props::lossy(entry.id, entry.name)
    }
}

const F32_PROPS: Props = float_props(
    &F32_ENTRY,
    DType::F32,
    &[
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F8E4M3,
        DType::F8E5M2,
    ],
);
const F16_PROPS: Props = float_props(&F16_ENTRY, DType::F16, &[DType::F16]);
const BF16_PROPS: Props = float_props(&BF16_ENTRY, DType::BF16, &[DType::BF16]);
/// Tile order is a different payload (version 2): readers before it must refuse, not misplace.
const BF16_TILE_PROPS: Props = Props {
    version: 2,
    tiled: true,
    ..BF16_PROPS
};

impl TensorCodec for FloatCodec {
    fn props(&self) -> Props {
        match (self.target, self.tile) {
            (DType::F32, _) => F32_PROPS,
            (DType::F16, _) => F16_PROPS,
            (_, false) => BF16_PROPS,
            (_, true) => BF16_TILE_PROPS,
        }
    }
    fn params(&self) -> Vec<u8> {
        if self.tile {
            vec![1]
        } else {
            Vec::new()
        }
    }
    fn spec(&self) -> String {
        if self.tile {
            "bf16:order=tile".into()
        } else {
            self.props().name.into()
        }
    }
    fn max_encoded_len(&self, _: DType, n: usize) -> usize {
        n.saturating_mul(self.target.size())
    }
    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        if src == self.target {
            return Ok(bytes.to_vec());
        }
        let mut f = Vec::new();
        dtype::to_f32(src, bytes, &mut f);
        let mut out = Vec::new();
        dtype::from_f32(self.target, &f, &mut out)?;
        Ok(out)
    }
    fn decode(&self, payload: &[u8], _: DType, _: usize, out: &mut [u8]) -> Result<()> {
        expect_len(self.props().name, payload, out.len())?;
        out.copy_from_slice(payload);
        Ok(())
    }
}
