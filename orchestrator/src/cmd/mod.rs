//! One file per verb of the command line. Each turns its arguments into calls of the layers
//! below (coordinator, worker, out dir, npz, job) and returns what `main` maps to an exit code.
pub(crate) mod assemble;
pub(crate) mod bench;
pub(crate) mod completions;
pub(crate) mod config;
pub(crate) mod doctor;
pub(crate) mod eval;
pub(crate) mod fetch;
pub(crate) mod grid;
pub(crate) mod man;
pub(crate) mod plan;
pub(crate) mod repair;
pub(crate) mod run;
pub(crate) mod sample;
pub(crate) mod status;
pub(crate) mod validate;
