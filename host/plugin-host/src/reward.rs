//! Reward plugins: a pool of pre-instantiated instances; a batch is split
//! across them and scored on all cores, one boundary crossing per call of up
//! to `CALL_ITEMS` completions.

use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use lmmhost_bundle::{ComponentFacts, World};
use lmmhost_sdk as sdk;
use wasmtime::component::HasSelf;
use wasmtime::Store;

use crate::convert;
use crate::runtime::{OnError, PluginRuntime, PluginSpec};
use crate::sandbox::{call_with_budget, new_store, State};
use crate::v0_1_0::reward as rw;

type Completion<'a> = rw::lmmhost::plugin::types::Completion<'a>;

/// Completions per call into an instance (a batch is split across the pool,
/// then into calls of this size).
const CALL_ITEMS: usize = 256;

/// One scored item, or (with `on_error = "zero"`) why it could not be scored.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemOutcome {
    Scored(sdk::Score),
    /// The caller counts this item as zero.
    Failed {
        index: usize,
        error: String,
    },
}

struct Instance {
    store: Store<State>,
    bindings: rw::RewardPlugin,
}

pub struct RewardPlugin {
    spec: PluginSpec,
    facts: ComponentFacts,
    engine: wasmtime::Engine,
    pre: rw::RewardPluginPre<State>,
    pool: Vec<Mutex<Option<Instance>>>,
}

impl RewardPlugin {
    pub fn new(runtime: &PluginRuntime, spec: PluginSpec) -> Result<RewardPlugin> {
        let (component, facts) = runtime.prepare(&spec, World::Reward)?;
        let pre = rw::RewardPluginPre::new(runtime.instance_pre(&spec, &component, |l| {
            rw::RewardPlugin::add_to_linker::<State, HasSelf<State>>(l, |s| s)
        })?)?;
        let mut plugin = RewardPlugin {
            engine: runtime.engine.clone(),
            pre,
            facts,
            pool: Vec::new(),
            spec,
        };
        let n = plugin.spec.limits.instances.max(1);
        for _ in 0..n {
            let inst = plugin.instantiate()?;
            plugin.pool.push(Mutex::new(Some(inst)));
        }
        Ok(plugin)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn facts(&self) -> &ComponentFacts {
        &self.facts
    }

    fn instantiate(&self) -> Result<Instance> {
        let name = &self.spec.name;
        let mut store = new_store(&self.engine, &self.spec, &[])?;
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("plugin {name}: cannot instantiate"))?;
        let (timeout, mem) = (self.spec.limits.call_timeout, self.spec.limits.memory_bytes);
        let config = self.spec.config.clone();
        call_with_budget(&mut store, timeout, mem, |s| {
            bindings.lmmhost_plugin_reward().call_init(s, &config)
        })
        .map_err(|f| anyhow!("plugin {name}: init {}", f.message))?
        .map_err(|e| anyhow!("plugin {name}: init rejected the config: {e}"))?;
        Ok(Instance { store, bindings })
    }

    /// Scores `batch`, one result per completion, in order.
    ///
    /// With `on_error = "abort"` the first failing item is an error that names
    /// the plugin, the call, the item index and its sample id; with `"zero"`
    /// failing items come back as [`ItemOutcome::Failed`].
    pub fn score_batch(&self, batch: &[sdk::Completion]) -> Result<Vec<ItemOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let workers = self.pool.len().min(batch.len());
        let chunk = batch.len().div_ceil(workers);
        let mut results: Vec<Result<Vec<ItemOutcome>>> = Vec::new();
        std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .chunks(chunk)
                .zip(&self.pool)
                .enumerate()
                .map(|(k, (part, slot))| {
                    // Each worker builds borrowed views of its own chunk
                    // (no string copies); the lowering runs on all cores.
                    scope.spawn(move || {
                        use convert::reward_in as c;
                        // Calls of at most CALL_ITEMS completions: the values
                        // lowered into the instance, the guest's copies and
                        // the results stay in cache, where one call per
                        // chunk would stream the whole chunk through memory
                        // several times.
                        let mut out = Vec::with_capacity(part.len());
                        for (j, sub) in part.chunks(CALL_ITEMS).enumerate() {
                            let parts = c::parts(sub);
                            let messages = c::messages(sub, &parts);
                            let metadata = c::metadata(sub);
                            let items = c::completions(sub, &messages, &metadata);
                            let offset = k * chunk + j * CALL_ITEMS;
                            out.extend(self.score_chunk(slot, &items, offset, batch)?);
                        }
                        Ok(out)
                    })
                })
                .collect();
            results = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("a scoring thread panicked")))
                })
                .collect();
        });
        let mut out = Vec::with_capacity(batch.len());
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    fn score_chunk(
        &self,
        slot: &Mutex<Option<Instance>>,
        part: &[Completion<'_>],
        offset: usize,
        batch: &[sdk::Completion],
    ) -> Result<Vec<ItemOutcome>> {
        let mut guard = slot
            .lock()
            .map_err(|_| anyhow!("plugin {}: instance lock poisoned", self.spec.name))?;
        let (timeout, mem) = (self.spec.limits.call_timeout, self.spec.limits.memory_bytes);
        let mut inst = match guard.take() {
            Some(i) => i,
            None => self.instantiate()?,
        };
        let called = call_with_budget(&mut inst.store, timeout, mem, |s| {
            inst.bindings
                .lmmhost_plugin_reward()
                .call_score_batch(s, part)
        });
        match called {
            Ok(list) => {
                *guard = Some(inst);
                if list.len() != part.len() {
                    bail!(
                        "plugin {}: score-batch returned {} results for {} completions",
                        self.spec.name,
                        list.len(),
                        part.len()
                    );
                }
                list.into_iter()
                    .enumerate()
                    .map(|(i, r)| match r {
                        Ok(s) => Ok(ItemOutcome::Scored(convert::score_from(s))),
                        Err(e) => self.item_failure(offset + i, &batch[offset + i], &e),
                    })
                    .collect()
            }
            // The instance is poisoned: find the item(s) responsible by
            // scoring one at a time on fresh instances, so the error can name them.
            Err(_) => {
                drop(inst);
                let mut out = Vec::with_capacity(part.len());
                let mut inst = self.instantiate()?;
                for (i, item) in part.iter().enumerate() {
                    let one = std::slice::from_ref(item);
                    let r = call_with_budget(&mut inst.store, timeout, mem, |s| {
                        inst.bindings
                            .lmmhost_plugin_reward()
                            .call_score_batch(s, one)
                    });
                    match r {
                        Ok(mut list) if list.len() == 1 => match list.remove(0) {
                            Ok(s) => out.push(ItemOutcome::Scored(convert::score_from(s))),
                            Err(e) => {
                                out.push(self.item_failure(offset + i, &batch[offset + i], &e)?)
                            }
                        },
                        Ok(list) => bail!(
                            "plugin {}: score-batch returned {} results for 1",
                            self.spec.name,
                            list.len()
                        ),
                        Err(f) => {
                            out.push(self.item_failure(
                                offset + i,
                                &batch[offset + i],
                                &f.message,
                            )?);
                            inst = self.instantiate()?;
                        }
                    }
                }
                *guard = Some(inst);
                Ok(out)
            }
        }
    }

    fn item_failure(&self, index: usize, c: &sdk::Completion, error: &str) -> Result<ItemOutcome> {
        match self.spec.on_error {
            OnError::Abort => Err(anyhow!(
                "plugin {}: score-batch failed on item {index} (sample id {:?}): {error}",
                self.spec.name,
                c.sample.id
            )),
            OnError::Zero => Ok(ItemOutcome::Failed {
                index,
                error: error.to_string(),
            }),
        }
    }
}
