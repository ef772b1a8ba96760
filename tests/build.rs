//! Test binaries that link tch (through lmmhost-model) find libtorch at run
//! time through an rpath, as in host/model/build.rs: torch-sys exports its lib
//! dir only to direct dependents' build scripts, and `cargo:rustc-link-arg`
//! only reaches this package's own targets.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    // Keep libtorch_cuda in DT_NEEDED on GPU machines (see host/model/build.rs).
    if Path::new(&lib_dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
