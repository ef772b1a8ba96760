//! Schedule plugins: one instance; its state is saved with checkpoints.

use anyhow::{anyhow, Result};
use lmmhost_bundle::World;
use lmmhost_sdk as sdk;
use wasmtime::component::HasSelf;
use wasmtime::Store;

use crate::convert;
use crate::runtime::{Contract, PluginRuntime, PluginSpec};
use crate::sandbox::{call_with_budget, instantiated, new_store, State};
use crate::v0_1_0::schedule as s1;
use crate::v0_2_0::schedule as s2;

/// The bindings of the contract version the component was built against.
enum Bindings {
    V0_1(s1::SchedulePlugin),
    V0_2(s2::SchedulePlugin),
}

/// Evaluates `$body` with `$b` bound to the schedule interface of the
/// instance and `$c` to that version's conversions: the interface is the
/// same in every version, only the generated types differ.
macro_rules! per_version {
    ($bindings:expr, |$b:ident, $c:ident| $body:expr) => {
        match $bindings {
            Bindings::V0_1(x) => {
                let $b = x.lmmhost_plugin_schedule();
                #[allow(unused_imports)]
                use convert::worlds_v0_1 as $c;
                $body
            }
            Bindings::V0_2(x) => {
                let $b = x.lmmhost_plugin_schedule();
                #[allow(unused_imports)]
                use convert::worlds_v0_2 as $c;
                $body
            }
        }
    };
}

pub struct SchedulePlugin {
    spec: PluginSpec,
    store: Store<State>,
    bindings: Bindings,
    /// Set after a trap: the instance must not be called again.
    poisoned: bool,
}

impl SchedulePlugin {
    pub fn new(runtime: &PluginRuntime, spec: PluginSpec) -> Result<SchedulePlugin> {
        let name = spec.name.clone();
        let (component, _, contract) = runtime.prepare(&spec, World::Schedule)?;
        let mut store = new_store(&runtime.engine, &spec, &[])?;
        let bindings = match contract {
            Contract::V0_1 => Bindings::V0_1(instantiated(
                s1::SchedulePluginPre::new(runtime.instance_pre(&spec, &component, |l| {
                    s1::SchedulePlugin::add_to_linker::<State, HasSelf<State>>(l, |s| s)
                })?)?
                .instantiate(&mut store),
                &name,
            )?),
            Contract::V0_2 => Bindings::V0_2(instantiated(
                s2::SchedulePluginPre::new(runtime.instance_pre(&spec, &component, |l| {
                    s2::SchedulePlugin::add_to_linker::<State, HasSelf<State>>(l, |s| s)
                })?)?
                .instantiate(&mut store),
                &name,
            )?),
        };
        let mut plugin = SchedulePlugin {
            spec,
            store,
            bindings,
            poisoned: false,
        };
        let config = plugin.spec.config.clone();
        plugin
            .call("init", |b, s| {
                per_version!(b, |i, _c| i.call_init(s, &config))
            })?
            .map_err(|e| anyhow!("plugin {name}: init rejected the config: {e}"))?;
        Ok(plugin)
    }

    fn call<R>(
        &mut self,
        what: &str,
        f: impl FnOnce(&Bindings, &mut Store<State>) -> wasmtime::Result<R>,
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
        let r = self.call("next-plan", |b, st| {
            per_version!(b, |i, c| i
                .call_next_plan(st, &c::state_to(state))
                .map(|r| r.map(|p| p.map(c::plan_from))))
        })?;
        r.map_err(|e| {
            anyhow!(
                "plugin {name}: next-plan at step {}: {e}",
                state.global_step
            )
        })
    }

    pub fn save_state(&mut self) -> Result<Vec<u8>> {
        self.call("save-state", |b, s| {
            per_version!(b, |i, _c| i.call_save_state(s))
        })
    }

    pub fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let name = self.spec.name.clone();
        self.call("load-state", |b, s| {
            per_version!(b, |i, _c| i.call_load_state(s, bytes))
        })?
        .map_err(|e| anyhow!("plugin {name}: load-state refused the saved state: {e}"))
    }
}
