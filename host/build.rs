//! Links this package's binaries and tests against libtorch by rpath (see
//! host/build_support/link_libtorch.rs).

include!("build_support/link_libtorch.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build_support/link_libtorch.rs");
    link_libtorch();
}
