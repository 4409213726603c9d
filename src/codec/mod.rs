//! Codecs: a small trait pair, a registry with stable numeric ids, and pipelines.
//!
//! A tensor's pipeline is one [`TensorCodec`] (elements -> bytes) followed by zero or more
//! [`ByteCodec`]s (bytes -> bytes), the zarrs split. Every codec that is implemented has one
//! [`CodecEntry`] in [`REGISTRY`]; a codec that is not implemented is absent, never faked.
//! Codecs do no I/O and know nothing about the container.
//!
//! Command-line / config syntax of a pipeline: `NAME[:key=value,...][+NAME[:key=value,...]]...`,
//! e.g. `bf16`, `zstd:level=19`, `bf16+zstd:level=3`, `byteplane`. A pipeline that starts with a
//! byte codec gets `raw` in front (`zstd` means `raw+zstd`).

pub mod bfp;
mod byteplane;
pub mod calibrated;
pub mod catalog;
pub mod delta;
mod float;
pub mod gear;
pub mod grid;
mod huffman;
pub mod int;
pub mod kvq;
pub mod lowrank;
pub mod mixed;
pub mod mx;
mod raw;
pub mod rot;
pub mod sparse;
pub mod tile;
pub mod vq;
mod zstd;

use crate::dtype::DType;
use crate::error::{Error, ErrorKind, Result};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

pub use bfp::{BfpCodec, Fp0Codec};
pub use byteplane::ByteplaneCodec;
pub use float::FloatCodec;
pub use mx::{Mxfp4Codec, Nvfp4Codec};
pub use raw::RawCodec;
pub use zstd::ZstdCodec;

/// What a codec is: fixed per codec (a `const` for most), computed from the inner codec for the
/// wrappers (`sparse`, `delta`) and from the group size for `int`.
#[derive(Debug, Clone, Copy)]
pub struct Props {
    /// Stable on-disk id.
    pub id: u16,
    /// Registry name.
    pub name: &'static str,
    /// Payload version written.
    pub version: u16,
    /// Whether decoding gives back the source bytes exactly, for every input it accepts.
    pub lossless: bool,
    /// Source dtypes a lossy codec still decodes exactly (a float conversion that widens or keeps
    /// the type).
    pub exact_for: &'static [DType],
    /// Whether the codec takes floats only (lossy codecs never touch integer or bool tensors).
    pub floats_only: bool,
    /// Whether chunks hold whole 32x32 tiles of the tensor's 2-D view (the container's tile
    /// layouts) rather than row-major runs; tile codecs are fed f32.
    pub tiled: bool,
    /// The element type `decode` writes; `None`: the source's.
    pub decodes_to: Option<DType>,
    /// Row-major chunks hold a multiple of this many elements (the integer codecs' group size,
    /// so that groups never straddle chunks).
    pub chunk_multiple: u64,
    /// What [`TensorCodec::bind`] needs to know of the tensor.
    pub binds: Binds,
    /// Whether [`TensorCodec::max_encoded_len`] is the exact payload size (fixed-size
    /// encodings), so a plan can predict the file's size exactly.
    pub sized: bool,
}

impl Props {
    /// Properties of a lossy codec of fixed size that takes floats and decodes to f32 in
    /// row-major chunks; codecs change the fields that differ.
    pub const fn lossy(id: u16, name: &'static str) -> Props {
        Props {
            id,
            name,
            version: 1,
            lossless: false,
            exact_for: &[],
            floats_only: true,
            tiled: false,
            decodes_to: Some(DType::F32),
            chunk_multiple: 1,
            binds: Binds::Nothing,
            sized: true,
        }
    }

    /// Properties of a codec that takes any dtype and gives its bytes back exactly.
    pub const fn lossless(id: u16, name: &'static str) -> Props {
        Props {
            id,
            name,
            version: 1,
            lossless: true,
            exact_for: &[],
            floats_only: false,
            tiled: false,
            decodes_to: None,
            chunk_multiple: 1,
            binds: Binds::Nothing,
            sized: false,
        }
    }
}

/// What a codec fixes per tensor before its chunks are encoded (the bind step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binds {
    /// Nothing: the codec is used as built.
    Nothing,
    /// The tensor's shape (`int` with `group=row`, `group=tensor` or `axis=`).
    Shape,
    /// The tensor's largest magnitude, a pass over the whole tensor first (nvfp4's global scale).
    Amax,
    /// The tensor's values as f32 (codebooks, low-rank factors, fitted grids learned from the
    /// whole tensor and stored in the codec's parameters). Codecs that bind to data also take
    /// the shape step first, with `values` absent.
    Data,
}

/// What the bind step knows of a tensor.
#[derive(Debug, Clone, Copy)]
pub struct TensorFacts<'a> {
    /// The tensor's shape.
    pub dims: &'a [u64],
    /// Its largest finite magnitude, when the codec [`Binds::Amax`].
    pub amax: Option<f32>,
    /// Its values, row-major, when the codec [`Binds::Data`].
    pub values: Option<&'a [f32]>,
}

/// Elements of one dtype -> bytes, lossy or lossless. Adding a codec family is one file with
/// an implementation of this trait (and of [`tile::TileKernel`] for a tile format) and one
/// line in [`REGISTRY`].
pub trait TensorCodec: Send + Sync + Debug {
    /// What this codec is.
    fn props(&self) -> Props;
    /// Canonical parameters (stored opaquely by the container).
    fn params(&self) -> Vec<u8> {
        Vec::new()
    }
    /// This stage in pipeline syntax, `NAME[:key=value,...]`, options at their default left out.
    fn spec(&self) -> String {
        self.props().name.to_string()
    }
    /// Most bytes `encode` can produce for `n` elements (a hard cap for byte stages' decoders).
    fn max_encoded_len(&self, src: DType, n: usize) -> usize;
    /// Encode `bytes`: `n` little-endian elements of `src`.
    fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>>;
    /// Decode `n` elements into `out`, whose length is `n * decoded_dtype(src).size()`.
    fn decode(&self, payload: &[u8], src: DType, n: usize, out: &mut [u8]) -> Result<()>;
    /// The bind step: this codec with its shape- or value-dependent settings fixed for one
    /// tensor (see [`Props::binds`]); `None` when nothing depends on them or what it needs is
    /// not in `t`.
    fn bind(&self, _t: &TensorFacts<'_>) -> Option<Arc<dyn TensorCodec>> {
        None
    }
    /// Bytes of each stage of a multi-stage codec (`tenpakx`: lowrank, vq, residual; `vq`:
    /// codebook, indices), over chunks of these element counts, the per-tensor parts in the
    /// parameters included; `None` for single-stage codecs.
    fn stage_bytes(&self, _chunks: &[u64]) -> Option<Vec<(&'static str, u64)>> {
        None
    }
    /// The tile fast path, for tile codecs that have one.
    fn as_tile(&self) -> Option<&dyn tile::TileCodec> {
        None
    }
    /// The GGML block type (`Q8_0`, `Q4_1`, ...) whose grid every decoded block of 32 values
    /// lies on, if this codec's groups are that type's blocks: the GGUF writer tries it. A
    /// hint only; the writer checks that each block it writes dequantizes to the decoded values.
    fn ggml_block(&self) -> Option<&'static str> {
        None
    }
}

/// Shorthands over [`TensorCodec::props`].
impl<'a> dyn TensorCodec + 'a {
    /// Stable on-disk id.
    pub fn id(&self) -> u16 {
        self.props().id
    }
    /// Registry name.
    pub fn name(&self) -> &'static str {
        self.props().name
    }
    /// Payload version written.
    pub fn version(&self) -> u16 {
        self.props().version
    }
    /// Whether decoding gives back the source bytes exactly, for every input it accepts.
    pub fn lossless(&self) -> bool {
        self.props().lossless
    }
    /// Whether decoding gives back elements of `src` exactly.
    pub fn lossless_for(&self, src: DType) -> bool {
        let p = self.props();
        p.lossless || p.exact_for.contains(&src)
    }
    /// Whether this codec can take elements of `src`.
    pub fn accepts(&self, src: DType) -> bool {
        !self.props().floats_only || src.is_float()
    }
    /// Whether chunks hold whole 32x32 tiles.
    pub fn tiled(&self) -> bool {
        self.props().tiled
    }
    /// The dtype `decode` writes, for a tensor whose source dtype is `src`.
    pub fn decoded_dtype(&self, src: DType) -> DType {
        self.props().decodes_to.unwrap_or(src)
    }
    /// Row-major chunks hold a multiple of this many elements.
    pub fn chunk_multiple(&self) -> u64 {
        self.props().chunk_multiple
    }
}

/// Bytes -> bytes (general-purpose compressors).
pub trait ByteCodec: Send + Sync + Debug {
    /// Stable on-disk id.
    fn id(&self) -> u16;
    /// Registry name.
    fn name(&self) -> &'static str;
    /// Payload version written.
    fn version(&self) -> u16 {
        1
    }
    /// Canonical parameters.
    fn params(&self) -> Vec<u8>;
    /// This stage in pipeline syntax, `NAME[:key=value,...]`.
    fn spec(&self) -> String {
        self.name().to_string()
    }
    /// Compress.
    fn encode(&self, b: &[u8]) -> Result<Vec<u8>>;
    /// Decompress; more than `max_len` output bytes is an error, never an allocation.
    fn decode(&self, b: &[u8], max_len: usize) -> Result<Vec<u8>>;
}

/// A constructed codec of either kind.
#[derive(Debug, Clone)]
pub enum Codec {
    /// Elements -> bytes.
    Tensor(Arc<dyn TensorCodec>),
    /// Bytes -> bytes.
    Bytes(Arc<dyn ByteCodec>),
}

/// `key=value` options of one pipeline stage; unknown keys are an error.
#[derive(Debug, Default, Clone)]
pub struct Options {
    codec: &'static str,
    map: BTreeMap<String, String>,
}

impl Options {
    /// Take an integer option in `lo..=hi`, or `default`.
    pub fn int(&mut self, key: &str, default: i64, lo: i64, hi: i64) -> Result<i64> {
        match self.map.remove(key) {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(x) if (lo..=hi).contains(&x) => Ok(x),
                _ => Err(Error::config(format!(
                    "codec {}: {key}={v} is not an integer in {lo}..={hi}",
                    self.codec
                ))),
            },
        }
    }

    /// Take an option's raw value, if given.
    pub fn take(&mut self, key: &str) -> Option<String> {
        self.map.remove(key)
    }

    /// Take a string option restricted to `choices` (the first is the default).
    pub fn choice(&mut self, key: &str, choices: &[&'static str]) -> Result<&'static str> {
        match self.map.remove(key) {
            None => Ok(choices[0]),
            Some(v) => choices.iter().copied().find(|c| *c == v).ok_or_else(|| {
                Error::config(format!(
                    "codec {}: {key}={v}: expected one of {}",
                    self.codec,
                    choices.join(", ")
                ))
            }),
        }
    }

    /// Options of codec `codec` from `k=v,k=v`.
    fn parse(codec: &'static str, opts: &str) -> Result<Options> {
        let mut o = Options {
            codec,
            map: BTreeMap::new(),
        };
        for kv in opts.split(',').filter(|s| !s.trim().is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                Error::config(format!("codec {codec}: option '{kv}' is not key=value"))
            })?;
            o.map.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(o)
    }

    fn finish(self) -> Result<()> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(Error::config(format!(
                "codec {} has no option '{k}'",
                self.codec
            ))),
        }
    }
}

/// One registry entry: how to build a codec from user options or from stored params.
pub struct CodecEntry {
    /// Stable on-disk id.
    pub id: u16,
    /// Name used on the command line and stored in the index.
    pub name: &'static str,
    /// Newest payload version this build decodes.
    pub version: u16,
    /// One line for `--help` and docs.
    pub summary: &'static str,
    /// Build from `key=value` options.
    pub from_options: fn(&mut Options) -> Result<Codec>,
    /// Build from canonical params read from a file.
    pub from_params: fn(&[u8]) -> Result<Codec>,
}

/// Every implemented codec. Ids are never renumbered or reused (formats-spec/codecs.md).
pub static REGISTRY: &[CodecEntry] = &[
    raw::ENTRY,
    float::F32_ENTRY,
    float::F16_ENTRY,
    float::BF16_ENTRY,
    byteplane::ENTRY,
    zstd::ENTRY,
    bfp::BFP8_ENTRY,
    bfp::BFP4_ENTRY,
    bfp::BFP2_ENTRY,
    bfp::FP0_ENTRY,
    mx::MXFP4_ENTRY,
    mx::NVFP4_ENTRY,
    mixed::ENTRY,
    int::INT_ENTRY,
    int::RESIDUAL_ENTRY,
    sparse::ENTRY,
    delta::ENTRY,
    gear::ENTRY,
    kvq::ENTRY,
    rot::ENTRY,
    grid::ENTRY,
    vq::ENTRY,
    lowrank::LOWRANK_ENTRY,
    lowrank::TENPAKX_ENTRY,
];

/// A payload storing `bytes` as they are behind a one-byte `mode` (the "stored raw" mode that
/// keeps codecs from expanding a chunk).
pub(crate) fn stored_payload(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 1);
    out.push(mode);
    out.extend_from_slice(bytes);
    out
}

/// Decode the body of a [`stored_payload`]: exactly `out.len()` bytes.
pub(crate) fn stored_body(codec: &str, body: &[u8], out: &mut [u8]) -> Result<()> {
    if body.len() != out.len() {
        return Err(Error::bad_length(format!(
            "{codec} raw payload is {} bytes, expected {}",
            body.len(),
            out.len()
        )));
    }
    out.copy_from_slice(body);
    Ok(())
}

/// Look up a registry entry by name.
pub fn entry_by_name(name: &str) -> Option<&'static CodecEntry> {
    REGISTRY.iter().find(|e| e.name == name)
}

/// Look up a registry entry by id.
pub fn entry_by_id(id: u16) -> Option<&'static CodecEntry> {
    REGISTRY.iter().find(|e| e.id == id)
}

/// A tensor codec followed by byte codecs.
#[derive(Debug, Clone)]
pub struct Pipeline {
    tensor: Arc<dyn TensorCodec>,
    bytes: Vec<Arc<dyn ByteCodec>>,
}

impl Pipeline {
    /// Parse `NAME[:k=v,...][+NAME...]`.
    pub fn parse(spec: &str) -> Result<Pipeline> {
        // `rot[:opts]+REST`: the rotation wraps the tensor codec of the rest.
        let (head, rest) = spec.split_once('+').unwrap_or((spec, ""));
        let (hname, hopts) = head.split_once(':').unwrap_or((head, ""));
        if hname.trim() == "rot" {
            if rest.trim().is_empty() {
                return Err(Error::config(
                    "rot wraps the codec after it: write rot+CODEC (rot:block=64+int4_g32, rot+nvfp4)",
                ));
            }
            let inner = Pipeline::parse(rest)?;
            let mut o = Options::parse("rot", hopts)?;
            let r = rot::wrap(&mut o, inner.tensor)?;
            o.finish()?;
            return Ok(Pipeline {
                tensor: Arc::new(r),
                bytes: inner.bytes,
            });
        }
        let mut tensor: Option<Arc<dyn TensorCodec>> = None;
        let mut bytes = Vec::new();
        for (i, part) in spec.split('+').enumerate() {
            let (name, opts) = match part.split_once(':') {
                Some((n, o)) => (n.trim(), o.to_string()),
                None => (part.trim(), String::new()),
            };
            // Short names of the integer codecs (`int4_g32`) are `int` with options.
            let (name, opts) = match int::expand_alias(name)
                .or_else(|| grid::expand_alias(name))
                .or_else(|| lowrank::expand_alias(name))
            {
                Some((n, extra)) if opts.is_empty() => (n, extra),
                Some((n, extra)) => (n, format!("{extra},{opts}")),
                None => (name, opts),
            };
            let entry = entry_by_name(name).ok_or_else(|| catalog::unknown(name))?;
            let mut o = Options::parse(entry.name, &opts)?;
            let codec = (entry.from_options)(&mut o)?;
            o.finish()?;
            match codec {
                Codec::Tensor(t) if i == 0 => tensor = Some(t),
                Codec::Tensor(t) => {
                    return Err(Error::config(format!(
                        "codec '{}' turns tensors into bytes and must come first in '{spec}'",
                        t.name()
                    )))
                }
                Codec::Bytes(b) => {
                    if i == 0 {
                        tensor = Some(Arc::new(RawCodec));
                    }
                    bytes.push(b)
                }
            }
        }
        Ok(Pipeline {
            tensor: tensor.ok_or_else(|| Error::config("empty codec spec"))?,
            bytes,
        })
    }

    /// Rebuild from the stages stored in a file. Unknown ids or newer versions are `Unsupported`.
    pub fn from_stages(stages: &[tpk_format::Stage]) -> Result<Pipeline> {
        let mut tensor = None;
        let mut bytes = Vec::new();
        for (i, s) in stages.iter().enumerate() {
            let entry = entry_by_id(s.codec_id).ok_or_else(|| {
                Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "codec '{}' (id {}) is not known to this tenpak {}; it was written by a newer tenpak",
                        s.codec_name,
                        s.codec_id,
                        crate::VERSION
                    ),
                )
            })?;
            if s.codec_version > entry.version || s.codec_version == 0 {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "codec '{}' version {} is newer than this tenpak reads ({})",
                        entry.name, s.codec_version, entry.version
                    ),
                ));
            }
            match ((entry.from_params)(&s.params)?, i) {
                (Codec::Tensor(t), 0) => tensor = Some(t),
                (Codec::Bytes(b), i) if i > 0 => bytes.push(b),
                _ => {
                    return Err(Error::bad_params(format!(
                        "codec '{}' cannot be stage {i} of a pipeline",
                        entry.name
                    )))
                }
            }
        }
        Ok(Pipeline {
            tensor: tensor.ok_or_else(|| Error::bad_params("empty pipeline"))?,
            bytes,
        })
    }

    /// The tensor stage.
    pub fn tensor_codec(&self) -> &dyn TensorCodec {
        &*self.tensor
    }

    /// The tensor codec, shared.
    pub fn tensor_codec_arc(&self) -> Arc<dyn TensorCodec> {
        self.tensor.clone()
    }

    /// The same byte stages behind another tensor codec (integer tensors fall back to `raw`).
    pub fn with_tensor_codec(&self, t: Arc<dyn TensorCodec>) -> Pipeline {
        Pipeline {
            tensor: t,
            bytes: self.bytes.clone(),
        }
    }

    /// Whether the whole pipeline is lossless.
    pub fn lossless(&self) -> bool {
        self.tensor.lossless()
    }

    /// Canonical text form, e.g. `bf16+zstd:level=3`.
    pub fn describe(&self) -> String {
        let mut s = self.tensor.spec();
        for b in &self.bytes {
            s.push('+');
            s.push_str(&b.spec());
        }
        s
    }

    /// The stages to store in the index.
    pub fn stages(&self) -> Vec<tpk_format::Stage> {
        let mut v = vec![tpk_format::Stage {
            codec_id: self.tensor.id(),
            codec_name: self.tensor.name().into(),
            codec_version: self.tensor.version(),
            params: self.tensor.params(),
        }];
        v.extend(self.bytes.iter().map(|b| tpk_format::Stage {
            codec_id: b.id(),
            codec_name: b.name().into(),
            codec_version: b.version(),
            params: b.params(),
        }));
        v
    }

    /// Encode one chunk of `src` elements.
    pub fn encode(&self, src: DType, bytes: &[u8]) -> Result<Vec<u8>> {
        let mut b = self.tensor.encode(src, bytes)?;
        for c in &self.bytes {
            b = c.encode(&b)?;
        }
        Ok(b)
    }

    /// [`tile::TileCodec::encode_f32_tiles_at`] through the whole pipeline (byte stages after
    /// it); `None` for codecs without the tile fast path.
    pub fn encode_f32_tiles_at(
        &self,
        first_tile: usize,
        tiles: &[f32],
        visit: &mut tile::TileVisitor<'_>,
    ) -> Option<Result<Vec<u8>>> {
        let r = self
            .tensor
            .as_tile()?
            .encode_f32_tiles_at(first_tile, tiles, visit);
        Some(r.and_then(|mut b| {
            for c in &self.bytes {
                b = c.encode(&b)?;
            }
            Ok(b)
        }))
    }

    /// [`Pipeline::encode_f32_tiles_at`] for a chunk at the start of the tensor.
    pub fn encode_f32_tiles(
        &self,
        tiles: &[f32],
        visit: &mut tile::TileVisitor<'_>,
    ) -> Option<Result<Vec<u8>>> {
        self.encode_f32_tiles_at(0, tiles, visit)
    }

    /// How many byte stages follow the tensor codec.
    pub fn byte_stages(&self) -> usize {
        self.bytes.len()
    }

    /// The same pipeline with its tensor codec bound to one tensor ([`TensorCodec::bind`]).
    pub fn bind(&self, t: &TensorFacts<'_>) -> Pipeline {
        match self.tensor.bind(t) {
            Some(c) => self.with_tensor_codec(c),
            None => self.clone(),
        }
    }

    /// The same pipeline with its tensor codec's calibrated encoder for a tensor of shape
    /// `dims` in `layout` ([`calibrated`]: GPTQ or importance-weighted fits, the codec's own
    /// payload), with the mode it applies; `values` are the tensor's (row-major f32); `None`
    /// when the codec has none (`int` with `group=N`, `grid`, `nvfp4` and `vq` have one).
    pub fn calibrated(
        &self,
        dims: &[u64],
        layout: tpk_format::Layout,
        calib: &crate::calib::TensorCalib,
        mode: calibrated::Mode,
        values: &[f32],
    ) -> Option<Result<(Pipeline, calibrated::Mode)>> {
        calibrated::calibrated(self.tensor.clone(), dims, layout, calib, mode, values)
            .map(|r| r.map(|(c, m)| (self.with_tensor_codec(c), m)))
    }

    /// The bind steps of a codec that learns from a tensor ([`Binds::Data`]): its shape, then
    /// its values (row-major f32); other codecs take the shape step only.
    pub fn bind_values(&self, dims: &[u64], values: &[f32]) -> Pipeline {
        let shaped = self.bind(&TensorFacts {
            dims,
            amax: None,
            values: None,
        });
        shaped.bind(&TensorFacts {
            dims,
            amax: None,
            values: Some(values),
        })
    }

    /// Decode one chunk of `n` elements; returns bytes of `decoded_dtype(src)`.
    /// `max_bytes` caps what the chunk may decode to (checked before any allocation).
    pub fn decode(&self, payload: &[u8], src: DType, n: usize, max_bytes: u64) -> Result<Vec<u8>> {
        let out_dtype = self.tensor.decoded_dtype(src);
        let out_len = (n as u64)
            .checked_mul(out_dtype.size() as u64)
            .filter(|&l| l <= max_bytes)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Limit,
                    format!("chunk of {n} elements exceeds the decode limit of {max_bytes} bytes"),
                )
            })? as usize;
        let mut out = vec![0u8; out_len];
        self.decode_into(payload, src, n, &mut out)?;
        Ok(out)
    }

    /// Decode one chunk of `n` elements into `out`, which must hold exactly
    /// `n * decoded_dtype(src).size()` bytes (decoding straight into a tensor's buffer).
    pub fn decode_into(&self, payload: &[u8], src: DType, n: usize, out: &mut [u8]) -> Result<()> {
        let want = n.checked_mul(self.tensor.decoded_dtype(src).size());
        if want != Some(out.len()) {
            return Err(Error::internal(format!(
                "output buffer of {} bytes does not fit {n} elements",
                out.len()
            )));
        }
        let staged = self.tensor_payload(payload, src, n)?;
        self.tensor.decode(&staged, src, n, out)
    }

    /// The tensor codec's payload of a chunk of `n` elements: `payload` with the byte stages
    /// undone (borrowed when there are none).
    pub fn tensor_payload<'a>(
        &self,
        payload: &'a [u8],
        src: DType,
        n: usize,
    ) -> Result<std::borrow::Cow<'a, [u8]>> {
        let cap = self.tensor.max_encoded_len(src, n);
        let mut cur = std::borrow::Cow::Borrowed(payload);
        for c in self.bytes.iter().rev() {
            cur = std::borrow::Cow::Owned(c.decode(&cur, cap)?);
        }
        Ok(cur)
    }
}

/// Build a [`Pipeline`] from a single codec (used by tests and benches).
impl From<Arc<dyn TensorCodec>> for Pipeline {
    fn from(tensor: Arc<dyn TensorCodec>) -> Self {
        Pipeline {
            tensor,
            bytes: Vec::new(),
        }
    }
}

/// An inner codec inside a wrapper's parameters (`sparse`, `rot`): its id, version, the
/// length of its parameters (u32) and the parameters.
pub(crate) fn inner_params(inner: &dyn TensorCodec) -> Vec<u8> {
    let ip = inner.params();
    let mut p = inner.id().to_le_bytes().to_vec();
    p.extend_from_slice(&inner.version().to_le_bytes());
    p.extend_from_slice(&(ip.len() as u32).to_le_bytes());
    p.extend(ip);
    p
}

/// Read what [`inner_params`] wrote at the end of `p` (nothing may follow).
/// The pad-bit rule of every packed code stream (formats-spec/codecs.md "Packed codes"): the
/// bits of the last byte past the last code are zero. `stream` starts at the first code and
/// `used_bits` bits hold codes; a stream with a set pad bit is malformed, so each payload has
/// one valid encoding and `verify` catches a flipped pad bit like any other.
pub(crate) fn check_pad_bits(stream: &[u8], used_bits: u64, what: &str) -> Result<()> {
    let rem = (used_bits % 8) as u32;
    if rem == 0 {
        return Ok(());
    }
    match stream.get((used_bits / 8) as usize) {
        Some(&last) if last >> rem != 0 => Err(Error::bad_payload(format!(
            "{what}: pad bits of the last code byte are not zero"
        ))),
        _ => Ok(()),
    }
}

pub(crate) fn inner_from_params(wrapper: &str, p: &[u8]) -> Result<Arc<dyn TensorCodec>> {
    let bad = |m: &str| Error::bad_params(format!("{wrapper} parameters: {m}"));
    if p.len() < 8 {
        return Err(bad("cut short"));
    }
    let id = u16::from_le_bytes([p[0], p[1]]);
    let version = u16::from_le_bytes([p[2], p[3]]);
    let len = u32::from_le_bytes(p[4..8].try_into().expect("4 bytes")) as usize;
    if p.len() - 8 != len {
        return Err(bad("the inner codec's parameters have the wrong length"));
    }
    let entry = entry_by_id(id).ok_or_else(|| {
        Error::new(
            ErrorKind::Unsupported,
            format!("{wrapper}: inner codec id {id} is not known to this tenpak"),
        )
    })?;
    if version == 0 || version > entry.version {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "{wrapper}: inner codec {} version {version} is newer than this tenpak reads",
                entry.name
            ),
        ));
    }
    match (entry.from_params)(&p[8..])? {
        Codec::Tensor(t) if t.version() == version => Ok(t),
        Codec::Tensor(_) => Err(bad(
            "the inner codec's version does not match its parameters",
        )),
        Codec::Bytes(_) => Err(bad("the inner codec is a byte codec")),
    }
}

/// Least common multiple (chunk multiples of stacked stages).
pub(crate) fn lcm(a: u64, b: u64) -> u64 {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x.max(1) * b
}

/// Shared check for fixed-size payloads: the length must be exactly what `n` elements take.
pub(crate) fn expect_len(codec: &str, payload: &[u8], want: usize) -> Result<()> {
    if payload.len() != want {
        return Err(Error::bad_length(format!(
            "{codec} payload is {} bytes, expected {want}",
            payload.len()
        )));
    }
    Ok(())
}

/// Params that must be empty.
pub(crate) fn no_params(codec: &str, p: &[u8]) -> Result<()> {
    if !p.is_empty() {
        return Err(Error::bad_params(format!(
            "codec {codec} takes no parameters, found {} bytes",
            p.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_ids_and_names_unique() {
        for (i, a) in REGISTRY.iter().enumerate() {
            for b in &REGISTRY[i + 1..] {
                assert_ne!(a.id, b.id);
                assert_ne!(a.name, b.name);
            }
        }
    }

    #[test]
    fn parse_specs() {
        assert_eq!(
            Pipeline::parse("zstd").unwrap().describe(),
            "raw+zstd:level=3"
        );
        assert_eq!(
            Pipeline::parse("bf16+zstd:level=9").unwrap().describe(),
            "bf16+zstd:level=9"
        );
        assert!(Pipeline::parse("nope").is_err());
        assert!(Pipeline::parse("zstd:level=99").is_err());
        assert!(Pipeline::parse("zstd:lvl=3").is_err());
        assert!(Pipeline::parse("zstd+bf16").is_err());
        let p = Pipeline::parse("bf16+zstd:level=9").unwrap();
        let q = Pipeline::from_stages(&p.stages()).unwrap();
        assert_eq!(q.describe(), p.describe());
    }

    /// One pad-bit rule for every packed stream: a set bit after the last code is malformed.
    #[test]
    fn set_pad_bits_are_malformed() {
        // Codes end mid-byte at the end of each payload: 37 x 3 bits, 38 / 2 indices x 4 bits.
        for (spec, n) in [
            ("int:bits=3,group=32", 37),
            ("int:bits=5,group=8,zero=asym", 37),
            ("grid:n=8,group=32", 37),
            ("vq:d=2,k=16", 38),
        ] {
            let vals: Vec<u8> = (0..n)
                .flat_map(|i| ((i as f32 * 0.37).sin()).to_le_bytes())
                .collect();
            let p = Pipeline::parse(spec).unwrap();
            let p = if p.tensor_codec().props().binds == Binds::Data {
                let f: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
                p.bind(&TensorFacts {
                    dims: &[1, n as u64],
                    amax: None,
                    values: Some(&f),
                })
            } else {
                p
            };
            let mut payload = p.encode(DType::F32, &vals).unwrap();
            assert!(
                p.decode(&payload, DType::F32, n, u64::MAX).is_ok(),
                "{spec}"
            );
            *payload.last_mut().unwrap() |= 0x80;
            let e = p.decode(&payload, DType::F32, n, u64::MAX).unwrap_err();
            assert!(e.message.contains("pad bits"), "{spec}: {e}");
        }
        assert!(check_pad_bits(&[0b0111_1111], 7, "t").is_ok());
        assert!(check_pad_bits(&[0xFF], 8, "t").is_ok());
    }

    #[test]
    fn decode_errors_name_their_defect() {
        use crate::error::Defect;
        let vals: Vec<u8> = (0..64)
            .flat_map(|i| (i as f32 * 0.1).to_le_bytes())
            .collect();
        let p = Pipeline::parse("int8").unwrap();
        let payload = p.encode(DType::F32, &vals).unwrap();
        let short = &payload[..payload.len() - 1];
        let e = p.decode(short, DType::F32, 64, u64::MAX).unwrap_err();
        assert_eq!(
            (e.kind, e.defect),
            (ErrorKind::Malformed, Some(Defect::Length))
        );
        let bp = Pipeline::parse("byteplane").unwrap();
        let mut payload = bp.encode(DType::F32, &vals).unwrap();
        payload[0] = 0xEE;
        let e = bp.decode(&payload, DType::F32, 64, u64::MAX).unwrap_err();
        assert_eq!(e.defect, Some(Defect::Payload));
        let stage = tpk_format::Stage {
            codec_id: 1,
            codec_name: "raw".into(),
            codec_version: 1,
            params: vec![7],
        };
        let e = Pipeline::from_stages(&[stage]).unwrap_err();
        assert_eq!(e.defect, Some(Defect::Params));
    }

    #[test]
    fn unknown_codec_id_is_unsupported() {
        let s = tpk_format::Stage {
            codec_id: 999,
            codec_name: "future".into(),
            codec_version: 1,
            params: vec![],
        };
        let e = Pipeline::from_stages(&[s]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.contains("future"));
    }
}
