//! Element types of source tensors and their conversions to and from f32.

use crate::error::{Error, Result};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// Element type of a tensor's bytes (safetensors names on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// bool, one byte.
    Bool,
    /// u8.
    U8,
    /// i8.
    I8,
    /// u16.
    U16,
    /// i16.
    I16,
    /// u32.
    U32,
    /// i32.
    I32,
    /// u64.
    U64,
    /// i64.
    I64,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE single.
    F32,
    /// IEEE double.
    F64,
    /// OCP FP8 E4M3 (the "fn" variant: no infinities, NaN = S.1111.111).
    F8E4M3,
    /// OCP FP8 E5M2 (IEEE-like, with infinities).
    F8E5M2,
}

impl DType {
    /// All dtypes, for parsing.
    pub const ALL: [DType; 15] = [
        DType::Bool,
        DType::U8,
        DType::I8,
        DType::U16,
        DType::I16,
        DType::U32,
        DType::I32,
        DType::U64,
        DType::I64,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
        DType::F8E4M3,
        DType::F8E5M2,
    ];

    /// Name as written in the index and by safetensors.
    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "BOOL",
            DType::U8 => "U8",
            DType::I8 => "I8",
            DType::U16 => "U16",
            DType::I16 => "I16",
            DType::U32 => "U32",
            DType::I32 => "I32",
            DType::U64 => "U64",
            DType::I64 => "I64",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F32 => "F32",
            DType::F64 => "F64",
            DType::F8E4M3 => "F8_E4M3",
            DType::F8E5M2 => "F8_E5M2",
        }
    }

    /// Parse an index / safetensors name.
    pub fn from_name(s: &str) -> Result<DType> {
        DType::ALL
            .iter()
            .copied()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                Error::new(
                    crate::ErrorKind::Unsupported,
                    format!("unknown dtype '{s}'"),
                )
            })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::Bool | DType::U8 | DType::I8 | DType::F8E4M3 | DType::F8E5M2 => 1,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
        }
    }

    /// Floating-point types: the ones lossy codecs may touch.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F16 | DType::BF16 | DType::F32 | DType::F64 | DType::F8E4M3 | DType::F8E5M2
        )
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// FP8 E4M3 (fn) to f32: bias 7, subnormals, 0x7F / 0xFF are NaN, no infinities.
pub fn f8e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let e = ((b >> 3) & 0xF) as i32;
    let m = (b & 0x7) as f32;
    if e == 0xF && b & 0x7 == 0x7 {
        return f32::NAN;
    }
    if e == 0 {
        sign * m / 8.0 * 2f32.powi(-6)
    } else {
        sign * (1.0 + m / 8.0) * 2f32.powi(e - 7)
    }
}

/// FP8 E5M2 to f32: exactly the top byte of an f16.
pub fn f8e5m2_to_f32(b: u8) -> f32 {
    f16::from_bits((b as u16) << 8).to_f32()
}

/// Decode elements of `dtype` from little-endian bytes into f32 (integers converted by value).
/// `bytes.len()` must be a multiple of the element size.
pub fn to_f32(dtype: DType, bytes: &[u8], out: &mut Vec<f32>) {
    out.clear();
    out.reserve(bytes.len() / dtype.size());
    macro_rules! conv {
        ($n:expr, $f:expr) => {
            out.extend(bytes.chunks_exact($n).map(|c| $f(c.try_into().unwrap())))
        };
    }
    match dtype {
        DType::F32 => conv!(4, f32::from_le_bytes),
        DType::F16 => {
            let mut h = [f16::ZERO; 1024];
            let mut f = [0f32; 1024];
            for block in bytes.chunks(2048) {
                let n = block.len() / 2;
                for (x, c) in h.iter_mut().zip(block.chunks_exact(2)) {
                    *x = f16::from_le_bytes([c[0], c[1]]);
                }
                h[..n].convert_to_f32_slice(&mut f[..n]);
                out.extend_from_slice(&f[..n]);
            }
        }
        DType::BF16 => conv!(2, |c| bf16::from_le_bytes(c).to_f32()),
        DType::F64 => conv!(8, |c| f64::from_le_bytes(c) as f32),
        DType::F8E4M3 => out.extend(bytes.iter().map(|&b| f8e4m3_to_f32(b))),
        DType::F8E5M2 => out.extend(bytes.iter().map(|&b| f8e5m2_to_f32(b))),
        DType::Bool | DType::U8 => out.extend(bytes.iter().map(|&b| b as f32)),
        DType::I8 => out.extend(bytes.iter().map(|&b| b as i8 as f32)),
        DType::U16 => conv!(2, |c| u16::from_le_bytes(c) as f32),
        DType::I16 => conv!(2, |c| i16::from_le_bytes(c) as f32),
        DType::U32 => conv!(4, |c| u32::from_le_bytes(c) as f32),
        DType::I32 => conv!(4, |c| i32::from_le_bytes(c) as f32),
        DType::U64 => conv!(8, |c| u64::from_le_bytes(c) as f32),
        DType::I64 => conv!(8, |c| i64::from_le_bytes(c) as f32),
    }
}

/// Decode elements to f64 (exact for every dtype but 64-bit integers beyond 2^53); for metrics.
pub fn to_f64(dtype: DType, bytes: &[u8]) -> Vec<f64> {
    macro_rules! conv {
        ($n:expr, $f:expr) => {
            bytes
                .chunks_exact($n)
                .map(|c| $f(c.try_into().unwrap()))
                .collect()
        };
    }
    match dtype {
        DType::F64 => conv!(8, f64::from_le_bytes),
        DType::I64 => conv!(8, |c| i64::from_le_bytes(c) as f64),
        DType::U64 => conv!(8, |c| u64::from_le_bytes(c) as f64),
        DType::I32 => conv!(4, |c| i32::from_le_bytes(c) as f64),
        DType::U32 => conv!(4, |c| u32::from_le_bytes(c) as f64),
        // Every other type converts to f32 exactly.
        _ => {
            let mut f = Vec::new();
            to_f32(dtype, bytes, &mut f);
            f.into_iter().map(f64::from).collect()
        }
    }
}

/// bf16 from f32 bits, round to nearest even; NaN becomes the canonical 0x7FC0
/// (formats-spec/float.md, after tt-metal's `fp32_to_bf16_bits_round_to_nearest_even`).
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7FC0;
    }
    let u = x.to_bits();
    ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) as u16
}

/// Convert f32 values to the little-endian bytes of a float dtype (for output).
/// Integer dtypes are not a conversion target: callers write lossless bytes for those.
pub fn from_f32(dtype: DType, vals: &[f32], out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    out.reserve(vals.len() * dtype.size());
    match dtype {
        DType::F32 => vals
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DType::F16 => {
            // Blocks through the slice conversion, which uses the CPU's F16C instructions eight
            // lanes at a time where it has them (the same round-to-nearest-even as one by one).
            let mut h = [f16::ZERO; 1024];
            for block in vals.chunks(1024) {
                let h = &mut h[..block.len()];
                h.convert_from_f32_slice(block);
                h.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
        }
        DType::BF16 => vals
            .iter()
            .for_each(|v| out.extend_from_slice(&f32_to_bf16_bits(*v).to_le_bytes())),
        DType::F64 => vals
            .iter()
            .for_each(|v| out.extend_from_slice(&(*v as f64).to_le_bytes())),
        other => {
            return Err(Error::new(
                crate::ErrorKind::Unsupported,
                format!("cannot convert f32 values to {other}"),
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_vectors_from_formats_md() {
        let cases: [(u32, u16); 10] = [
            (0x3F800000, 0x3F80),
            (0x3F808000, 0x3F80),
            (0x3F818000, 0x3F82),
            (0x3F808001, 0x3F81),
            (0x7F7FFFFF, 0x7F80),
            (0x80000000, 0x8000),
            (0x00000001, 0x0000),
            (0x7F800000, 0x7F80),
            (0xFFC00001, 0x7FC0),
            (0x40490FDB, 0x4049),
        ];
        for (x, want) in cases {
            assert_eq!(f32_to_bf16_bits(f32::from_bits(x)), want, "{x:#x}");
        }
    }

    #[test]
    fn fp8_values() {
        assert_eq!(f8e4m3_to_f32(0x7E), 448.0);
        assert_eq!(f8e4m3_to_f32(0x38), 1.0);
        assert_eq!(f8e4m3_to_f32(0x01), 2f32.powi(-9));
        assert!(f8e4m3_to_f32(0x7F).is_nan());
        assert_eq!(f8e5m2_to_f32(0x3C), 1.0);
        assert_eq!(f8e5m2_to_f32(0x7B), 57344.0);
        assert!(f8e5m2_to_f32(0x7C).is_infinite());
    }
}
