//! Build script shared by every package that links libtorch (set with `build = "../build/rpath.rs"`).
//!
//! torch-sys (`links = "tch"`) exports the libtorch lib folder it compiled against as
//! `DEP_TCH_LIBTORCH_LIB`. Embedding it as an rpath lets `fidshard` and the test binaries run
//! without LD_LIBRARY_PATH. On a GPU machine with torch installed elsewhere, LD_LIBRARY_PATH
//! still takes precedence over this RUNPATH.
#[allow(dead_code)]
pub fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
