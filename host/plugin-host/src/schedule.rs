//! Schedule plugins: one instance; its state is saved with checkpoints.

use anyhow::{anyhow, Context, Result};
use lmmhost_bundle::World;
use lmmhost_sdk as sdk;
use wasmtime::component::HasSelf;
use wasmtime::Store;

use crate::convert;
use crate::runtime::{PluginRuntime, PluginSpec};
use crate::sandbox::{call_with_budget, new_store, State};
use crate::v0_1_0::schedule as sw;

pub struct SchedulePlugin {
    spec: PluginSpec,
    store: Store<State>,
    bindings: sw::SchedulePlugin,
    /// Set after a trap: the instance must not be called again.
    poisoned: bool,
}

impl SchedulePlugin {
    pub fn new(runtime: &PluginRuntime, spec: PluginSpec) -> Result<SchedulePlugin> {
        let name = spec.name.clone();
        let (component, _) = runtime.prepare(&spec, World::Schedule)?;
        let pre = sw::SchedulePluginPre::new(runtime.instance_pre(&spec, &component, |l| {
            sw::SchedulePlugin::add_to_linker::<State, HasSelf<State>>(l, |s| s)
        })?)?;
        let mut store = new_store(&runtime.engine, &spec, &[])?;
        let bindings = pre
            .instantiate(&mut store)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("plugin {name}: cannot instantiate"))?;
        let mut plugin = SchedulePlugin {
            spec,
            store,
            bindings,
            poisoned: false,
        };
        let config = plugin.spec.config.clone();
        plugin
            .call("init", |b, s| {
                b.lmmhost_plugin_schedule().call_init(s, &config)
            })?
            .map_err(|e| anyhow!("plugin {name}: init rejected the config: {e}"))?;
        Ok(plugin)
    }

    fn call<R>(
        &mut self,
        what: &str,
        f: impl FnOnce(&sw::SchedulePlugin, &mut Store<State>) -> wasmtime::Result<R>,
    ) -> Result<R> {
        let name = &self.spec.name;
        if self.poisoned {
            return Err(anyhow!("plugin {name}: unusable after an earlier failure"));
        }
        let (timeout, mem) = (self.spec.limits.call_timeout, self.spec.limits.memory_bytes);
        let bindings = &self.bindings;
        call_with_budget(&mut self.store, timeout, mem, |s| f(bindings, s)).map_err(|e| {
            self.poisoned = true;
            anyhow!("plugin {name}: {what} {}", e.message)
        })
    }

    /// The plan for the next step, or `None` when training is finished.
    pub fn next_plan(&mut self, state: &sdk::TrainState) -> Result<Option<sdk::Plan>> {
        let name = self.spec.name.clone();
        let s = convert::state_to(state);
        let r = self.call("next-plan", |b, st| {
            b.lmmhost_plugin_schedule().call_next_plan(st, &s)
        })?;
        r.map(|p| p.map(convert::plan_from)).map_err(|e| {
            anyhow!(
                "plugin {name}: next-plan at step {}: {e}",
                state.global_step
            )
        })
    }

    pub fn save_state(&mut self) -> Result<Vec<u8>> {
        self.call("save-state", |b, s| {
            b.lmmhost_plugin_schedule().call_save_state(s)
        })
    }

    pub fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let name = self.spec.name.clone();
        self.call("load-state", |b, s| {
            b.lmmhost_plugin_schedule().call_load_state(s, bytes)
        })?
        .map_err(|e| anyhow!("plugin {name}: load-state refused the saved state: {e}"))
    }
}
