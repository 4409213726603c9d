use crate::error::io;
use crate::AtomicFile;
use crate::{
    align_up, ChunkEntry, FormatError, Header, TensorEntry, HEADER_LEN, VERSION_MAJOR,
    VERSION_MINOR,
};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

/// Streams a `.tpk` file: payloads first, then the index, then the header is filled in.
///
/// The bytes go to a temporary file in the destination's folder; [`TpkWriter::finish`] renames it
/// into place. A writer dropped before `finish` (an error, a panic) deletes the temporary file, so
/// the destination never holds a partial file.
pub struct TpkWriter {
    out: BufWriter<AtomicFile>,
    overwrite: bool,
    pos: u64,
    metadata: Vec<(String, String)>,
    tensors: Vec<TensorEntry>,
}

impl TpkWriter {
    /// Start writing `dest`. Fails at once if `dest` exists and `overwrite` is false.
    pub fn create(dest: &Path, overwrite: bool) -> Result<Self, FormatError> {
        if !overwrite && dest.exists() {
            return Err(FormatError::Exists(dest.to_path_buf()));
        }
        let tmp = AtomicFile::create(dest)?;
        let mut out = BufWriter::with_capacity(1 << 20, tmp);
        // Placeholder header, rewritten by finish().
        out.write_all(&[0u8; HEADER_LEN])
            .map_err(io("write header"))?;
        Ok(TpkWriter {
            out,
            overwrite,
            pos: HEADER_LEN as u64,
            metadata: Vec::new(),
            tensors: Vec::new(),
        })
    }

    /// Set a metadata key (the last value set wins).
    pub fn set_metadata(&mut self, key: &str, value: &str) {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.to_string(), value.to_string()));
    }

    /// Append one payload, aligned; returns its place and CRC for the chunk table.
    pub fn write_chunk(
        &mut self,
        payload: &[u8],
        elem_start: u64,
        elem_count: u64,
    ) -> Result<ChunkEntry, FormatError> {
        let offset = self.pad_to_alignment()?;
        self.out
            .write_all(payload)
            .map_err(io(format!("write {}", self.out.get_ref().dest().display())))?;
        self.pos += payload.len() as u64;
        Ok(ChunkEntry {
            offset,
            len: payload.len() as u64,
            crc32: crc32fast::hash(payload),
            elem_start,
            elem_count,
        })
    }

    /// Record a tensor whose chunks were written with [`TpkWriter::write_chunk`], in order.
    pub fn add_tensor(&mut self, entry: TensorEntry) -> Result<(), FormatError> {
        if self.tensors.iter().any(|t| t.name == entry.name) {
            return Err(FormatError::Malformed(format!(
                "tensor '{}' added twice",
                entry.name
            )));
        }
        self.tensors.push(entry);
        Ok(())
    }

    /// Bytes written so far (payloads and padding).
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn pad_to_alignment(&mut self) -> Result<u64, FormatError> {
        let aligned = align_up(self.pos).expect("file offset overflow");
        let pad = (aligned - self.pos) as usize;
        self.out
            .write_all(&[0u8; 64][..pad])
            .map_err(io("write padding"))?;
        self.pos = aligned;
        Ok(aligned)
    }

    /// Write the index and header, flush to disk and rename into place.
    pub fn finish(self) -> Result<Finished, FormatError> {
        self.finish_pending()?.persist()
    }

    /// Write the index and header, but leave the file under its temporary name until
    /// [`Pending::persist`]: a writer of several files renames none before all are complete.
    pub fn finish_pending(mut self) -> Result<Pending, FormatError> {
        let index_offset = self.pad_to_alignment()?;
        self.metadata
            .sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let index = encode_index(&self.metadata, &self.tensors);
        self.out.write_all(&index).map_err(io("write index"))?;
        let header = Header {
            major: VERSION_MAJOR,
            minor: VERSION_MINOR,
            flags: 0,
            index_offset,
            index_len: index.len() as u64,
            index_crc: crc32fast::hash(&index),
        };
        let mut tmp = self.out.into_inner().map_err(|e| FormatError::Io {
            context: "flush".into(),
            source: e.into_error(),
        })?;
        let f = tmp.file_mut();
        f.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
        f.write_all(&header.to_bytes())
            .map_err(io("write header"))?;
        let bytes = index_offset + index.len() as u64;
        Ok(Pending {
            tmp,
            overwrite: self.overwrite,
            bytes,
        })
    }
}

/// A written `.tpk` not yet in place ([`TpkWriter::finish_pending`]); dropped, it is deleted.
pub struct Pending {
    tmp: AtomicFile,
    overwrite: bool,
    bytes: u64,
}

impl Pending {
    /// The file's size.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flush to disk and rename into place.
    pub fn persist(self) -> Result<Finished, FormatError> {
        let sync = self.tmp.persist(self.overwrite)?;
        Ok(Finished {
            bytes: self.bytes,
            sync,
        })
    }
}

/// What [`TpkWriter::finish`] wrote.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// The file's size.
    pub bytes: u64,
    /// Time spent waiting for the data to reach the disk (the final `fsync`).
    pub sync: std::time::Duration,
}

fn put_str(b: &mut Vec<u8>, s: &[u8]) {
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s);
}

/// Serialize the index exactly as formats-spec/tpk.md §4 lays it out.
pub(crate) fn encode_index(metadata: &[(String, String)], tensors: &[TensorEntry]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut b, k.as_bytes());
        put_str(&mut b, v.as_bytes());
    }
    b.extend_from_slice(&(tensors.len() as u32).to_le_bytes());
    for t in tensors {
        let mut e = Vec::new();
        put_str(&mut e, t.name.as_bytes());
        put_str(&mut e, t.dtype.as_bytes());
        e.push(t.dims.len() as u8);
        for d in &t.dims {
            e.extend_from_slice(&d.to_le_bytes());
        }
        e.extend_from_slice(&t.source_bytes.to_le_bytes());
        e.push(t.stages.len() as u8);
        for s in &t.stages {
            e.extend_from_slice(&s.codec_id.to_le_bytes());
            put_str(&mut e, s.codec_name.as_bytes());
            e.extend_from_slice(&s.codec_version.to_le_bytes());
            put_str(&mut e, &s.params);
        }
        e.extend_from_slice(&(t.metrics.len() as u32).to_le_bytes());
        for (k, v) in &t.metrics {
            put_str(&mut e, k.as_bytes());
            e.extend_from_slice(&v.to_le_bytes());
        }
        e.extend_from_slice(&(t.chunks.len() as u32).to_le_bytes());
        for c in &t.chunks {
            e.extend_from_slice(&c.offset.to_le_bytes());
            e.extend_from_slice(&c.len.to_le_bytes());
            e.extend_from_slice(&c.crc32.to_le_bytes());
            e.extend_from_slice(&c.elem_start.to_le_bytes());
            e.extend_from_slice(&c.elem_count.to_le_bytes());
        }
        e.push(t.layout.code());
        b.extend_from_slice(&(e.len() as u32).to_le_bytes());
        b.extend_from_slice(&e);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limits, Stage, TpkFile};

    fn entry(name: &str, chunks: Vec<ChunkEntry>, n: u64) -> TensorEntry {
        TensorEntry {
            layout: Default::default(),
            name: name.into(),
            dtype: "F32".into(),
            dims: vec![n],
            source_bytes: n * 4,
            stages: vec![Stage {
                codec_id: 1,
                codec_name: "raw".into(),
                codec_version: 1,
                params: vec![],
            }],
            metrics: vec![("pcc".into(), 1.0)],
            chunks,
        }
    }

    #[test]
    fn empty_file_matches_spec_example() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.tpk");
        let size = TpkWriter::create(&p, false)
            .unwrap()
            .finish()
            .unwrap()
            .bytes;
        assert_eq!(size, 72);
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[64..], &[0u8; 8]);
        assert_eq!(
            u32::from_le_bytes(bytes[32..36].try_into().unwrap()),
            0x6522DF69
        );
        let f = TpkFile::open(bytes, &Limits::default()).unwrap();
        assert!(f.tensors().is_empty());
    }

    #[test]
    fn roundtrip_and_no_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tpk");
        let mut w = TpkWriter::create(&p, false).unwrap();
        w.set_metadata("z", "1");
        w.set_metadata("a", "2");
        let c0 = w.write_chunk(b"hello", 0, 3).unwrap();
        let c1 = w.write_chunk(b"", 3, 1).unwrap();
        let c2 = w.write_chunk(&[7u8; 100], 0, 2).unwrap();
        w.add_tensor(entry("x", vec![c0, c1], 4)).unwrap();
        w.add_tensor(entry("y", vec![c2], 2)).unwrap();
        w.finish().unwrap();
        let f = TpkFile::open_path(&p, &Limits::default()).unwrap();
        assert_eq!(f.metadata()[0].0, "a");
        assert_eq!(f.chunk(0, 0).unwrap(), b"hello");
        assert_eq!(f.chunk(0, 1).unwrap(), b"");
        assert_eq!(f.chunk(1, 0).unwrap(), &[7u8; 100][..]);
        assert_eq!(f.tensors()[1].chunks[0].offset, 64 + 64);
        assert!(f.verify_layout().is_empty());
        assert!(matches!(
            TpkWriter::create(&p, false),
            Err(FormatError::Exists(_))
        ));
        // Dropped writer leaves nothing behind.
        let q = dir.path().join("b.tpk");
        drop(TpkWriter::create(&q, false).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn newer_major_is_refused_newer_minor_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.tpk");
        TpkWriter::create(&p, false).unwrap().finish().unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let mut h = Header {
            major: 2,
            minor: 0,
            flags: 0,
            index_offset: 64,
            index_len: 8,
            index_crc: crc32fast::hash(&bytes[64..]),
        };
        let mut b2 = bytes.clone();
        b2[..64].copy_from_slice(&h.to_bytes());
        let err = TpkFile::open(b2, &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
        h.major = 1;
        h.minor = 9;
        // A newer minor may append bytes to the index.
        let mut b3 = bytes[..64].to_vec();
        b3.extend_from_slice(&bytes[64..]);
        b3.extend_from_slice(&[1, 2, 3]);
        h.index_len = 11;
        h.index_crc = crc32fast::hash(&b3[64..]);
        b3[..64].copy_from_slice(&h.to_bytes());
        TpkFile::open(b3.clone(), &Limits::default()).unwrap();
        h.minor = 0;
        b3[..64].copy_from_slice(&h.to_bytes());
        assert!(TpkFile::open(b3, &Limits::default()).is_err());
    }

    #[test]
    fn crc_reference_value() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF43926);
    }
}
