//! Models and VAE decoders saved with `torch.jit.save` (`model.torchscript`, `vae:
//! {torchscript: ...}`; docs/models.md), run as exported through libtorch's TorchScript
//! interpreter. fidshard knows only the contract: `forward(x, t, y)` of a model returns its
//! output `(N, C or 2C, H, W)`, `forward(z)` of a decoder returns images `(N, 3, H f, W f)`.
//! Both are checked once at load on a one-sample input, so that a wrong file fails in the model
//! check with one line naming it, never mid-run.
mod model;
mod vae;

pub use model::ScriptModel;
pub use vae::ScriptDecoder;

use crate::error::{EngineError, Result};
use std::path::Path;
use tch::{CModule, Device, Tensor};

/// Loads a TorchScript archive onto `device` in eval mode. The graph executor's optimisations
/// are turned off (process-wide; nothing else here runs TorchScript): its fusers compile kernels
/// specialised to the shapes they have seen, so the float bits of image `i` could depend on the
/// batch it ran in; unoptimised, the graph runs op by op as exported.
pub(crate) fn load_module(path: &Path, key: &str, device: Device) -> Result<CModule> {
    tch::jit::set_graph_executor_optimize(false);
    let mut module = CModule::load_on_device(path, device).map_err(|e| {
        EngineError::checkpoint(
            path,
            format!(
                "`{key}`: not a TorchScript archive libtorch can load ({}); save the module with torch.jit.save(torch.jit.trace(...) or torch.jit.script(...), path)",
                first_line(&e.to_string())
            ),
        )
    })?;
    module.set_eval();
    Ok(module)
}

/// The first sentence of a libtorch message (they go on with advice for PyTorch users and
/// C++ backtraces).
pub(crate) fn first_line(msg: &str) -> &str {
    let line = msg.lines().next().unwrap_or(msg).trim();
    line.split_once(". ").map_or(line, |(first, _)| first)
}

/// Runs the module's `forward` on `inputs`, panicking with the file and libtorch's message on
/// failure (after the load-time check this is a device error such as out of memory, which the
/// worker's batch loop catches and classifies).
pub(crate) fn forward(module: &CModule, path: &Path, inputs: &[&Tensor]) -> Tensor {
    module
        .forward_ts(inputs)
        .unwrap_or_else(|e| panic!("{}: TorchScript forward failed: {e}", path.display()))
}
