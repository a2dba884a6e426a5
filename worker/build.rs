//! Worker build script: the shared rpath step (see ../build/rpath.rs) plus the small C++ shim in
//! csrc/precision.cpp, compiled against the same libtorch headers that torch-sys used.
use std::path::PathBuf;

#[path = "../build/rpath.rs"]
mod rpath;

fn main() {
    rpath::main();
    println!("cargo:rerun-if-changed=csrc/precision.cpp");
    println!("cargo:rerun-if-env-changed=FIDSHARD_CXX11_ABI");
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not export its libtorch lib dir (DEP_TCH_LIBTORCH_LIB)"),
    );
    let include = lib
        .parent()
        .expect("libtorch lib dir has a parent")
        .join("include");
    // PyTorch wheels since 2.7 use the C++11 ABI; the shim's functions pass no std types anyway.
    let abi = std::env::var("FIDSHARD_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        // No -g: the debug info of the libtorch headers it includes was most of its compile time.
        .debug(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .file("csrc/precision.cpp")
        .compile("fidshard_precision");
}
