//! `zstd` (id 256): a byte stage compressing with Zstandard.
//!
//! Spec: formats-spec/codecs.md §zstd. Params: one byte, the level as i8. The payload is one
//! zstd frame. Decoding is capped at the expected size (a hostile frame cannot make us allocate
//! more). Config: `--codec zstd:level=19`, default level 3, range -7..=22.

use super::{ByteCodec, Codec, CodecEntry};
use crate::error::{Error, Result};
use std::sync::Arc;

/// Zstandard at a fixed level.
#[derive(Debug, Clone, Copy)]
pub struct ZstdCodec {
    level: i8,
}

impl ZstdCodec {
    /// A codec at `level` (-7..=22).
    pub fn new(level: i32) -> Self {
        ZstdCodec {
            level: level.clamp(-7, 22) as i8,
        }
    }
}

pub(super) const ENTRY: CodecEntry = CodecEntry {
    id: 256,
    name: "zstd",
    version: 1,
    summary: "Zstandard byte stage, option level=-7..22 (default 3)",
    from_options: |o| {
        Ok(Codec::Bytes(Arc::new(ZstdCodec::new(
            o.int("level", 3, -7, 22)? as i32,
        ))))
    },
    from_params: |p| match p {
        [l] if (-7..=22).contains(&(*l as i8)) => {
            Ok(Codec::Bytes(Arc::new(ZstdCodec { level: *l as i8 })))
        }
        _ => Err(Error::bad_params(format!(
            "zstd params must be one level byte in -7..=22, found {p:?}"
        ))),
    },
};

impl ByteCodec for ZstdCodec {
    fn id(&self) -> u16 {
        ENTRY.id
    }
    fn name(&self) -> &'static str {
        ENTRY.name
    }
    fn params(&self) -> Vec<u8> {
        vec![self.level as u8]
    }
    fn spec(&self) -> String {
        format!("zstd:level={}", self.level)
    }
    fn encode(&self, b: &[u8]) -> Result<Vec<u8>> {
        zstd_encode(b, self.level as i32)
    }
    fn decode(&self, b: &[u8], max_len: usize) -> Result<Vec<u8>> {
        zstd_decode(b, max_len)
    }
}

/// One zstd frame at `level`, with the content size in the frame header.
/// Levels up to this one keep a compression context per thread (a few MiB each).
const KEPT_CONTEXT_LEVEL: i32 = 5;

pub(crate) fn zstd_encode(b: &[u8], level: i32) -> Result<Vec<u8>> {
    // One compression context per thread, kept for the fast levels: making one costs more
    // than compressing a small chunk (its tables are allocated and cleared). A one-shot
    // compression with the context set to `level` gives the same frame as a fresh context.
    // High levels' contexts are large (tens of MiB), so they are not kept per thread.
    if level > KEPT_CONTEXT_LEVEL {
        return ::zstd::bulk::compress(b, level).map_err(|e| Error::io("zstd compress", e));
    }
    thread_local! {
        static CCTX: std::cell::RefCell<Option<(i32, ::zstd::bulk::Compressor<'static>)>> =
            const { std::cell::RefCell::new(None) };
    }
    CCTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            let z =
                ::zstd::bulk::Compressor::new(level).map_err(|e| Error::io("zstd compress", e))?;
            *c = Some((level, z));
        }
        let (_, z) = c.as_mut().expect("set above");
        z.compress(b).map_err(|e| Error::io("zstd compress", e))
    })
}

/// Decode one frame; output over `max_len` bytes is an error.
pub(crate) fn zstd_decode(b: &[u8], max_len: usize) -> Result<Vec<u8>> {
    // The frame's declared size is checked first so a lying header cannot allocate `max_len`.
    match ::zstd::zstd_safe::get_frame_content_size(b) {
        Ok(Some(n)) if n > max_len as u64 => {
            return Err(Error::bad_payload(format!(
                "zstd frame declares {n} bytes, more than the {max_len} expected"
            )))
        }
        Err(_) => return Err(Error::bad_payload("not a zstd frame")),
        _ => {}
    }
    ::zstd::bulk::decompress(b, max_len)
        .map_err(|e| Error::bad_payload(format!("zstd payload does not decode: {e}")))
}
