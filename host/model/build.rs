//! Links the test binaries of this crate against libtorch so that they run
//! without LD_LIBRARY_PATH: torch-sys (`links = "tch"`) exports the libtorch
//! lib dir as DEP_TCH_LIBTORCH_LIB to crates that depend on it directly.
//! `cargo:rustc-link-arg` only reaches this package's own binaries, tests,
//! examples and benches, so every package whose binaries link tch needs the
//! same few lines (host/build.rs does it for `lmmhost`).

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    // rustc links with --as-needed and nothing references a libtorch_cuda
    // symbol directly: without --no-as-needed the library is dropped from
    // DT_NEEDED, the CUDA backend never registers and `Cuda::is_available()`
    // is false even on a GPU machine.
    if Path::new(&lib_dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
