//! The one public error type: a kind, a message with the numbers, and where it happened.

use std::fmt;
use std::path::{Path, PathBuf};

/// What category of failure this is (the Symphonia / image split).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Reading or writing a file failed.
    Io,
    /// A file or payload violates its format.
    Malformed,
    /// Valid, but not something this tenpak can handle (newer codec, unknown dtype).
    Unsupported,
    /// A size or count exceeds a limit.
    Limit,
    /// A stored checksum does not match.
    Checksum,
    /// Bad options or configuration from the user.
    Config,
    /// The input model is unusable (missing tensor, missing shard, ...).
    Input,
    /// The user stopped the operation (Ctrl-C).
    Interrupted,
}

/// What is wrong with malformed data ([`ErrorKind::Malformed`]), for callers that act on it:
/// `verify` and fuzz triage tell a bad length from bad contents, tests assert the defect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// A codec's stored parameters, a pipeline's stages or a tensor's index entry are invalid.
    Params,
    /// A payload's length differs from what its element count and parameters give.
    Length,
    /// A payload's contents are invalid: a bad code table, a code outside its dictionary, a
    /// stream that ends early, non-zero padding.
    Payload,
    /// An input model file (safetensors, GGUF) violates its format.
    File,
    /// A caller passed buffers, shapes or types that do not fit: a bug, not bad data.
    Internal,
}

/// tenpak's error: kind, message, and the file / tensor / chunk it concerns.
#[derive(Debug)]
pub struct Error {
    /// Category.
    pub kind: ErrorKind,
    /// What is wrong, with the numbers.
    pub message: String,
    /// File concerned.
    pub file: Option<PathBuf>,
    /// Tensor concerned.
    pub tensor: Option<String>,
    /// Chunk concerned.
    pub chunk: Option<usize>,
    /// For [`ErrorKind::Malformed`]: what is wrong, where it is known.
    pub defect: Option<Defect>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A new error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            file: None,
            tensor: None,
            chunk: None,
            defect: None,
            source: None,
        }
    }
    fn with_defect(kind: ErrorKind, defect: Defect, message: impl Into<String>) -> Self {
        Error {
            defect: Some(defect),
            ..Error::new(kind, message)
        }
    }
    /// Invalid stored parameters, stages or index entry ([`Defect::Params`]).
    pub fn bad_params(message: impl Into<String>) -> Self {
        Error::with_defect(ErrorKind::Malformed, Defect::Params, message)
    }
    /// A payload of the wrong length ([`Defect::Length`]).
    pub fn bad_length(message: impl Into<String>) -> Self {
        Error::with_defect(ErrorKind::Malformed, Defect::Length, message)
    }
    /// A payload with invalid contents ([`Defect::Payload`]).
    pub fn bad_payload(message: impl Into<String>) -> Self {
        Error::with_defect(ErrorKind::Malformed, Defect::Payload, message)
    }
    /// An input model file that violates its format ([`Defect::File`]).
    pub fn bad_file(message: impl Into<String>) -> Self {
        Error::with_defect(ErrorKind::Malformed, Defect::File, message)
    }
    /// Arguments that do not fit, from a caller's bug ([`Defect::Internal`]).
    pub fn internal(message: impl Into<String>) -> Self {
        Error::with_defect(ErrorKind::Malformed, Defect::Internal, message)
    }
    /// Shorthand for a configuration error.
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }
    /// Shorthand for an input error.
    pub fn input(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Input, message)
    }
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, e: std::io::Error) -> Self {
        let mut err = Error::new(ErrorKind::Io, format!("{}: {e}", context.into()));
        err.source = Some(Box::new(e));
        err
    }
    /// Attach the file, unless one is already set.
    pub fn with_file(mut self, p: &Path) -> Self {
        self.file.get_or_insert_with(|| p.to_path_buf());
        self
    }
    /// Attach the tensor, unless one is already set.
    pub fn with_tensor(mut self, t: &str) -> Self {
        self.tensor.get_or_insert_with(|| t.to_string());
        self
    }
    /// Attach the chunk, unless one is already set.
    pub fn with_chunk(mut self, c: usize) -> Self {
        self.chunk.get_or_insert(c);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.file {
            write!(f, "{}: ", p.display())?;
        }
        if let Some(t) = &self.tensor {
            write!(f, "tensor '{t}': ")?;
        }
        if let Some(c) = self.chunk {
            write!(f, "chunk {c}: ")?;
        }
        f.write_str(&clip(&self.message))
    }
}

/// Longest run of non-space characters an error message shows.
pub const MAX_ECHO: usize = 200;

/// `message` with every run of non-space characters longer than [`MAX_ECHO`] cut to that many
/// and the cut counted: messages echo values read from files (a config string, a tensor name),
/// and a 5 MB value would otherwise be printed whole.
pub fn clip(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_ECHO
        || !message
            .split(char::is_whitespace)
            .any(|w| w.chars().count() > MAX_ECHO)
    {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(4 * MAX_ECHO);
    let mut rest = message;
    while !rest.is_empty() {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(end);
        let n = word.chars().count();
        if n > MAX_ECHO {
            out.extend(word.chars().take(MAX_ECHO));
            out.push_str(&format!("… ({} more characters)", n - MAX_ECHO));
        } else {
            out.push_str(word);
        }
        let space = tail.len() - tail.trim_start().len();
        out.push_str(&tail[..space]);
        rest = &tail[space..];
    }
    std::borrow::Cow::Owned(out)
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<tpk_format::FormatError> for Error {
    fn from(e: tpk_format::FormatError) -> Self {
        use tpk_format::FormatError as F;
        let kind = match &e {
            F::Io { .. } => ErrorKind::Io,
            F::NotTpk | F::Truncated { .. } | F::Malformed(_) => ErrorKind::Malformed,
            F::NewerMajor { .. } => ErrorKind::Unsupported,
            F::Checksum { .. } => ErrorKind::Checksum,
            F::Limit { .. } => ErrorKind::Limit,
            F::Exists(_) => ErrorKind::Config,
            _ => ErrorKind::Malformed,
        };
        let mut err = Error::new(kind, e.to_string());
        if kind == ErrorKind::Malformed {
            err.defect = Some(Defect::File);
        }
        if let F::Checksum { tensor, chunk, .. } = &e {
            err.tensor = tensor.clone();
            err.chunk = *chunk;
            // The message already carries place; keep only the numbers in it.
            err.message = match &e {
                F::Checksum {
                    what,
                    stored,
                    computed,
                    ..
                } => format!(
                    "{what} checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is corrupted"
                ),
                _ => unreachable!(),
            };
        }
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_clipped() {
        let long = "y".repeat(300_000);
        let e = Error::config(format!("field 'formats': '{long}' is not a tile format"));
        let shown = e.to_string();
        assert!(shown.len() < 300, "{shown}");
        assert!(
            shown.contains("(299802 more characters)") && shown.ends_with("is not a tile format"),
            "{shown}"
        );
        assert_eq!(clip("short message"), "short message");
    }
}
