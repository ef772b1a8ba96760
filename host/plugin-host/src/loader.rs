//! Loader plugins: one instance holding an opened dataset, random access by
//! index; an instance that fails a call is dropped and the dataset reopened.

use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use lmmhost_bundle::World;
use lmmhost_sdk as sdk;
use wasmtime::Store;

use crate::contract::{LoaderInstance, Pre};
use crate::runtime::PluginRuntime;
use crate::sandbox::{call_with_budget, Grants, State};
use crate::spec::PluginSpec;

struct Instance {
    store: Store<State>,
    bindings: Box<dyn LoaderInstance>,
}

pub struct LoaderPlugin {
    spec: PluginSpec,
    engine: wasmtime::Engine,
    pre: Box<dyn Pre<dyn LoaderInstance>>,
    grants: Grants,
    info: sdk::DatasetInfo,
    inst: Mutex<Option<Instance>>,
}

impl LoaderPlugin {
    /// Instantiates the loader and opens the dataset on the granted files;
    /// the image roots are granted too and named in the config's `image_roots`.
    pub fn new(runtime: &PluginRuntime, mut spec: PluginSpec) -> Result<LoaderPlugin> {
        let (component, _, contract) = runtime.prepare(&spec, World::Loader)?;
        let pre = contract.loader(&runtime.engine, &component, &spec.name)?;
        let grants = Grants::prepare(&spec.name, &spec.grants, &spec.image_roots)?;
        if !grants.guest_roots.is_empty() {
            spec.config = with_image_roots(&spec.name, &spec.config, &grants.guest_roots)?;
        }
        let mut plugin = LoaderPlugin {
            engine: runtime.engine.clone(),
            pre,
            grants,
            info: sdk::DatasetInfo {
                len: 0,
                skipped_rows: 0,
                notes: Vec::new(),
            },
            inst: Mutex::new(None),
            spec,
        };
        let (inst, info) = plugin.open()?;
        plugin.info = info;
        plugin.inst = Mutex::new(Some(inst));
        Ok(plugin)
    }

    pub fn info(&self) -> &sdk::DatasetInfo {
        &self.info
    }

    pub fn len(&self) -> u64 {
        self.info.len
    }

    pub fn is_empty(&self) -> bool {
        self.info.len == 0
    }

    fn open(&self) -> Result<(Instance, sdk::DatasetInfo)> {
        let name = &self.spec.name;
        let mut store = self.spec.new_store(&self.engine, &self.grants.preopens)?;
        let bindings = self
            .pre
            .new_instance(&mut store)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("plugin {name}: cannot instantiate"))?;
        let (config, files) = (&self.spec.config, &self.grants.guest_paths);
        let info = call_with_budget(&mut store, &self.spec.limits, |s| {
            bindings.open(s, config, files)
        })
        .map_err(|f| anyhow!("plugin {name}: open {}", f.message))?
        .map_err(|e| anyhow!("plugin {name}: open failed: {e}"))?;
        Ok((Instance { store, bindings }, info))
    }

    /// Sample `index`.
    pub fn get(&self, index: u64) -> Result<sdk::Sample> {
        let mut v = self.get_many(&[index])?;
        v.pop()
            .ok_or_else(|| anyhow!("plugin {}: get({index}) returned nothing", self.spec.name))
    }

    /// Several samples in one call; the first failing index is an error naming it.
    pub fn get_many(&self, indices: &[u64]) -> Result<Vec<sdk::Sample>> {
        let name = &self.spec.name;
        self.get_each(indices)?
            .into_iter()
            .zip(indices)
            .map(|(r, i)| r.map_err(|e| anyhow!("plugin {name}: sample {i}: {e}")))
            .collect()
    }

    /// Several samples in one call, each its own result (a bad row is the
    /// loader's error for that index); the call itself failing (a trap, the
    /// time budget) is the outer error.
    pub fn get_each(&self, indices: &[u64]) -> Result<Vec<Result<sdk::Sample, String>>> {
        let name = &self.spec.name;
        if let Some(bad) = indices.iter().find(|&&i| i >= self.info.len) {
            return Err(anyhow!(
                "plugin {name}: index {bad} is out of range (dataset has {} samples)",
                self.info.len
            ));
        }
        let mut guard = self
            .inst
            .lock()
            .map_err(|_| anyhow!("plugin {name}: instance lock poisoned"))?;
        let mut inst = match guard.take() {
            Some(i) => i,
            None => self.open()?.0,
        };
        let bindings = &inst.bindings;
        let r = call_with_budget(&mut inst.store, &self.spec.limits, |s| {
            bindings.get_many(s, indices)
        });
        let list = match r {
            Ok(list) => {
                *guard = Some(inst);
                list
            }
            // The instance is dropped; the next call reopens the dataset.
            Err(f) => {
                return Err(anyhow!(
                    "plugin {name}: get-many({indices:?}) {}",
                    f.message
                ))
            }
        };
        if list.len() != indices.len() {
            return Err(anyhow!(
                "plugin {name}: get-many returned {} samples for {} indices",
                list.len(),
                indices.len()
            ));
        }
        Ok(list)
    }
}

/// `config` with `image_roots` set to the granted roots. A config that names
/// roots itself is refused: only roots the host grants are visible.
fn with_image_roots(plugin: &str, config: &str, roots: &[String]) -> Result<String> {
    let mut table: toml::Table = config
        .parse()
        .with_context(|| format!("plugin {plugin}: the config is not TOML"))?;
    if table.contains_key("image_roots") {
        bail!(
            "plugin {plugin}: the config sets image_roots and the host grants image roots too; \
             name them once, as the host's image roots (the dataset's `images`)"
        );
    }
    let list = roots.iter().cloned().map(toml::Value::String).collect();
    table.insert("image_roots".into(), toml::Value::Array(list));
    toml::to_string(&table).with_context(|| format!("plugin {plugin}: config with image_roots"))
}
