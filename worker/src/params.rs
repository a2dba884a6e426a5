//! Where model parameters come from.
//!
//! Every module constructor asks a [`ParamSource`] for each parameter by its full state_dict key
//! and the shape the architecture implies. Two sources exist:
//! - [`StateDict`]: tensors loaded from a checkpoint; a missing key or a shape mismatch is an
//!   error naming the key and both shapes, and [`StateDict::finish`] rejects keys nobody took.
//! - [`ShapeRecorder`]: records (name, shape) and hands out uninitialised tensors, so a model of
//!   the real size (DiT-XL/2, sd-vae-ft-ema) can be built to compare against the manifests
//!   without weights; the allocation is never touched, so it costs no resident memory.
use crate::error::{EngineError, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub trait ParamSource {
    /// The parameter `name` (full dotted state_dict key) with exactly `shape`.
    fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor>;
    /// Whether the source has `name` (used to tell apart optional layers and naming schemes).
    fn contains(&self, name: &str) -> bool;
}

/// `prefix.name`, or `name` when prefix is empty.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Named tensors from one checkpoint file, moved to the target device and kind as they are taken.
pub struct StateDict {
    origin: PathBuf,
    tensors: BTreeMap<String, Tensor>,
    device: Device,
    /// Floating-point parameters are converted to this kind (float32 by default).
    kind: Kind,
}

impl StateDict {
    pub fn new(origin: impl Into<PathBuf>, tensors: BTreeMap<String, Tensor>) -> Self {
        StateDict {
            origin: origin.into(),
            tensors,
            device: Device::Cpu,
            kind: Kind::Float,
        }
    }
    pub fn with_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }
    pub fn origin(&self) -> &Path {
        &self.origin
    }
    pub fn len(&self) -> usize {
        self.tensors.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }
    pub fn into_inner(self) -> BTreeMap<String, Tensor> {
        self.tensors
    }
    /// Renames keys in place (used for legacy VAE attention names).
    pub fn rename(&mut self, from: &str, to: &str) {
        if let Some(t) = self.tensors.remove(from) {
            self.tensors.insert(to.to_string(), t);
        }
    }
    /// Removes every tensor under `prefix.` (weights a sampler never uses, such as REPA's
    /// `projectors`); returns how many there were.
    pub fn drop_prefix(&mut self, prefix: &str) -> usize {
        let dotted = format!("{prefix}.");
        let before = self.tensors.len();
        self.tensors.retain(|k, _| !k.starts_with(&dotted));
        before - self.tensors.len()
    }
    /// Errors if any tensor was not taken by the model.
    pub fn finish(self) -> Result<()> {
        if self.tensors.is_empty() {
            Ok(())
        } else {
            Err(EngineError::UnexpectedKeys {
                path: self.origin,
                keys: self.tensors.into_keys().collect(),
            })
        }
    }
}

impl ParamSource for StateDict {
    fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| EngineError::MissingKey {
                path: self.origin.clone(),
                key: name.to_string(),
                expected: shape.to_vec(),
            })?;
        let found = t.size();
        if found != shape {
            return Err(EngineError::ShapeMismatch {
                path: self.origin.clone(),
                key: name.to_string(),
                expected: shape.to_vec(),
                found,
                hint: String::new(),
            });
        }
        let t = if t.is_floating_point() {
            t.to_kind(self.kind)
        } else {
            t
        };
        Ok(t.to_device(self.device).detach())
    }
    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Records the parameters a model asks for; see the module docs.
#[derive(Default)]
pub struct ShapeRecorder {
    pub shapes: BTreeMap<String, Vec<i64>>,
}

impl ParamSource for ShapeRecorder {
    fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor> {
        if self
            .shapes
            .insert(name.to_string(), shape.to_vec())
            .is_some()
        {
            return Err(EngineError::checkpoint(
                "<shape recorder>",
                format!("parameter `{name}` requested twice"),
            ));
        }
        Ok(Tensor::empty(shape, (Kind::Float, Device::Cpu)))
    }
    fn contains(&self, _name: &str) -> bool {
        false
    }
}

/// Random weights (normal, std 0.02) of any shape: for benchmarks of real-sized architectures
/// whose checkpoints are not at hand. Never used for sampling a job.
pub struct RandomParams {
    pub device: Device,
    pub kind: Kind,
}

impl ParamSource for RandomParams {
    fn take(&mut self, _name: &str, shape: &[i64]) -> Result<Tensor> {
        Ok((Tensor::randn(shape, (Kind::Float, self.device)) * 0.02).to_kind(self.kind))
    }
    fn contains(&self, _name: &str) -> bool {
        false
    }
}
