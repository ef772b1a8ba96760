//! Loader plugins: one instance holding an opened dataset, random access by index.

use std::sync::Mutex;

use anyhow::{anyhow, Result};
use lmmhost_bundle::World;
use lmmhost_sdk as sdk;
use wasmtime::component::HasSelf;
use wasmtime::Store;

use crate::convert;
use crate::runtime::{Contract, PluginRuntime, PluginSpec};
use crate::sandbox::{call_with_budget, instantiated, new_store, Grants, State};
use crate::v0_1_0::loader as l1;
use crate::v0_2_0::loader as l2;

/// The bindings of the contract version the component was built against.
enum Pre {
    V0_1(l1::LoaderPluginPre<State>),
    V0_2(l2::LoaderPluginPre<State>),
}

enum Bindings {
    V0_1(l1::LoaderPlugin),
    V0_2(l2::LoaderPlugin),
}

/// Evaluates `$body` with `$b` bound to the instance's bindings and `$c` /
/// `$s` to that version's conversions: the loader interface is the same in
/// every version, only the generated types differ.
macro_rules! per_version {
    ($bindings:expr, |$b:ident, $c:ident, $s:ident| $body:expr) => {
        match $bindings {
            Bindings::V0_1($b) => {
                #[allow(unused_imports)]
                use convert::{loader_v0_1 as $s, worlds_v0_1 as $c};
                $body
            }
            Bindings::V0_2($b) => {
                #[allow(unused_imports)]
                use convert::{loader_v0_2 as $s, worlds_v0_2 as $c};
                $body
            }
        }
    };
}

struct Instance {
    store: Store<State>,
    bindings: Bindings,
}

pub struct LoaderPlugin {
    spec: PluginSpec,
    engine: wasmtime::Engine,
    pre: Pre,
    grants: Grants,
    info: sdk::DatasetInfo,
    inst: Mutex<Option<Instance>>,
}

impl LoaderPlugin {
    /// Instantiates the loader and opens the dataset on the granted files.
    pub fn new(runtime: &PluginRuntime, spec: PluginSpec) -> Result<LoaderPlugin> {
        let (component, _, contract) = runtime.prepare(&spec, World::Loader)?;
        let pre = match contract {
            Contract::V0_1 => Pre::V0_1(l1::LoaderPluginPre::new(runtime.instance_pre(
                &spec,
                &component,
                |l| l1::LoaderPlugin::add_to_linker::<State, HasSelf<State>>(l, |s| s),
            )?)?),
            Contract::V0_2 => Pre::V0_2(l2::LoaderPluginPre::new(runtime.instance_pre(
                &spec,
                &component,
                |l| l2::LoaderPlugin::add_to_linker::<State, HasSelf<State>>(l, |s| s),
            )?)?),
        };
        let grants = Grants::prepare(&spec.name, &spec.grants)?;
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

    pub fn name(&self) -> &str {
        &self.spec.name
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

    /// The paths the plugin was given in `open` (as it sees them).
    pub fn granted_paths(&self) -> &[String] {
        &self.grants.guest_paths
    }

    fn open(&self) -> Result<(Instance, sdk::DatasetInfo)> {
        let name = &self.spec.name;
        let mut store = new_store(&self.engine, &self.spec, &self.grants.preopens)?;
        let bindings = match &self.pre {
            Pre::V0_1(p) => Bindings::V0_1(instantiated(p.instantiate(&mut store), name)?),
            Pre::V0_2(p) => Bindings::V0_2(instantiated(p.instantiate(&mut store), name)?),
        };
        let (timeout, mem) = (self.spec.limits.call_timeout, self.spec.limits.memory_bytes);
        let (config, files) = (&self.spec.config, &self.grants.guest_paths);
        let info = per_version!(&bindings, |b, c, _s| {
            call_with_budget(&mut store, timeout, mem, |s| {
                b.lmmhost_plugin_loader().call_open(s, config, files)
            })
            .map_err(|f| anyhow!("plugin {name}: open {}", f.message))?
            .map(c::info_from)
        })
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
        let (timeout, mem) = (self.spec.limits.call_timeout, self.spec.limits.memory_bytes);
        let store = &mut inst.store;
        let r = per_version!(&inst.bindings, |b, _c, samples| {
            call_with_budget(store, timeout, mem, |s| {
                b.lmmhost_plugin_loader().call_get_many(s, indices)
            })
            .map(|list| {
                list.into_iter()
                    .map(|r| r.map(samples::sample_from))
                    .collect::<Vec<_>>()
            })
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
        list.into_iter()
            .zip(indices)
            .map(|(r, i)| r.map_err(|e| anyhow!("plugin {name}: sample {i}: {e}")))
            .collect()
    }
}
