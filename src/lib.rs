#![doc = include_str!("../README.md")]
//! # Using the library
//!
//! The `tenpak` crate is the engine without the command line: it has no CLI, plotting or candle
//! dependency. Long operations take a [`Context`] (threads, cancellation, progress, figures);
//! `Context::default()` runs on rayon's global pool and reports nothing.
//!
//! Compress a model file into a `.tpk`, then read a tensor back:
//!
//! ```
//! use tenpak::archive::Archive;
//! use tenpak::compress::{compress, CompressOptions};
//! use tenpak::Context;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! // A one-tensor safetensors file: a 64 x 64 f32 matrix.
//! let values: Vec<f32> = (0..64 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
//! let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
//! let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![64, 64], &bytes)?;
//! let model = dir.path().join("model.safetensors");
//! safetensors::serialize_to_file([("w", view)], None, &model)?;
//!
//! let out = dir.path().join("model.tpk");
//! let opts = CompressOptions { codec: "int8".into(), ..CompressOptions::default() };
//! let report = compress(&model, &out, &opts, &Context::default())?;
//! assert!(report.file_bytes < bytes.len() as u64);
//! assert!(report.tensors[0].metrics.pcc > 0.9999);
//!
//! let archive = Archive::open(&out)?;
//! let i = archive.find("w").expect("the tensor is stored");
//! let (dtype, decoded) = archive.decode_tensor(i)?;
//! assert_eq!(dtype, tenpak::dtype::DType::F32);
//! assert_eq!(decoded.len(), bytes.len());
//! # Ok(())
//! # }
//! ```
//!
//! Encode one tensor's values in memory through a codec pipeline, and decode them:
//!
//! ```
//! use tenpak::codec::Pipeline;
//! use tenpak::dtype::DType;
//!
//! # fn main() -> tenpak::Result<()> {
//! let values: Vec<f32> = (0..1024).map(|i| (i as f32 * 0.01).cos()).collect();
//! let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
//! let pipeline = Pipeline::parse("int4_g32_asym+zstd")?;
//! let payload = pipeline.encode(DType::F32, &bytes)?;
//! assert!(payload.len() * 6 < bytes.len());
//! let decoded = pipeline.decode(&payload, DType::F32, values.len(), u64::MAX)?;
//! let max_err = decoded
//!     .chunks_exact(4)
//!     .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
//!     .zip(&values)
//!     .map(|(d, v)| (d - v).abs())
//!     .fold(0f32, f32::max);
//! assert!(max_err < 0.04);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod allocate;
pub mod analyze;
pub mod archive;
pub mod assign;
pub mod atomic;
pub mod base;
pub mod calib;
pub mod codec;
pub mod compress;
pub mod config;
pub mod context;
pub mod decompress;
pub mod dtype;
pub mod encode;
pub mod error;
pub mod figure;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz_api;
pub mod input;
pub mod inspect;
pub mod kv;
pub mod merge;
pub mod metrics;
pub mod mixed;
pub mod plan;
pub mod progress;
pub mod prune;
pub mod set;
pub mod tiles;
pub mod values;
pub mod verify;

pub use context::Context;
pub use error::{Defect, Error, ErrorKind, Result};

/// This tenpak's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
