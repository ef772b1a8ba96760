//! Component inspection, WIT version compatibility and signed plugin bundles (`.lmmb`).
//!
//! This crate never instantiates WebAssembly: it reads component binaries with `wasmparser`,
//! so the CLI, the trainer and the plugin host can all afford to call it.

mod bundle;
pub mod container;
mod inspect;
pub mod keys;
mod manifest;
mod version;

pub use bundle::{
    open_bundle, open_bundle_bytes, open_verified, pack_dir, sign_manifest, verify_bundle_bytes,
    BundledComponent, OpenedBundle, SignatureRecord, Signer, TrustPolicy, VerifiedBundle,
};
pub use inspect::{inspect_component, sha256_hex, ComponentFacts, World};
pub use manifest::{Manifest, ManifestComponent, FORMAT_VERSION};
pub use version::{
    check_host_serves, check_served_by, check_version_compatible, check_wit_compatible,
    host_speaks, WitVersion,
};

/// The WIT package every plugin is built against.
pub const HOST_WIT_PACKAGE: &str = "lmmhost:plugin";
/// The newest version of `HOST_WIT_PACKAGE` this host implements: the one
/// the SDK and the core plugins are built against.
pub const HOST_WIT_VERSION: &str = "0.2.0";
/// Every version this host implements, oldest first (one thin host per
/// version in the plugin host, so plugins built against 0.1.x keep loading).
pub const HOST_WIT_VERSIONS: &[&str] = &["0.1.0", "0.2.0"];
