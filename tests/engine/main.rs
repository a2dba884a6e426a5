//! The engine tests: parity of the DiT, the diffusion steps, the VAE, the Inception feature
//! extractor and the checkpoint reader with the PyTorch references of the golden data, and how `fidshard-worker serve` ends on bad
//! input (serve.rs), as one test binary (one link against
//! libtorch instead of one per file). The pickle fuzz test stays a binary of its own
//! (tests/engine_pickle_fuzz.rs): it measures the time of each case and the process's peak
//! memory, which other tests running beside it would distort.
mod support;

mod checkpoint;
mod diffusers_dit;
mod diffusion;
mod dit;
mod inception;
mod serve;
mod sit;
mod sit_transport;
mod torchscript;
mod vae;
