// Shared by the build scripts of every package whose binaries or tests link
// tch (host/build.rs, host/model/build.rs, tests/build.rs), through `include!`.
//
// torch-sys (`links = "tch"`) exports the libtorch lib dir as
// DEP_TCH_LIBTORCH_LIB to the build scripts of crates that depend on it
// directly, and `cargo:rustc-link-arg` only reaches the package's own targets:
// so each such package emits the rpath itself, and binaries find libtorch at
// run time without LD_LIBRARY_PATH.

fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    // rustc links with --as-needed and nothing references a libtorch_cuda
    // symbol directly: without --no-as-needed the library is dropped from
    // DT_NEEDED, the CUDA backend never registers and `Cuda::is_available()`
    // is false even on a GPU machine.
    if std::path::Path::new(&lib_dir)
        .join("libtorch_cuda.so")
        .exists()
    {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
