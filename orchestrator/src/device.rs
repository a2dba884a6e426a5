//! Device checks shared by the commands.
use anyhow::{bail, Result};
use tch::Device;

/// Fails early, with the fix, when a CUDA device is asked for but not usable.
pub(crate) fn check(device: Device) -> Result<()> {
    if let Device::Cuda(i) = device {
        let n = tch::Cuda::device_count();
        if !tch::Cuda::is_available() || i as i64 >= n {
            bail!(crate::exit::Fatal::input(anyhow::anyhow!(
                "device cuda:{i} is not available ({n} CUDA device(s) visible); use --device cpu or check CUDA_VISIBLE_DEVICES"
            )));
        }
    }
    Ok(())
}
