//! Helpers shared by the test binaries: fixture paths and the golden README's error measures.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::Tensor;

/// `tests/fixtures/<rel>` (the golden data is copied there so a fresh clone has it).
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(rel)
}

/// All tensors of a safetensors file, read by libtorch.
pub fn read_safetensors(rel: &str) -> BTreeMap<String, Tensor> {
    let path = fixture(rel);
    Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// Relative L2 error ||out - ref|| / ||ref||, computed in float64.
pub fn rel_l2(out: &Tensor, reference: &Tensor) -> f64 {
    let out = out.to_kind(tch::Kind::Double);
    let reference = reference.to_kind(tch::Kind::Double);
    assert_eq!(out.size(), reference.size(), "shape mismatch");
    let num = (&out - &reference).norm().double_value(&[]);
    let den = reference.norm().double_value(&[]);
    num / den
}
