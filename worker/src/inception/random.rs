//! Random Inception weights in torch-fidelity's layout, drawn tensor by tensor in a given key
//! order from libtorch's CPU generator, exactly as tests/fixtures/inception/make_fixtures.py
//! draws them with torch: the same seed gives the same bits in both. For tests and timings on
//! machines without the real weights (nothing here is a trained network).
use tch::{Device, Kind, Tensor};

/// One parameter of the recipe (fan-in scaled convolutions, BatchNorm near identity).
pub fn random_tensor(key: &str, shape: &[i64]) -> Option<Tensor> {
    let cpu = (Kind::Float, Device::Cpu);
    Some(if key.ends_with("num_batches_tracked") {
        Tensor::zeros(shape, (Kind::Int64, Device::Cpu))
    } else if key.ends_with("conv.weight") {
        let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
        Tensor::randn(shape, cpu) * (2.0 / fan_in).sqrt()
    } else if key.ends_with("bn.weight") {
        Tensor::randn(shape, cpu) * 0.1 + 1.0
    } else if key.ends_with("bn.bias") || key.ends_with("bn.running_mean") {
        Tensor::randn(shape, cpu) * 0.1
    } else if key.ends_with("bn.running_var") {
        Tensor::rand(shape, cpu) * 0.5 + 0.75
    } else if key == "fc.weight" {
        Tensor::randn(shape, cpu) * (1.0 / shape[1] as f64).sqrt()
    } else if key == "fc.bias" {
        Tensor::randn(shape, cpu) * 0.1
    } else {
        return None;
    })
}

/// The state_dict of `keys` (name and shape, in draw order) after `manual_seed(seed)`.
pub fn random_state_dict(
    seed: i64,
    keys: &[(String, Vec<i64>)],
) -> Result<Vec<(String, Tensor)>, String> {
    tch::manual_seed(seed);
    keys.iter()
        .map(|(k, shape)| {
            random_tensor(k, shape)
                .map(|t| (k.clone(), t))
                .ok_or_else(|| format!("no random recipe for `{k}`"))
        })
        .collect()
}
