//! A base model for deltas (`compress --base`, `decompress --base`; formats-spec/delta.md): an
//! opened model whose tensors are found by name and checked by fingerprint.

use crate::codec::delta::{fingerprint, short, DeltaCodec};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::input::{self, TensorSource};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// An opened base model.
pub struct Base {
    /// Where it was opened from.
    pub path: PathBuf,
    src: Box<dyn TensorSource>,
    names: HashMap<String, usize>,
}

impl Base {
    /// Open a model (any input `compress` reads).
    pub fn open(path: &Path) -> Result<Base> {
        let src = input::open(path)?;
        let names = src
            .tensors()
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Base {
            path: path.to_path_buf(),
            src,
            names,
        })
    }

    /// Whether the base has a tensor `name` of this shape and dtype (its data unread).
    pub fn has(&self, name: &str, dims: &[u64], dtype: DType) -> bool {
        self.names.get(name).is_some_and(|&i| {
            let t = &self.src.tensors()[i];
            t.dims == dims && t.dtype == dtype
        })
    }

    /// The base's tensor `name` when it has the same shape and dtype: its dtype and bytes.
    pub fn matching(
        &self,
        name: &str,
        dims: &[u64],
        dtype: DType,
    ) -> Result<Option<Cow<'_, [u8]>>> {
        let Some(&i) = self.names.get(name) else {
            return Ok(None);
        };
        let t = &self.src.tensors()[i];
        if t.dims != dims || t.dtype != dtype {
            return Ok(None);
        }
        Ok(Some(self.src.data(i).map_err(|e| e.with_file(&self.path))?))
    }

    /// The base tensor a delta was made against, after checking its fingerprint; errors name
    /// the tensor and the base file.
    pub fn for_delta(
        &self,
        name: &str,
        dims: &[u64],
        d: &DeltaCodec,
    ) -> Result<(DType, Cow<'_, [u8]>)> {
        let missing = |why: String| {
            Error::input(format!(
                "tensor '{name}' is a delta against a base model, and {} {why}",
                self.path.display()
            ))
        };
        let &i = self
            .names
            .get(name)
            .ok_or_else(|| missing("has no tensor of that name".into()))?;
        let t = &self.src.tensors()[i];
        let data = self.src.data(i).map_err(|e| e.with_file(&self.path))?;
        let f = fingerprint(t.dtype, &t.dims, &data);
        if t.dims != dims || f != d.base {
            return Err(missing(format!(
                "holds a different one (shape {:?}, fingerprint {}; the delta was made against {})",
                t.dims,
                short(&f),
                short(&d.base)
            )));
        }
        Ok((t.dtype, data))
    }
}
