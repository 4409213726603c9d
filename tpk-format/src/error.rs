use std::fmt;

/// Everything that can be wrong with a `.tpk` file or its writing.
#[derive(Debug)]
#[non_exhaustive]
pub enum FormatError {
    /// An I/O error, with what was being done.
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file does not start with the `.tpk` magic.
    NotTpk,
    /// The file's major version is newer than this reader's.
    NewerMajor {
        /// The file's major version.
        found: u16,
        /// The newest major this reader knows.
        supported: u16,
    },
    /// The file ends before a structure it declares.
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// A stored CRC does not match the bytes.
    Checksum {
        /// "header", "index" or "chunk".
        what: &'static str,
        /// Tensor name, for a chunk.
        tensor: Option<String>,
        /// Chunk number, for a chunk.
        chunk: Option<usize>,
        /// CRC stored in the file.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A structure violates the format.
    Malformed(String),
    /// A count or size exceeds a reader limit.
    Limit {
        /// What exceeded.
        what: &'static str,
        /// The value found.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// The destination exists and overwriting was not asked for.
    Exists(std::path::PathBuf),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Io { context, source } => write!(f, "{context}: {source}"),
            FormatError::NotTpk => write!(f, "not a .tpk file (bad magic)"),
            FormatError::NewerMajor { found, supported } => write!(
                f,
                "file format version {found}.x is newer than this tenpak supports ({supported}.x); \
                 upgrade tenpak to read it"
            ),
            FormatError::Truncated { what, need, have } => write!(
                f,
                "file is truncated: {what} needs {need} bytes, {have} available"
            ),
            FormatError::Checksum {
                what,
                tensor,
                chunk,
                stored,
                computed,
            } => {
                write!(f, "{what} checksum mismatch")?;
                if let Some(t) = tensor {
                    write!(f, " in tensor '{t}'")?;
                }
                if let Some(c) = chunk {
                    write!(f, " chunk {c}")?;
                }
                write!(
                    f,
                    " (stored {stored:#010x}, computed {computed:#010x}): the file is corrupted"
                )
            }
            FormatError::Malformed(m) => write!(f, "malformed file: {m}"),
            FormatError::Limit { what, value, limit } => {
                write!(f, "{what} is {value}, over the limit of {limit}")
            }
            FormatError::Exists(p) => write!(
                f,
                "{} already exists (pass --force to overwrite)",
                p.display()
            ),
        }
    }
}

impl std::error::Error for FormatError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FormatError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> FormatError {
    let context = context.into();
    move |source| FormatError::Io { context, source }
}
