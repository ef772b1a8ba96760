//! Compiles the c10d shim against the headers of the libtorch that torch-sys
//! links (same include dirs and C++ ABI flag as torch-sys), with Gloo always
//! and NCCL where that libtorch has it; then adds the rpath to libtorch.
//!
//! NCCL is chosen by `LMMHOST_NCCL`: `0` leaves it out, `1` requires it (the
//! build fails with the reason if it cannot be compiled), unset compiles it
//! when libtorch has `libtorch_cuda.so` and the CUDA runtime and NCCL headers
//! are found. The reason either way reaches the crate as `LMMHOST_NCCL_BUILD`.

use std::env;
use std::path::{Path, PathBuf};

include!("../build_support/link_libtorch.rs");

const SHIM_FILES: [&str; 5] = [
    "csrc/c10d_shim.h",
    "csrc/c10d_shim_internal.h",
    "csrc/c10d_shim.cpp",
    "csrc/grad_hooks.cpp",
    "csrc/nccl_shim.cpp",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../build_support/link_libtorch.rs");
    println!("cargo:rerun-if-changed=csrc/third_party/gloo");
    for file in SHIM_FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    for var in [
        "LIBTORCH",
        "LIBTORCH_INCLUDE",
        "LIBTORCH_CXX11_ABI",
        "LMMHOST_NCCL",
        "LMMHOST_CUDA_INCLUDE",
        "NCCL_INCLUDE_DIR",
        "CUDA_HOME",
        "CUDA_PATH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo::rustc-check-cfg=cfg(lmmhost_nccl)");

    let lib_dir = PathBuf::from(
        env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not export the libtorch lib dir (DEP_TCH_LIBTORCH_LIB)"),
    );
    let include_root = env::var("LIBTORCH_INCLUDE")
        .or_else(|_| env::var("LIBTORCH"))
        .map(PathBuf::from)
        .unwrap_or_else(|_| lib_dir.join(".."));
    let torch_includes = vec![
        include_root.join("include"),
        include_root.join("include/torch/csrc/api/include"),
    ];
    let c10d = torch_includes[0].join("torch/csrc/distributed/c10d");
    if !c10d.join("ProcessGroupGloo.hpp").exists() {
        panic!(
            "{} has no torch/csrc/distributed/c10d/ProcessGroupGloo.hpp: this libtorch was \
             built without distributed support (USE_DISTRIBUTED=0); lmmhost-distributed needs \
             one with Gloo (every PyPI torch wheel for Linux has it)",
            torch_includes[0].display()
        );
    }
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());

    let mut gloo = base_build(&torch_includes, &abi);
    gloo.include("csrc/third_party/gloo")
        .define("USE_C10D_GLOO", None)
        .file("csrc/c10d_shim.cpp")
        .file("csrc/grad_hooks.cpp")
        .compile("lmmhost_c10d");

    match nccl_plan(&lib_dir, &include_root, &c10d) {
        Ok(cuda_includes) => {
            let mut nccl = base_build(&torch_includes, &abi);
            nccl.includes(&cuda_includes)
                .define("USE_C10D_NCCL", None)
                .file("csrc/nccl_shim.cpp")
                .compile("lmmhost_c10d_nccl");
            // torch-sys links torch_cuda; set_device lives in c10_cuda.
            println!("cargo:rustc-link-lib=c10_cuda");
            println!("cargo:rustc-cfg=lmmhost_nccl");
            let dirs: Vec<String> = cuda_includes
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            println!(
                "cargo:rustc-env=LMMHOST_NCCL_BUILD=compiled against the CUDA and NCCL headers in {}",
                dirs.join(", ")
            );
        }
        Err(reason) => {
            if env::var("LMMHOST_NCCL").as_deref() == Ok("1") {
                panic!("LMMHOST_NCCL=1 but NCCL cannot be compiled in: {reason}");
            }
            println!("cargo:rustc-env=LMMHOST_NCCL_BUILD={reason}");
        }
    }
    link_libtorch();
}

fn base_build(torch_includes: &[PathBuf], abi: &str) -> cc::Build {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .includes(torch_includes)
        .include("csrc")
        // libtorch is built as C++20; its headers warn under C++17.
        .std("c++20")
        .define("_GLIBCXX_USE_CXX11_ABI", abi)
        .define("GLOG_USE_GLOG_EXPORT", None)
        .flag_if_supported("-Wno-interference-size");
    build
}

/// The extra include dirs for the NCCL part, or why it is left out.
fn nccl_plan(lib_dir: &Path, include_root: &Path, c10d: &Path) -> Result<Vec<PathBuf>, String> {
    if env::var("LMMHOST_NCCL").as_deref() == Ok("0") {
        return Err("left out by LMMHOST_NCCL=0".to_owned());
    }
    if !lib_dir.join("libtorch_cuda.so").exists() {
        return Err(format!(
            "the libtorch in {} has no libtorch_cuda.so (a CPU build)",
            lib_dir.display()
        ));
    }
    if !c10d.join("ProcessGroupNCCL.hpp").exists() {
        return Err(format!("{} has no ProcessGroupNCCL.hpp", c10d.display()));
    }
    // Where pip puts CUDA and NCCL next to the torch package
    // (site-packages/nvidia/*/include), then the usual toolkit places.
    let mut candidates: Vec<PathBuf> = env::var("LMMHOST_CUDA_INCLUDE")
        .map(|v| env::split_paths(&v).collect())
        .unwrap_or_default();
    if let Ok(dir) = env::var("NCCL_INCLUDE_DIR") {
        candidates.push(PathBuf::from(dir));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(dir) = env::var(var) {
            candidates.push(Path::new(&dir).join("include"));
        }
    }
    if let Ok(entries) = std::fs::read_dir(include_root.join("../nvidia")) {
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("include"))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        candidates.extend(dirs);
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    candidates.push(PathBuf::from("/usr/include"));
    // CUDA 13 toolkits keep CCCL (nv/target) one level down.
    let cccl: Vec<PathBuf> = candidates.iter().map(|d| d.join("cccl")).collect();
    candidates.extend(cccl);

    let mut chosen: Vec<PathBuf> = Vec::new();
    for header in [
        "cuda_runtime_api.h",
        "crt/host_config.h",
        "nv/target",
        "nccl.h",
    ] {
        match candidates.iter().find(|dir| dir.join(header).exists()) {
            Some(dir) => {
                if !chosen.contains(dir) {
                    chosen.push(dir.clone());
                }
            }
            None => {
                return Err(format!(
                    "libtorch has CUDA but {header} was not found (looked in {}); set \
                     LMMHOST_CUDA_INCLUDE to the CUDA toolkit's include dir (or pip install \
                     nvidia-cuda-crt and nvidia-cuda-cccl of the CUDA version torch was built with)",
                    candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    Ok(chosen)
}
