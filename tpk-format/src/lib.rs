//! The bytes of the `.tpk` container, version 1: header, index, chunk table, CRCs, limits.
//!
//! This crate is the whole of `formats-spec/tpk.md` in code. It knows nothing about codecs: a
//! tensor's codec pipeline is a list of opaque [`Stage`] records and a chunk is opaque bytes.
//! Keeping it a separate crate lets the compiler enforce that boundary.
//!
//! Reading validates the whole index at [`TpkFile::open`] with checked arithmetic, so every later
//! access is in bounds by construction. Writing goes to a temporary file beside the destination
//! and is renamed into place by [`TpkWriter::finish`]; dropping an unfinished writer removes it.

#![warn(missing_docs)]

pub mod atomic;
mod error;
mod read;
mod write;

pub use atomic::AtomicFile;
pub use error::FormatError;
pub use read::{TpkFile, VerifyProblem};
pub use write::{Finished, Pending, TpkWriter};

/// File signature: `\x89TPK\r\n\x1a\n`.
pub const MAGIC: [u8; 8] = [0x89, b'T', b'P', b'K', 0x0D, 0x0A, 0x1A, 0x0A];
/// Major version this crate reads and writes.
pub const VERSION_MAJOR: u16 = 1;
/// Minor version this crate writes (and the newest whose fields it knows).
pub const VERSION_MINOR: u16 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 64;
/// Alignment of every payload and of the index.
pub const ALIGN: u64 = 64;

/// Resource limits a reader enforces; see `formats-spec/tpk.md` §6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest index accepted, in bytes.
    pub max_index_len: u64,
    /// Largest number of tensors.
    pub max_tensors: u64,
    /// Longest string (names, metadata values, codec names), in bytes.
    pub max_string_len: u64,
    /// Most dimensions of a tensor.
    pub max_dims: u8,
    /// Most codec stages in a pipeline.
    pub max_stages: u8,
    /// Largest decoded tensor, in bytes, that a consumer should agree to allocate.
    pub max_decoded_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_index_len: 1 << 30,
            max_tensors: 10_000_000,
            max_string_len: 64 << 20,
            max_dims: 16,
            max_stages: 8,
            max_decoded_bytes: 64 << 30,
        }
    }
}

impl Limits {
    /// Small limits for fuzzing and tests of the limit paths.
    pub fn small() -> Self {
        Limits {
            max_index_len: 1 << 20,
            max_tensors: 1000,
            max_string_len: 4096,
            max_dims: 16,
            max_stages: 8,
            max_decoded_bytes: 16 << 20,
        }
    }
}

/// One codec stage of a tensor's pipeline, opaque to the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Stable numeric codec id (never renumbered or reused).
    pub codec_id: u16,
    /// Codec name, so a reader lacking the codec can say which one.
    pub codec_name: String,
    /// Codec payload version.
    pub codec_version: u16,
    /// Canonical codec parameters, defined by the codec.
    pub params: Vec<u8>,
}

/// Where one chunk's payload lies and which elements it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEntry {
    /// Absolute file offset of the payload (a multiple of 64).
    pub offset: u64,
    /// Payload length in bytes.
    pub len: u64,
    /// CRC-32 of the payload.
    pub crc32: u32,
    /// First element of the tensor held by this chunk.
    pub elem_start: u64,
    /// Number of elements held by this chunk (> 0).
    pub elem_count: u64,
}

/// One tensor of the index.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    /// Tensor name, unique in the file.
    pub name: String,
    /// Element type fed to the codec (`F32`, `BF16`, `I64`, ...).
    pub dtype: String,
    /// Shape; empty for a scalar.
    pub dims: Vec<u64>,
    /// Size of the tensor in its source file, in bytes.
    pub source_bytes: u64,
    /// Codec pipeline, stage 0 first.
    pub stages: Vec<Stage>,
    /// Compress-time metrics as (name, value).
    pub metrics: Vec<(String, f64)>,
    /// Chunk table in element order.
    pub chunks: Vec<ChunkEntry>,
    /// Order of the elements the chunks hold (format 1.1; 1.0 files are all row-major).
    pub layout: Layout,
}

/// Order in which a tensor's chunks hold its elements (formats-spec/tpk.md §4 "Layout").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// The tensor's elements in row-major order: chunks cover `0..numel`.
    #[default]
    RowMajor,
    /// 32x32 tiles of the tensor viewed as 2-D, `[product of all dims but the last, last dim]`,
    /// zero-padded to multiples of 32; tiles row-major over the tile grid, elements row-major
    /// inside a tile. Chunks cover `0..padded_rows * padded_cols`.
    Tiles32,
    /// As `Tiles32`, of the tensor with its axes reversed first (the transpose of a matrix).
    Tiles32Transposed,
}

impl Layout {
    /// On-disk code.
    pub fn code(self) -> u8 {
        match self {
            Layout::RowMajor => 0,
            Layout::Tiles32 => 1,
            Layout::Tiles32Transposed => 2,
        }
    }

    /// Name in reports: `row-major`, `tiles32` or `tiles32-transposed`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::RowMajor => "row-major",
            Layout::Tiles32 => "tiles32",
            Layout::Tiles32Transposed => "tiles32-transposed",
        }
    }

    /// From the on-disk code.
    pub fn from_code(c: u8) -> Option<Layout> {
        match c {
            0 => Some(Layout::RowMajor),
            1 => Some(Layout::Tiles32),
            2 => Some(Layout::Tiles32Transposed),
            _ => None,
        }
    }

    /// The 2-D view `(rows, cols)` this layout tiles, for a tensor of shape `dims`
    /// (`None` for row-major or on overflow).
    pub fn view(self, dims: &[u64]) -> Option<(u64, u64)> {
        let (first, rest): (u64, &[u64]) = match self {
            Layout::RowMajor => return None,
            Layout::Tiles32 => match dims.split_last() {
                Some((&last, rest)) => (last, rest),
                None => (1, &[]),
            },
            // Reversed axes: the last dim of the view is the tensor's first.
            Layout::Tiles32Transposed => match dims.split_first() {
                Some((&first, rest)) => (first, rest),
                None => (1, &[]),
            },
        };
        Some((checked_numel(rest)?, first))
    }

    /// Elements the chunks of a tensor of shape `dims` cover.
    pub fn space(self, dims: &[u64]) -> Option<u64> {
        match self.view(dims) {
            None => checked_numel(dims),
            Some((r, c)) => {
                if r == 0 || c == 0 {
                    return Some(0);
                }
                r.checked_next_multiple_of(32)?
                    .checked_mul(c.checked_next_multiple_of(32)?)
            }
        }
    }
}

impl TensorEntry {
    /// Element count (product of dims); `None` on overflow.
    pub fn numel(&self) -> Option<u64> {
        checked_numel(&self.dims)
    }

    /// Total payload bytes of this tensor.
    pub fn payload_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.len).sum()
    }

    /// Value of a metric by name.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

/// The 64-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Major format version.
    pub major: u16,
    /// Minor format version.
    pub minor: u16,
    /// Flags (none defined in 1.x).
    pub flags: u32,
    /// Offset of the index.
    pub index_offset: u64,
    /// Length of the index.
    pub index_len: u64,
    /// CRC-32 of the index.
    pub index_crc: u32,
}

impl Header {
    /// Serialize, computing the header CRC.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.major.to_le_bytes());
        b[10..12].copy_from_slice(&self.minor.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.index_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.index_len.to_le_bytes());
        b[32..36].copy_from_slice(&self.index_crc.to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }
}

/// Product of `dims`, `None` on overflow. Order-independent: any zero dimension gives 0, so
/// `[0, 2^40, 2^40]` and `[2^40, 2^40, 0]` agree (a plain checked fold would not).
pub fn checked_numel(dims: &[u64]) -> Option<u64> {
    if dims.contains(&0) {
        return Some(0);
    }
    dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
}

/// `align64(x)`, `None` on overflow.
pub fn align_up(x: u64) -> Option<u64> {
    x.checked_add(ALIGN - 1).map(|v| v & !(ALIGN - 1))
}

/// Whether CRCs are checked: never under `cfg(fuzzing)`, so the fuzzer reaches the parsers.
pub(crate) const CHECK_CRC: bool = !cfg!(fuzzing);
