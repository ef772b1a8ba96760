//! Schedule plugins: one instance, whose state is saved with checkpoints;
//! after a failed call it is never called again.

use anyhow::{anyhow, Context, Result};
use lmmhost_bundle::World;
use lmmhost_sdk as sdk;
use wasmtime::Store;

use crate::contract::ScheduleInstance;
use crate::runtime::PluginRuntime;
use crate::sandbox::{call_with_budget, State};
use crate::spec::PluginSpec;

pub struct SchedulePlugin {
    spec: PluginSpec,
    store: Store<State>,
    bindings: Box<dyn ScheduleInstance>,
    /// Set after a trap: the instance must not be called again.
    poisoned: bool,
}

impl SchedulePlugin {
    pub fn new(runtime: &PluginRuntime, spec: PluginSpec) -> Result<SchedulePlugin> {
        let name = spec.name.clone();
        let (component, _, contract) = runtime.prepare(&spec, World::Schedule)?;
        let mut store = spec.new_store(&runtime.engine, &[])?;
        let bindings = contract
            .schedule(&runtime.engine, &component, &name)?
            .new_instance(&mut store)
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
            .call("init", |b, s| b.init(s, &config))?
            .map_err(|e| anyhow!("plugin {name}: init rejected the config: {e}"))?;
        Ok(plugin)
    }

    /// Calls the instance within its time budget; `what` names the call in errors.
    fn call<R>(
        &mut self,
        what: &str,
        f: impl FnOnce(&dyn ScheduleInstance, &mut Store<State>) -> wasmtime::Result<R>,
    ) -> Result<R> {
        let name = &self.spec.name;
        if self.poisoned {
            return Err(anyhow!("plugin {name}: unusable after an earlier failure"));
        }
        let bindings = self.bindings.as_ref();
        call_with_budget(&mut self.store, &self.spec.limits, |s| f(bindings, s)).map_err(|e| {
            self.poisoned = true;
            anyhow!("plugin {name}: {what} {}", e.message)
        })
    }

    /// The plan for the next step, or `None` when training is finished.
    pub fn next_plan(&mut self, state: &sdk::TrainState) -> Result<Option<sdk::Plan>> {
        let name = self.spec.name.clone();
        let r = self.call("next-plan", |b, s| b.next_plan(s, state))?;
        r.map_err(|e| {
            anyhow!(
                "plugin {name}: next-plan at step {}: {e}",
                state.global_step
            )
        })
    }

    pub fn save_state(&mut self) -> Result<Vec<u8>> {
        self.call("save-state", |b, s| b.save_state(s))
    }

    pub fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let name = self.spec.name.clone();
        self.call("load-state", |b, s| b.load_state(s, bytes))?
            .map_err(|e| anyhow!("plugin {name}: load-state refused the saved state: {e}"))
    }
}
