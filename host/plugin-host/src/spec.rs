//! Everything needed to start a plugin: its bytes, its config and how it is sandboxed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use wasmtime::{Engine, Store};

use crate::log::{stderr_sink, LogSink};
use crate::sandbox::{new_store, Limits, OnError, State};

#[derive(Clone)]
pub struct PluginSpec {
    /// Shown in every error and log line.
    pub name: String,
    /// The component's bytes (from a .wasm file or a verified bundle).
    pub bytes: Arc<Vec<u8>>,
    /// The plugin's TOML table, as TOML text.
    pub config: String,
    pub limits: Limits,
    pub on_error: OnError,
    /// Seeds the plugin's only source of randomness.
    pub seed: u64,
    /// Read-only files and directories (loaders), as host paths: the data
    /// the loader is opened on.
    pub grants: Vec<PathBuf>,
    /// Read-only image folders (loaders), granted apart from the data: the
    /// loader is not opened on them but told about them in its config's
    /// `image_roots` (canonical absolute paths).
    pub image_roots: Vec<PathBuf>,
    pub log: LogSink,
}

impl PluginSpec {
    /// A spec for the component file at `path`, with default limits.
    pub fn from_file(name: &str, path: &Path, config: &str) -> Result<PluginSpec> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("plugin {name}: cannot read {}", path.display()))?;
        Ok(PluginSpec {
            name: name.to_string(),
            bytes: Arc::new(bytes),
            config: config.to_string(),
            limits: Limits::default(),
            on_error: OnError::Abort,
            seed: 0,
            grants: Vec::new(),
            image_roots: Vec::new(),
            log: stderr_sink(),
        })
    }

    /// A fresh sandboxed store for one instance of this plugin.
    pub(crate) fn new_store(
        &self,
        engine: &Engine,
        preopens: &[(PathBuf, String)],
    ) -> Result<Store<State>> {
        new_store(
            engine,
            &self.name,
            self.seed,
            &self.limits,
            &self.log,
            preopens,
        )
    }
}
