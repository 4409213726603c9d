//! `verify`: check every CRC and decode every chunk, listing every problem found.

use crate::archive::{decoded_len, Archive};
use crate::error::{ErrorKind, Result};
use crate::progress::Event;
use crate::Context;
use rayon::prelude::*;
use serde::Serialize;
use std::path::Path;

/// One problem.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Tensor, if the problem belongs to one.
    pub tensor: Option<String>,
    /// Chunk, if the problem belongs to one.
    pub chunk: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// Outcome of [`verify`].
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Tensors in the file.
    pub tensors: usize,
    /// Chunks checked.
    pub chunks: usize,
    /// Corruption found (CRC mismatch, undecodable payload, non-zero padding).
    pub problems: Vec<Problem>,
    /// Tensors whose codec this tenpak does not have (not checked beyond their CRCs).
    pub unsupported: Vec<Problem>,
}

impl VerifyReport {
    /// True when nothing is wrong and everything could be checked.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.unsupported.is_empty()
    }
}

/// Verify a `.tpk`. Header and index errors are returned as `Err` (nothing else can be checked).
pub fn verify(path: &Path, cx: &Context<'_>) -> Result<VerifyReport> {
    cx.install(|| verify_on_threads(path, cx))
}

fn verify_on_threads(path: &Path, cx: &Context<'_>) -> Result<VerifyReport> {
    let ar = Archive::open(path)?;
    let tensors = ar.file.tensors();
    let mut problems: Vec<Problem> = ar
        .file
        .verify_layout()
        .into_iter()
        .map(|p| Problem {
            tensor: p.tensor,
            chunk: p.chunk,
            message: p.error.to_string(),
        })
        .collect();
    let mut unsupported = Vec::new();
    let total: u64 = tensors.iter().map(|t| t.payload_bytes()).sum();
    cx.event(Event::Start {
        total_bytes: total,
        tensors: tensors.len(),
    });
    let mut chunks = 0;
    for (i, t) in tensors.iter().enumerate() {
        if cx.cancelled() {
            return Err(crate::progress::interrupted());
        }
        cx.event(Event::Tensor { name: &t.name });
        chunks += t.chunks.len();
        let pipeline = ar.pipeline(i);
        let checked: Vec<Option<Problem>> = (0..t.chunks.len())
            .into_par_iter()
            .map(|c| {
                let r = match &pipeline {
                    Ok((dtype, p)) => ar.decode_chunk(i, c, *dtype, p).map(|_| ()),
                    Err(_) => ar.file.chunk(i, c).map(|_| ()).map_err(Into::into),
                };
                r.err().map(|e| Problem {
                    tensor: Some(t.name.clone()),
                    chunk: Some(c),
                    message: e.message,
                })
            })
            .collect();
        problems.extend(checked.into_iter().flatten());
        match pipeline {
            Err(e) if e.kind == ErrorKind::Unsupported => unsupported.push(Problem {
                tensor: Some(t.name.clone()),
                chunk: None,
                message: e.message,
            }),
            Err(e) => problems.push(Problem {
                tensor: Some(t.name.clone()),
                chunk: None,
                message: e.message,
            }),
            Ok((dtype, p)) => {
                if let Err(e) = decoded_len(t, p.tensor_codec().decoded_dtype(dtype), &ar.limits) {
                    problems.push(Problem {
                        tensor: Some(t.name.clone()),
                        chunk: None,
                        message: e.message,
                    });
                }
            }
        }
        cx.event(Event::Advance {
            bytes: t.payload_bytes(),
        });
    }
    cx.event(Event::Finish);
    Ok(VerifyReport {
        tensors: tensors.len(),
        chunks,
        problems,
        unsupported,
    })
}
