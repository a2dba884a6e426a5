//! The helpers of the engine tests: fixture paths (fixtures.rs, also used by the pickle fuzz
//! binary) and the golden README's error measures.
mod fixtures;

pub use fixtures::fixture;
use std::collections::BTreeMap;
use tch::Tensor;

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
