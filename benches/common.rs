//! Real MiniLM weights for the benches (run scripts/fetch-test-models.sh first).

use std::path::{Path, PathBuf};
use tenpak::dtype::{self, DType};

/// The repository's root: the benches belong to the root package and to tenpak-eval.
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("scripts/fetch-test-models.sh").is_file())
        .expect("the benches run inside the repository")
}

pub fn minilm_path() -> PathBuf {
    let dir = std::env::var_os("TENPAK_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models"));
    let p = dir.join("minilm/model.safetensors");
    assert!(
        p.is_file(),
        "{} missing: run scripts/fetch-test-models.sh",
        p.display()
    );
    p
}

/// Every F32 tensor of MiniLM, concatenated (f32 bytes), and the same values as bf16 (RNE).
#[allow(dead_code)] // not every bench uses it
pub fn minilm_f32_and_bf16() -> (Vec<u8>, Vec<u8>) {
    let bytes = std::fs::read(minilm_path()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
    names.sort();
    let mut f32b = Vec::new();
    for n in names {
        let t = st.tensor(&n).unwrap();
        if t.dtype() == safetensors::Dtype::F32 {
            f32b.extend_from_slice(t.data());
        }
    }
    let mut vals = Vec::new();
    dtype::to_f32(DType::F32, &f32b, &mut vals);
    let mut b16 = Vec::new();
    dtype::from_f32(DType::BF16, &vals, &mut b16).unwrap();
    (f32b, b16)
}
