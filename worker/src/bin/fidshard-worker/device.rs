//! Devices as libtorch sees them.
use anyhow::Result;
use fidshard_core::DeviceSpec;
use tch::Device;

/// The libtorch device for `spec`, failing early (exit 2) with the fix when a CUDA device is
/// asked for but not usable.
pub(crate) fn to_tch(spec: DeviceSpec) -> Result<Device> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(i) => {
            let n = tch::Cuda::device_count();
            if !tch::Cuda::is_available() || i64::from(i) >= n {
                return Err(fidshard_core::input_error!(
                    "device cuda:{i} is not available ({n} CUDA device(s) visible); use --device cpu or check CUDA_VISIBLE_DEVICES"
                ));
            }
            Ok(Device::Cuda(i as usize))
        }
    }
}

/// A libtorch device in the words of the command line: `cpu`, `cuda:0`.
pub(crate) fn name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}
