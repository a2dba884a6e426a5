//! Build-script step for the packages that link libtorch (the worker crate includes it).
//!
//! torch-sys (`links = "tch"`) exports the libtorch lib folder it compiled against as
//! `DEP_TCH_LIBTORCH_LIB`. Two things happen here:
//!
//! 1. Its real path (links resolved, so not `.venv/...` inside the checkout) is embedded as the
//!    RUNPATH: the binaries run without LD_LIBRARY_PATH and keep running after the checkout is
//!    moved or deleted (`make install`). LD_LIBRARY_PATH still takes precedence over RUNPATH.
//! 2. When that folder has `libtorch_cuda.so` (the CUDA build of the torch wheel), it is linked
//!    with `--no-as-needed`: no symbol of it is used directly, so the linker's default
//!    `--as-needed` would drop it (tch-rs issue #980), libtorch would then never register its
//!    CUDA backend, and `devices: auto` would see no GPU on a GPU node.
#[allow(dead_code)]
pub fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    let real = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone().into());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", real.display());
    if real.join("libtorch_cuda.so").is_file() {
        println!("cargo:rustc-link-search=native={}", real.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
