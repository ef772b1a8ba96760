//! Shared helpers for the end-to-end tests.

use std::path::PathBuf;

/// The repository root (tests run from a fresh clone: no absolute paths).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the built plugin components are: `$LMMHOST_PLUGIN_DIR` or `target/plugins/`.
pub fn plugin_dir() -> PathBuf {
    std::env::var_os("LMMHOST_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/plugins"))
}

/// The component `<name>.wasm`; panics with the command that builds it.
pub fn plugin_wasm(name: &str) -> PathBuf {
    let p = plugin_dir().join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: run scripts/build-plugins.sh first",
        p.display()
    );
    p
}
