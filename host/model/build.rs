//! Compiles the device-memory shim (csrc/device_memory.cpp) against the
//! headers of the libtorch torch-sys links, then links this package's
//! binaries and tests against libtorch by rpath (see
//! host/build_support/link_libtorch.rs).

include!("../build_support/link_libtorch.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../build_support/link_libtorch.rs");
    println!("cargo:rerun-if-changed=csrc/device_memory.cpp");
    for var in ["LIBTORCH", "LIBTORCH_INCLUDE", "LIBTORCH_CXX11_ABI"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let lib_dir = std::path::PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not export the libtorch lib dir (DEP_TCH_LIBTORCH_LIB)"),
    );
    let include_root = std::env::var("LIBTORCH_INCLUDE")
        .or_else(|_| std::env::var("LIBTORCH"))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| lib_dir.join(".."));
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(include_root.join("include"))
        // libtorch is built as C++20; its headers warn under C++17.
        .std("c++20")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .file("csrc/device_memory.cpp")
        .compile("lmmhost_device_memory");
    println!("cargo:rustc-link-lib=c10");
    link_libtorch();
}
