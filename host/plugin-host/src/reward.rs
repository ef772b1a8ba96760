//! Reward plugins: a pool of pre-instantiated instances; a batch of groups
//! is split across them and scored on all cores, one boundary crossing per
//! call of up to `CALL_ITEMS` completions. A call that traps is re-scored
//! piece by piece on fresh instances to find the items at fault.

use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use lmmhost_bundle::{ComponentFacts, World};
use lmmhost_sdk as sdk;
use wasmtime::Store;

use crate::contract::{Pre, RewardInstance};
use crate::runtime::PluginRuntime;
use crate::sandbox::{call_with_budget, CallFailure, OnError, State};
use crate::spec::PluginSpec;

/// Completions per call into an instance (a batch is split across the pool,
/// then into calls of whole groups up to this size): the values lowered into
/// the instance, the guest's copies and the results stay in cache, where one
/// call per share would stream the whole share through memory several times.
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
    bindings: Box<dyn RewardInstance>,
}

pub struct RewardPlugin {
    spec: PluginSpec,
    facts: ComponentFacts,
    engine: wasmtime::Engine,
    pre: Box<dyn Pre<dyn RewardInstance>>,
    pool: Vec<Mutex<Option<Instance>>>,
}

impl RewardPlugin {
    pub fn new(runtime: &PluginRuntime, spec: PluginSpec) -> Result<RewardPlugin> {
        let (component, facts, contract) = runtime.prepare(&spec, World::Reward)?;
        let pre = contract.reward(&runtime.engine, &component, &spec.name)?;
        let mut plugin = RewardPlugin {
            engine: runtime.engine.clone(),
            pre,
            facts,
            pool: Vec::new(),
            spec,
        };
        for _ in 0..plugin.spec.limits.instances() {
            let inst = plugin.instantiate()?;
            plugin.pool.push(Mutex::new(Some(inst)));
        }
        Ok(plugin)
    }

    pub fn facts(&self) -> &ComponentFacts {
        &self.facts
    }

    fn instantiate(&self) -> Result<Instance> {
        let name = &self.spec.name;
        let mut store = self.spec.new_store(&self.engine, &[])?;
        let bindings = self
            .pre
            .new_instance(&mut store)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("plugin {name}: cannot instantiate"))?;
        let config = self.spec.config.as_str();
        call_with_budget(&mut store, &self.spec.limits, |s| bindings.init(s, config))
            .map_err(|f| anyhow!("plugin {name}: init {}", f.message))?
            .map_err(|e| anyhow!("plugin {name}: init rejected the config: {e}"))?;
        Ok(Instance { store, bindings })
    }

    /// Scores `batch`, one result per completion, in order. Consecutive
    /// completions of the same sample cross as one group; the trainer, which
    /// has its groups already, calls [`RewardPlugin::score_groups`].
    pub fn score_batch(&self, batch: &[sdk::Completion]) -> Result<Vec<ItemOutcome>> {
        let table = self.score_groups(&sdk::Group::from_completions(batch))?;
        Ok((0..table.len())
            .map(|i| match table.item(i) {
                Ok(s) => ItemOutcome::Scored(s),
                Err(error) => ItemOutcome::Failed { index: i, error },
            })
            .collect())
    }

    /// Scores every response of every group: item `k` of the table is the
    /// `k`-th response counting through the groups in order.
    ///
    /// With `on_error = "abort"` the first failing item is an error that names
    /// the plugin, the call, the item index, its sample id and its place in
    /// the group; with `"zero"` failing items are listed in the table's
    /// `failures` (total 0, no components).
    pub fn score_groups(&self, groups: &[sdk::Group]) -> Result<sdk::ScoreTable> {
        for (g, group) in groups.iter().enumerate() {
            group.validate().map_err(|e| {
                anyhow!(
                    "plugin {}: group {g} (sample id {:?}): {e}",
                    self.spec.name,
                    group.sample.id
                )
            })?;
        }
        let items: usize = groups.iter().map(sdk::Group::len).sum();
        if items == 0 {
            return Ok(sdk::ScoreTable::default());
        }
        // Each worker takes a run of whole groups of about an equal number of
        // completions, then calls its instance on runs of up to CALL_ITEMS.
        let shares = split_for_workers(groups, items, self.pool.len());
        let mut results: Vec<Result<sdk::ScoreTable>> = Vec::new();
        std::thread::scope(|scope| {
            let handles: Vec<_> = shares
                .iter()
                .zip(&self.pool)
                .map(|(share, slot)| {
                    scope.spawn(move || {
                        let mut out = sdk::ScoreTable::default();
                        let mut first = share.first_item;
                        for call in split_by_items(&groups[share.groups.clone()], CALL_ITEMS) {
                            let part = &groups[share.groups.start..][call.groups];
                            out.append(self.score_call(slot, part, first)?);
                            first += call.items;
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
        let mut table = sdk::ScoreTable::default();
        for r in results {
            table.append(r?);
        }
        Ok(table)
    }

    /// One call on `slot`'s instance; `first` is the batch index of the
    /// call's first item (for error messages).
    fn score_call(
        &self,
        slot: &Mutex<Option<Instance>>,
        part: &[sdk::Group],
        first: usize,
    ) -> Result<sdk::ScoreTable> {
        let mut guard = slot
            .lock()
            .map_err(|_| anyhow!("plugin {}: instance lock poisoned", self.spec.name))?;
        let mut inst = match guard.take() {
            Some(i) => i,
            None => self.instantiate()?,
        };
        let (table, inst) = match self.call(&mut inst, part)? {
            Ok(table) => (table, inst),
            // The instance is poisoned: find the item(s) responsible on fresh
            // instances, so that the error can name them.
            Err(_) => {
                drop(inst);
                self.isolate_failures(part)?
            }
        };
        let call = inst.bindings.score_call();
        *guard = Some(inst);
        if let Some((i, e)) = table.failures.first() {
            if self.spec.on_error == OnError::Abort {
                return Err(self.item_error(call, part, first, *i as usize, e));
            }
        }
        Ok(table)
    }

    /// Rescores `part` group by group, and a group that traps response by
    /// response, each on a fresh instance after a trap; a response that traps
    /// alone is a failed item.
    fn isolate_failures(&self, part: &[sdk::Group]) -> Result<(sdk::ScoreTable, Instance)> {
        let mut table = sdk::ScoreTable::default();
        let mut inst = self.instantiate()?;
        for group in part {
            match self.call(&mut inst, std::slice::from_ref(group))? {
                Ok(t) => table.append(t),
                Err(_) => {
                    inst = self.instantiate()?;
                    for i in 0..group.len() {
                        let mut one = sdk::Group::new(group.sample.clone());
                        one.push(group.response(i).unwrap_or_default(), group.tokens(i));
                        match self.call(&mut inst, std::slice::from_ref(&one))? {
                            Ok(t) => table.append(t),
                            Err(f) => {
                                let mut t = sdk::ScoreTable::default();
                                t.push(Err(f.message));
                                table.append(t);
                                inst = self.instantiate()?;
                            }
                        }
                    }
                }
            }
        }
        Ok((table, inst))
    }

    /// Calls the instance on `part` within the time budget. The outer error
    /// is a broken contract (a result that does not fit the call); the inner
    /// one a trap, timeout or memory exhaustion, after which the instance
    /// must be dropped.
    fn call(
        &self,
        inst: &mut Instance,
        part: &[sdk::Group],
    ) -> Result<Result<sdk::ScoreTable, CallFailure>> {
        let bindings = &inst.bindings;
        match call_with_budget(&mut inst.store, &self.spec.limits, |s| {
            bindings.score(s, part)
        }) {
            Ok(Ok(table)) => Ok(Ok(table)),
            Ok(Err(broken)) => Err(anyhow!("plugin {}: {broken}", self.spec.name)),
            Err(f) => Ok(Err(f)),
        }
    }

    /// The error for item `i` of a call (the export `call`) on `part` whose
    /// first item is `first` in the batch.
    fn item_error(
        &self,
        call: &str,
        part: &[sdk::Group],
        first: usize,
        i: usize,
        error: &str,
    ) -> anyhow::Error {
        let (mut g, mut k) = (0, i);
        while g < part.len() && k >= part[g].len() {
            k -= part[g].len();
            g += 1;
        }
        let id = part.get(g).map_or("", |g| g.sample.id.as_str());
        anyhow!(
            "plugin {}: {call} failed on item {} (sample id {id:?}, response {k} of its group): {error}",
            self.spec.name,
            first + i
        )
    }
}

/// A run of whole groups and the items it holds.
struct Share {
    groups: std::ops::Range<usize>,
    items: usize,
    /// Batch index of the run's first item, counted from the slice given.
    first_item: usize,
}

/// Cuts `groups` (`items` in all) into at most `workers` runs of whole
/// groups with about equal numbers of items.
fn split_for_workers(groups: &[sdk::Group], items: usize, workers: usize) -> Vec<Share> {
    let workers = workers.max(1);
    let mut out = Vec::new();
    let (mut start, mut done, mut first) = (0, 0, 0);
    for (g, group) in groups.iter().enumerate() {
        done += group.len();
        // Close run k once it reaches its share of the items: the cut points
        // are fixed fractions of the batch, so there are at most `workers`.
        if out.len() + 1 < workers && done * workers >= (out.len() + 1) * items {
            out.push(Share {
                groups: start..g + 1,
                items: done - first,
                first_item: first,
            });
            (start, first) = (g + 1, done);
        }
    }
    if start < groups.len() {
        out.push(Share {
            groups: start..groups.len(),
            items: done - first,
            first_item: first,
        });
    }
    out
}

/// Cuts `groups` into runs of whole groups of about `per` items each (a
/// group larger than `per` is a run of its own).
fn split_by_items(groups: &[sdk::Group], per: usize) -> Vec<Share> {
    let mut out = Vec::new();
    let (mut start, mut items, mut first) = (0, 0, 0);
    for (g, group) in groups.iter().enumerate() {
        if items > 0 && items + group.len() > per {
            out.push(Share {
                groups: start..g,
                items,
                first_item: first,
            });
            first += items;
            (start, items) = (g, 0);
        }
        items += group.len();
    }
    if items > 0 || start < groups.len() {
        out.push(Share {
            groups: start..groups.len(),
            items,
            first_item: first,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(sizes: &[usize]) -> Vec<sdk::Group> {
        sizes
            .iter()
            .map(|&n| {
                let mut g = sdk::Group::default();
                (0..n).for_each(|i| g.push(&format!("r{i}"), 1));
                g
            })
            .collect()
    }

    #[test]
    fn splits_keep_groups_whole_and_cover_everything() {
        let gs = groups(&[8, 8, 8, 3, 20, 1]);
        for per in [1, 5, 8, 16, 24, 100] {
            let shares = split_by_items(&gs, per);
            let mut next = 0;
            let mut first = 0;
            for s in &shares {
                assert_eq!(s.groups.start, next, "per {per}: runs are contiguous");
                assert!(!s.groups.is_empty());
                let items: usize = gs[s.groups.clone()].iter().map(sdk::Group::len).sum();
                assert_eq!(s.items, items);
                assert_eq!(s.first_item, first);
                assert!(
                    items <= per || s.groups.len() == 1,
                    "per {per}: {items} items"
                );
                next = s.groups.end;
                first += items;
            }
            assert_eq!(next, gs.len());
        }
        assert_eq!(split_by_items(&gs, 16).len(), 4, "8+8 | 8+3 | 20 | 1");
    }

    #[test]
    fn worker_shares_never_outnumber_the_workers() {
        for sizes in [&[3, 3, 3][..], &[8; 16], &[1, 30, 1], &[5], &[0, 4, 0, 4]] {
            let gs = groups(sizes);
            let items: usize = sizes.iter().sum();
            for workers in 1..6 {
                let shares = split_for_workers(&gs, items, workers);
                assert!(shares.len() <= workers, "{sizes:?} on {workers}");
                assert_eq!(shares.iter().map(|s| s.items).sum::<usize>(), items);
                let mut next = 0;
                for s in &shares {
                    assert_eq!(s.groups.start, next);
                    next = s.groups.end;
                }
                assert_eq!(next, gs.len(), "{sizes:?} on {workers}: every group once");
            }
        }
        let even = split_for_workers(&groups(&[8; 16]), 128, 2);
        assert_eq!(even.iter().map(|s| s.items).collect::<Vec<_>>(), [64, 64]);
    }
}
