//! Links this package's binaries and tests against libtorch by rpath (see
//! host/build_support/link_libtorch.rs).

include!("../host/build_support/link_libtorch.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../host/build_support/link_libtorch.rs");
    link_libtorch();
}
