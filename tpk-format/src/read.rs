use crate::error::io;
use crate::{
    align_up, ChunkEntry, FormatError, Header, Layout, Limits, Stage, TensorEntry, CHECK_CRC,
    HEADER_LEN, MAGIC, VERSION_MAJOR, VERSION_MINOR,
};
use std::collections::HashSet;
use std::path::Path;

/// Caps initial `Vec` capacities taken from counts in the file; the real bound is the bytes left.
const MAX_INITIAL_CAPACITY: usize = 4096;

/// An opened, fully validated `.tpk` file over any byte source (a memory map, a `Vec`, a slice).
#[derive(Debug)]
pub struct TpkFile<D: AsRef<[u8]>> {
    header: Header,
    metadata: Vec<(String, String)>,
    tensors: Vec<TensorEntry>,
    data: D,
}

/// One problem found by [`TpkFile::verify_layout`] or a chunk check.
#[derive(Debug)]
pub struct VerifyProblem {
    /// Tensor name, where the problem belongs to one.
    pub tensor: Option<String>,
    /// Chunk number, where the problem belongs to one.
    pub chunk: Option<usize>,
    /// What is wrong.
    pub error: FormatError,
}

impl TpkFile<memmap2::Mmap> {
    /// Memory-map and open a file. Only the header and index pages are touched.
    pub fn open_path(path: &Path, limits: &Limits) -> Result<Self, FormatError> {
        let file = std::fs::File::open(path).map_err(io(format!("open {}", path.display())))?;
        // SAFETY: the map is read-only; a concurrent truncation by another process could fault,
        // which is the documented risk of every mmap reader (safetensors, fst) and accepted here.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(io(format!("memory-map {}", path.display())))?;
        TpkFile::open(map, limits)
    }

    /// Let go of the pages that chunks `chunks` of tensor `tensor` occupy in this process (they
    /// stay in the page cache): a reader that decodes a large file chunk by chunk otherwise
    /// keeps every payload page it touched resident until the file is closed.
    pub fn release_chunks(&self, tensor: usize, chunks: std::ops::Range<usize>) {
        let Some(cs) = self.tensors.get(tensor).and_then(|t| t.chunks.get(chunks)) else {
            return;
        };
        let (Some(first), Some(last)) = (cs.first(), cs.last()) else {
            return;
        };
        let (start, end) = (first.offset as usize, (last.offset + last.len) as usize);
        if start >= end || end > self.data.len() {
            return;
        }
        #[cfg(unix)]
        // SAFETY: the map is shared and read-only: MADV_DONTNEED only unmaps the pages from this
        // process and a later read faults the same file bytes in again, so borrowed slices keep
        // their contents. A failure only leaves the pages resident.
        unsafe {
            let _ = self.data.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                start,
                end - start,
            );
        }
    }
}

impl<D: AsRef<[u8]>> TpkFile<D> {
    /// Validate the header, the index and the chunk layout (formats-spec/tpk.md §7, steps 1-4).
    pub fn open(data: D, limits: &Limits) -> Result<Self, FormatError> {
        let bytes = data.as_ref();
        let file_len = bytes.len() as u64;
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) && !bytes.is_empty() {
                return Err(FormatError::Truncated {
                    what: "header",
                    need: HEADER_LEN as u64,
                    have: file_len,
                });
            }
            return Err(FormatError::NotTpk);
        }
        if bytes.len() < HEADER_LEN {
            return Err(FormatError::Truncated {
                what: "header",
                need: HEADER_LEN as u64,
                have: file_len,
            });
        }
        let h = &bytes[..HEADER_LEN];
        let stored = u32::from_le_bytes(h[60..64].try_into().unwrap());
        let computed = crc32fast::hash(&h[..60]);
        if CHECK_CRC && stored != computed {
            return Err(FormatError::Checksum {
                what: "header",
                tensor: None,
                chunk: None,
                stored,
                computed,
            });
        }
        let header = Header {
            major: u16::from_le_bytes([h[8], h[9]]),
            minor: u16::from_le_bytes([h[10], h[11]]),
            flags: u32::from_le_bytes(h[12..16].try_into().unwrap()),
            index_offset: u64::from_le_bytes(h[16..24].try_into().unwrap()),
            index_len: u64::from_le_bytes(h[24..32].try_into().unwrap()),
            index_crc: u32::from_le_bytes(h[32..36].try_into().unwrap()),
        };
        if header.major == 0 {
            return Err(FormatError::Malformed("major version 0".into()));
        }
        if header.major > VERSION_MAJOR {
            return Err(FormatError::NewerMajor {
                found: header.major,
                supported: VERSION_MAJOR,
            });
        }
        if header.index_offset < HEADER_LEN as u64
            || !header.index_offset.is_multiple_of(crate::ALIGN)
        {
            return Err(FormatError::Malformed(format!(
                "index offset {} is not a multiple of 64 at or after the header",
                header.index_offset
            )));
        }
        if header.index_len > limits.max_index_len {
            return Err(FormatError::Limit {
                what: "index length",
                value: header.index_len,
                limit: limits.max_index_len,
            });
        }
        let end = header
            .index_offset
            .checked_add(header.index_len)
            .ok_or_else(|| FormatError::Malformed("index end overflows".into()))?;
        if end > file_len {
            return Err(FormatError::Truncated {
                what: "index",
                need: end,
                have: file_len,
            });
        }
        if end < file_len {
            return Err(FormatError::Malformed(format!(
                "{} trailing bytes after the index",
                file_len - end
            )));
        }
        let index = &bytes[header.index_offset as usize..end as usize];
        let computed = crc32fast::hash(index);
        if CHECK_CRC && computed != header.index_crc {
            return Err(FormatError::Checksum {
                what: "index",
                tensor: None,
                chunk: None,
                stored: header.index_crc,
                computed,
            });
        }
        let (metadata, tensors) = parse_index(index, limits, header.minor)?;
        check_layout(&tensors, header.index_offset)?;
        Ok(TpkFile {
            header,
            metadata,
            tensors,
            data,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// File metadata in key order.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// Value of a metadata key.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Tensors in file order.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    /// Total file length.
    pub fn file_len(&self) -> u64 {
        self.data.as_ref().len() as u64
    }

    /// Payload of chunk `chunk` of tensor `tensor`, CRC-checked (except under `cfg(fuzzing)`).
    pub fn chunk(&self, tensor: usize, chunk: usize) -> Result<&[u8], FormatError> {
        let t = self
            .tensors
            .get(tensor)
            .ok_or_else(|| FormatError::Malformed(format!("no tensor #{tensor}")))?;
        let c = t.chunks.get(chunk).ok_or_else(|| {
            FormatError::Malformed(format!("tensor '{}' has no chunk {chunk}", t.name))
        })?;
        // In bounds: check_layout proved every chunk lies before the index.
        let bytes = &self.data.as_ref()[c.offset as usize..(c.offset + c.len) as usize];
        if CHECK_CRC {
            let computed = crc32fast::hash(bytes);
            if computed != c.crc32 {
                return Err(FormatError::Checksum {
                    what: "chunk",
                    tensor: Some(t.name.clone()),
                    chunk: Some(chunk),
                    stored: c.crc32,
                    computed,
                });
            }
        }
        Ok(bytes)
    }

    /// Check what `open` does not read: every padding byte between payloads must be zero.
    /// Chunk CRCs are checked by [`TpkFile::chunk`].
    pub fn verify_layout(&self) -> Vec<VerifyProblem> {
        let bytes = self.data.as_ref();
        let mut problems = Vec::new();
        let mut pos = HEADER_LEN as u64;
        for t in &self.tensors {
            for (i, c) in t.chunks.iter().enumerate() {
                if bytes[pos as usize..c.offset as usize]
                    .iter()
                    .any(|&b| b != 0)
                {
                    problems.push(VerifyProblem {
                        tensor: Some(t.name.clone()),
                        chunk: Some(i),
                        error: FormatError::Malformed(format!(
                            "non-zero padding before chunk at offset {}",
                            c.offset
                        )),
                    });
                }
                pos = c.offset + c.len;
            }
        }
        if bytes[pos as usize..self.header.index_offset as usize]
            .iter()
            .any(|&b| b != 0)
        {
            problems.push(VerifyProblem {
                tensor: None,
                chunk: None,
                error: FormatError::Malformed("non-zero padding before the index".into()),
            });
        }
        problems
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    limits: &'a Limits,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        if n > self.remaining() {
            return Err(FormatError::Truncated {
                what,
                need: n as u64,
                have: self.remaining() as u64,
            });
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FormatError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn f64(&mut self, what: &'static str) -> Result<f64, FormatError> {
        Ok(f64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], FormatError> {
        let n = self.u32(what)? as u64;
        if n > self.limits.max_string_len {
            return Err(FormatError::Limit {
                what,
                value: n,
                limit: self.limits.max_string_len,
            });
        }
        self.take(n as usize, what)
    }

    fn string(&mut self, what: &'static str) -> Result<String, FormatError> {
        let b = self.bytes(what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| FormatError::Malformed(format!("{what} is not UTF-8")))
    }

    /// A count of items that each take at least `min_item` bytes: checked against what remains.
    fn count(&mut self, what: &'static str, min_item: usize) -> Result<usize, FormatError> {
        let n = self.u32(what)? as usize;
        let fits = self.remaining() / min_item.max(1);
        if n > fits {
            return Err(FormatError::Malformed(format!(
                "{what} is {n}, but the remaining {} index bytes hold at most {fits}",
                self.remaining()
            )));
        }
        Ok(n)
    }
}

type Index = (Vec<(String, String)>, Vec<TensorEntry>);

fn parse_index(index: &[u8], limits: &Limits, minor: u16) -> Result<Index, FormatError> {
    let newer_minor = minor > VERSION_MINOR;
    let mut c = Cursor {
        b: index,
        pos: 0,
        limits,
    };
    let n_meta = c.count("metadata count", 8)?;
    let mut metadata: Vec<(String, String)> = Vec::with_capacity(n_meta.min(MAX_INITIAL_CAPACITY));
    for _ in 0..n_meta {
        let k = c.string("metadata key")?;
        let v = c.string("metadata value")?;
        if let Some((prev, _)) = metadata.last() {
            if prev.as_bytes() >= k.as_bytes() {
                return Err(FormatError::Malformed(format!(
                    "metadata keys not strictly ascending at '{k}'"
                )));
            }
        }
        metadata.push((k, v));
    }
    let n_tensors = c.count("tensor count", 4)?;
    if n_tensors as u64 > limits.max_tensors {
        return Err(FormatError::Limit {
            what: "tensor count",
            value: n_tensors as u64,
            limit: limits.max_tensors,
        });
    }
    let mut tensors = Vec::with_capacity(n_tensors.min(MAX_INITIAL_CAPACITY));
    let mut names = HashSet::with_capacity(n_tensors.min(MAX_INITIAL_CAPACITY));
    for i in 0..n_tensors {
        let len = c.u32("tensor entry length")? as usize;
        let body = c.take(len, "tensor entry")?;
        let mut e = Cursor {
            b: body,
            pos: 0,
            limits,
        };
        let t = parse_tensor(&mut e, limits, minor)
            .map_err(|err| FormatError::Malformed(format!("tensor entry #{i}: {err}")))?;
        if e.remaining() != 0 && !newer_minor {
            return Err(FormatError::Malformed(format!(
                "tensor '{}': {} unexplained bytes at the end of its entry",
                t.name,
                e.remaining()
            )));
        }
        if !names.insert(t.name.clone()) {
            return Err(FormatError::Malformed(format!(
                "tensor name '{}' appears twice",
                t.name
            )));
        }
        tensors.push(t);
    }
    if c.remaining() != 0 && !newer_minor {
        return Err(FormatError::Malformed(format!(
            "{} unexplained bytes at the end of the index",
            c.remaining()
        )));
    }
    Ok((metadata, tensors))
}

fn parse_tensor(
    c: &mut Cursor<'_>,
    limits: &Limits,
    minor: u16,
) -> Result<TensorEntry, FormatError> {
    let name = c.string("tensor name")?;
    if name.is_empty() {
        return Err(FormatError::Malformed("empty tensor name".into()));
    }
    let dtype = c.string("dtype")?;
    let ndim = c.u8("ndim")?;
    if ndim > limits.max_dims {
        return Err(FormatError::Limit {
            what: "dimension count",
            value: ndim as u64,
            limit: limits.max_dims as u64,
        });
    }
    let mut dims = Vec::with_capacity(ndim as usize);
    for _ in 0..ndim {
        dims.push(c.u64("dim")?);
    }
    let source_bytes = c.u64("source bytes")?;
    let n_stages = c.u8("stage count")?;
    if n_stages == 0 || n_stages > limits.max_stages {
        return Err(FormatError::Malformed(format!(
            "tensor '{name}': {n_stages} codec stages (1..={} allowed)",
            limits.max_stages
        )));
    }
    let mut stages = Vec::with_capacity(n_stages as usize);
    for _ in 0..n_stages {
        stages.push(Stage {
            codec_id: c.u16("codec id")?,
            codec_name: c.string("codec name")?,
            codec_version: c.u16("codec version")?,
            params: c.bytes("codec params")?.to_vec(),
        });
    }
    let n_metrics = c.count("metric count", 12)?;
    let mut metrics = Vec::with_capacity(n_metrics.min(MAX_INITIAL_CAPACITY));
    for _ in 0..n_metrics {
        let k = c.string("metric name")?;
        let v = c.f64("metric value")?;
        if metrics.iter().any(|(n, _): &(String, f64)| *n == k) {
            return Err(FormatError::Malformed(format!(
                "tensor '{name}': metric '{k}' appears twice"
            )));
        }
        metrics.push((k, v));
    }
    let n_chunks = c.count("chunk count", 36)?;
    let mut chunks = Vec::with_capacity(n_chunks.min(MAX_INITIAL_CAPACITY));
    for _ in 0..n_chunks {
        chunks.push(ChunkEntry {
            offset: c.u64("chunk offset")?,
            len: c.u64("chunk length")?,
            crc32: c.u32("chunk crc")?,
            elem_start: c.u64("chunk element start")?,
            elem_count: c.u64("chunk element count")?,
        });
    }
    // Format 1.1 added the element order; 1.0 tensors are row-major.
    let layout = if minor >= 1 {
        let code = c.u8("layout")?;
        Layout::from_code(code).ok_or_else(|| {
            FormatError::Malformed(format!("tensor '{name}': unknown element layout {code}"))
        })?
    } else {
        Layout::RowMajor
    };
    let t = TensorEntry {
        name,
        dtype,
        dims,
        source_bytes,
        stages,
        metrics,
        chunks,
        layout,
    };
    let n = layout
        .space(&t.dims)
        .ok_or_else(|| FormatError::Malformed(format!("tensor '{}': shape overflows", t.name)))?;
    let mut next = 0u64;
    for (i, ch) in t.chunks.iter().enumerate() {
        if ch.elem_start != next || ch.elem_count == 0 {
            return Err(FormatError::Malformed(format!(
                "tensor '{}' chunk {i}: elements {}+{} do not follow {next}",
                t.name, ch.elem_start, ch.elem_count
            )));
        }
        next = next
            .checked_add(ch.elem_count)
            .ok_or_else(|| FormatError::Malformed("chunk element range overflows".into()))?;
    }
    if next != n {
        return Err(FormatError::Malformed(format!(
            "tensor '{}': chunks cover {next} of {n} elements",
            t.name
        )));
    }
    Ok(t)
}

/// §4 "Chunks": payloads in index order, each at align64 of the previous end, then the index.
fn check_layout(tensors: &[TensorEntry], index_offset: u64) -> Result<(), FormatError> {
    let mut expect = HEADER_LEN as u64;
    for t in tensors {
        for (i, c) in t.chunks.iter().enumerate() {
            if c.offset != expect {
                return Err(FormatError::Malformed(format!(
                    "tensor '{}' chunk {i}: payload at offset {}, expected {expect}",
                    t.name, c.offset
                )));
            }
            let end = c.offset.checked_add(c.len).filter(|&e| e <= index_offset);
            let end = end.ok_or_else(|| {
                FormatError::Malformed(format!(
                    "tensor '{}' chunk {i}: payload of {} bytes at {} runs past the index",
                    t.name, c.len, c.offset
                ))
            })?;
            expect = align_up(end).ok_or_else(|| FormatError::Malformed("overflow".into()))?;
        }
    }
    if expect != index_offset {
        return Err(FormatError::Malformed(format!(
            "index at offset {index_offset}, expected {expect} after the last payload"
        )));
    }
    Ok(())
}
