//! The CLI tests: the real `fidshard` and `fidshard-worker` binaries on the golden data, as one
//! test binary (one link of the crate instead of one per file). One module per concern, one
//! helper tree (support/). The modules that inject faults need the `failpoints` feature
//! (`make test` enables it; see orchestrator/src/faults.rs); without it they are left out and
//! the rest still runs.
mod support;

mod bad_input;
mod binaries;
mod completions;
mod demo;
mod diffusers;
mod eval;
mod fetch;
mod k8s;
mod package;
mod plan;
mod repair;
mod run;
mod sample;
mod sit;
mod torchscript;

#[cfg(feature = "failpoints")]
mod chaos;
#[cfg(feature = "failpoints")]
mod faults;
#[cfg(feature = "failpoints")]
mod notify;
#[cfg(feature = "failpoints")]
mod partitions;
#[cfg(feature = "failpoints")]
mod preempt;
#[cfg(feature = "failpoints")]
mod reliability;
#[cfg(feature = "failpoints")]
mod slurm;
#[cfg(feature = "failpoints")]
mod terminal;
