//! The helpers of the engine tests: fixture paths (fixtures.rs, also used by the pickle fuzz
//! binary) and the golden README's error measures.
mod fixtures;

pub use fixtures::fixture;
use std::collections::BTreeMap;
use tch::Tensor;

/// Held by every test that draws from libtorch's global CPU generator: the engine seeds it per
/// sample and draws right after (worker/src/rng.rs), so a draw of another test thread in
/// between would change that sample's noise.
pub fn global_rng() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
