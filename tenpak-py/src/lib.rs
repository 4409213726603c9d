//! Python bindings (`import tenpak`): the native half. The Python package (`python/tenpak`)
//! wraps it in the `safetensors` package's API (`load_file`, `safe_open`) and turns bytes into
//! numpy arrays or torch tensors; this module decodes, compresses and decompresses through the
//! library, with the GIL released, and raises `tenpak.TenpakError` with the CLI's messages.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::path::PathBuf;
use tenpak::archive::Archive;

create_exception!(
    _tenpak,
    TenpakError,
    PyException,
    "An error from tenpak (its message is the CLI's)."
);

fn err(e: tenpak::Error) -> PyErr {
    TenpakError::new_err(e.to_string())
}

/// An open `.tpk` file.
#[pyclass(frozen, module = "tenpak")]
struct Reader {
    ar: Archive,
}

#[pymethods]
impl Reader {
    #[new]
    fn new(path: PathBuf) -> PyResult<Self> {
        Ok(Reader {
            ar: Archive::open(&path).map_err(err)?,
        })
    }

    /// Tensor names, in the file's order.
    fn keys(&self) -> Vec<String> {
        self.ar
            .file
            .tensors()
            .iter()
            .map(|t| t.name.clone())
            .collect()
    }

    /// The file's metadata.
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.ar.file.metadata() {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// (dtype name of the decoded values, shape) of tensor `name`.
    fn info(&self, name: &str) -> PyResult<(String, Vec<u64>)> {
        let i = self.index(name)?;
        let dt = self.ar.decoded_dtype(i).map_err(err)?;
        Ok((
            dt.name().to_string(),
            self.ar.file.tensors()[i].dims.clone(),
        ))
    }

    /// The decoded bytes of tensor `name` (row-major, its decoded dtype).
    fn read<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyBytes>> {
        let i = self.index(name)?;
        let (_, bytes) = py.detach(|| self.ar.decode_tensor(i)).map_err(err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The decoded bytes of rows `start..stop` of the first dimension of tensor `name`, decoding
    /// only the chunks that hold them where the layout allows.
    fn read_rows<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        start: u64,
        stop: u64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let i = self.index(name)?;
        let (_, bytes) = py
            .detach(|| self.ar.decode_rows(i, start..stop))
            .map_err(err)?;
        Ok(PyBytes::new(py, &bytes))
    }
}

impl Reader {
    fn index(&self, name: &str) -> PyResult<usize> {
        self.ar.find(name).ok_or_else(|| {
            pyo3::exceptions::PyKeyError::new_err(format!("no tensor '{name}' in this file"))
        })
    }
}

/// Compress `src` (a model file or folder) into `dst` (.tpk); returns the report as JSON text.
#[pyfunction]
#[pyo3(signature = (src, dst, codec = "byteplane", config = None, force = false, threads = None))]
fn compress(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    codec: &str,
    config: Option<PathBuf>,
    force: bool,
    threads: Option<usize>,
) -> PyResult<String> {
    let mut opts = tenpak::compress::CompressOptions {
        codec: codec.to_string(),
        force,
        ..Default::default()
    };
    if let Some(c) = &config {
        opts.apply_config(&tenpak::config::Config::load(c).map_err(err)?);
    }
    let r = py
        .detach(|| {
            let cx = context(threads)?;
            tenpak::compress::compress(&src, &dst, &opts, &cx)
        })
        .map_err(err)?;
    Ok(serde_json::to_string(&r).expect("reports serialize"))
}

/// Decompress `src` (.tpk) into `dst` (.safetensors, a folder `dir/`, or .gguf); returns the
/// report as JSON text.
#[pyfunction]
#[pyo3(signature = (src, dst, dtype = "source", force = false, threads = None, format = None))]
fn decompress(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    dtype: &str,
    force: bool,
    threads: Option<usize>,
    format: Option<&str>,
) -> PyResult<String> {
    let value_err = |e: String| pyo3::exceptions::PyValueError::new_err(e);
    let opts = tenpak::decompress::DecompressOptions {
        dtype: dtype.parse().map_err(value_err)?,
        force,
        format: format.map(str::parse).transpose().map_err(value_err)?,
        ..Default::default()
    };
    let r = py
        .detach(|| {
            let cx = context(threads)?;
            tenpak::decompress::decompress(&src, &dst, &opts, &cx)
        })
        .map_err(err)?;
    Ok(serde_json::to_string(&r).expect("reports serialize"))
}

fn context(threads: Option<usize>) -> tenpak::Result<tenpak::Context<'static>> {
    let cx = tenpak::Context::default();
    match threads {
        Some(n) => cx.with_threads(n),
        None => Ok(cx),
    }
}

#[pymodule]
fn _tenpak(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("TenpakError", m.py().get_type::<TenpakError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Reader>()?;
    m.add_function(wrap_pyfunction!(compress, m)?)?;
    m.add_function(wrap_pyfunction!(decompress, m)?)?;
    Ok(())
}
