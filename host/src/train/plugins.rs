//! The experiment's plugins, started in the sandbox: reward rules (summed with
//! weights), one loader instance per dataset, the schedule. Components come
//! from .wasm files or verified bundles; every one is identified by the
//! SHA-256 of its bytes, which checkpoints record and hot reload compares.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use lmmhost_bundle::TrustPolicy;
use lmmhost_plugin_host::{
    LoaderPlugin, PluginRuntime, PluginSpec, RewardPlugin, RuntimeOptions, SchedulePlugin,
};
use lmmhost_sdk as sdk;
use sha2::{Digest, Sha256};

use super::experiment::{merge_tables, Experiment, PluginEntry, RewardRef};

/// A component's bytes and where they came from.
#[derive(Clone)]
pub struct Component {
    pub bytes: Arc<Vec<u8>>,
    pub sha256: String,
    /// The bundle's default config (TOML text) under the experiment's table.
    pub default_config: toml::Table,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads plugin `name`'s component: the .wasm file, or the named component of
/// a bundle verified against the experiment's trust policy.
pub fn read_component(exp: &Experiment, name: &str) -> Result<Component> {
    let entry = &exp.plugins[name];
    if let Some(path) = &entry.wasm {
        let bytes = std::fs::read(path)
            .with_context(|| format!("plugin {name}: cannot read {}", path.display()))?;
        return Ok(Component {
            sha256: sha256_hex(&bytes),
            bytes: Arc::new(bytes),
            default_config: toml::Table::new(),
        });
    }
    let (Some(bundle), Some(component)) = (&entry.bundle, &entry.component) else {
        bail!("plugins.{name}: set `wasm`, or `bundle` and `component`");
    };
    let trust = exp
        .trust
        .as_ref()
        .with_context(|| format!("plugins.{name}.bundle: needs a [trust] section"))?;
    let policy = TrustPolicy::from_file(&trust.trusted_keys, trust.allow_unsigned)
        .with_context(|| format!("trust.trusted_keys ({})", trust.trusted_keys.display()))?;
    let verified =
        lmmhost_bundle::open_verified(bundle, &policy).with_context(|| format!("plugin {name}"))?;
    let c = verified.component(component).with_context(|| {
        format!(
            "plugins.{name}.component: bundle {} has no component {component:?} (it has: {})",
            bundle.display(),
            verified
                .components
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let default_config: toml::Table = c.default_config.parse().with_context(|| {
        format!("plugin {name}: the bundle's default config of {component:?} is not TOML")
    })?;
    Ok(Component {
        sha256: c.sha256.clone(),
        bytes: Arc::new(c.bytes.clone()),
        default_config,
    })
}

/// Stable per-plugin seed: the plugin's randomness differs between plugins but
/// is fixed by the experiment seed.
fn plugin_seed(seed: u64, name: &str) -> u64 {
    let d = Sha256::digest(format!("{seed}/{name}").as_bytes());
    u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8]))
}

fn spec(
    exp: &Experiment,
    name: &str,
    c: &Component,
    config: &toml::Table,
    grants: Vec<PathBuf>,
) -> Result<PluginSpec> {
    let entry: &PluginEntry = &exp.plugins[name];
    let config = merge_tables(&c.default_config, config);
    Ok(PluginSpec {
        name: name.to_string(),
        bytes: c.bytes.clone(),
        config: toml::to_string(&config)
            .with_context(|| format!("plugin {name}: config cannot be written as TOML"))?,
        limits: entry.limits.clone(),
        on_error: entry.on_error,
        seed: plugin_seed(exp.seed, name),
        grants,
        image_roots: Vec::new(),
        log: lmmhost_plugin_host::stderr_sink(),
    })
}

/// A reward plugin, its weight in the total and the datasets it scores.
pub struct Reward {
    pub name: String,
    pub weight: f64,
    /// `None`: every dataset.
    pub datasets: Option<Vec<String>>,
    pub plugin: RewardPlugin,
}

impl Reward {
    pub fn scores(&self, dataset: &str) -> bool {
        self.datasets
            .as_ref()
            .is_none_or(|d| d.iter().any(|n| n == dataset))
    }
}

/// The combined score of one completion.
#[derive(Debug, Clone, PartialEq)]
pub struct CombinedScore {
    /// Weighted sum of the plugins' totals.
    pub total: f64,
    /// Every plugin's components by name (`<component>`; prefixed with the
    /// plugin name when two plugins report the same component).
    pub components: BTreeMap<String, f64>,
    /// Items a plugin failed on (scored zero under `on_error = "zero"`).
    pub failures: Vec<String>,
}

/// The completions to score for `rows`, whose `group` indexes `kept`, which
/// indexes `samples`: adjacent rows of one prompt form one group (the sample
/// crosses into a reward plugin once per group), so item `i` of the scores
/// is `rows[i]`.
pub fn reward_groups(
    rows: &[super::rollout::Row],
    samples: &[sdk::Sample],
    kept: &[usize],
) -> Vec<sdk::Group> {
    let mut out: Vec<sdk::Group> = Vec::new();
    let mut last = None;
    for r in rows {
        if last != Some(r.group) {
            out.push(sdk::Group::new(samples[kept[r.group]].clone()));
            last = Some(r.group);
        }
        if let Some(g) = out.last_mut() {
            g.push(&r.text, r.response.len() as u32);
        }
    }
    out
}

/// The dataset of each group [`reward_groups`] makes from the same `rows`
/// and `kept`; `datasets` is indexed like its `samples`.
pub fn group_datasets(
    rows: &[super::rollout::Row],
    kept: &[usize],
    datasets: &[String],
) -> Vec<String> {
    let mut out = Vec::new();
    let mut last = None;
    for r in rows {
        if last != Some(r.group) {
            out.push(datasets[kept[r.group]].clone());
            last = Some(r.group);
        }
    }
    out
}

/// Scores every response of `groups` with every reward plugin that scores
/// its group's dataset (`datasets[g]` is group `g`'s); totals are summed
/// with weights. One result per response, in order.
pub fn score_all(
    rewards: &[Reward],
    groups: &[sdk::Group],
    datasets: &[String],
) -> Result<Vec<CombinedScore>> {
    // The sample id of each item, for error messages.
    let ids: Vec<&str> = groups
        .iter()
        .flat_map(|g| std::iter::repeat_n(g.sample.id.as_str(), g.len()))
        .collect();
    let mut out: Vec<CombinedScore> = (0..ids.len())
        .map(|_| CombinedScore {
            total: 0.0,
            components: BTreeMap::new(),
            failures: Vec::new(),
        })
        .collect();
    // The first item of each group.
    let starts: Vec<usize> = groups
        .iter()
        .scan(0, |n, g| {
            let start = *n;
            *n += g.len();
            Some(start)
        })
        .collect();
    for r in rewards {
        let picked: Vec<usize> = (0..groups.len())
            .filter(|&g| r.scores(&datasets[g]))
            .collect();
        if picked.is_empty() {
            continue;
        }
        // Item j of the plugin's table is item items[j] of `out`.
        let (table, items): (_, Vec<usize>) = if picked.len() == groups.len() {
            (r.plugin.score_groups(groups)?, (0..ids.len()).collect())
        } else {
            let sub: Vec<sdk::Group> = picked.iter().map(|&g| groups[g].clone()).collect();
            let items = picked
                .iter()
                .flat_map(|&g| starts[g]..starts[g] + groups[g].len())
                .collect();
            (r.plugin.score_groups(&sub)?, items)
        };
        if table.len() != items.len() {
            bail!(
                "reward plugin {}: {} scores for {} completions",
                r.name,
                table.len(),
                items.len()
            );
        }
        for (j, &i) in items.iter().enumerate() {
            let s = &mut out[i];
            if let Some(error) = table.failure(j) {
                s.failures.push(format!("{}: {error}", r.name));
                continue;
            }
            let total = table.total(j);
            if !total.is_finite() {
                bail!(
                    "reward plugin {}: item {i} (sample {}) scored a non-finite total {total}",
                    r.name,
                    ids[i],
                );
            }
            s.total += r.weight * total;
            for (k, v) in table.components(j) {
                let key = if s.components.contains_key(k) && rewards.len() > 1 {
                    format!("{}.{k}", r.name)
                } else {
                    k.to_string()
                };
                s.components.insert(key, v);
            }
        }
    }
    Ok(out)
}

/// Every plugin of a run, started.
pub struct Plugins {
    pub runtime: PluginRuntime,
    /// Shared with the scoring task that runs beside the log-prob passes.
    pub rewards: Arc<Vec<Reward>>,
    /// One loader instance per dataset (configs and grants differ).
    pub datasets: BTreeMap<String, LoaderPlugin>,
    pub schedule: SchedulePlugin,
    /// Plugin name -> the component it runs now.
    pub components: BTreeMap<String, Component>,
}

impl Plugins {
    pub fn start(exp: &Experiment) -> Result<Plugins> {
        let runtime = PluginRuntime::new(RuntimeOptions::default())?;
        let mut components = BTreeMap::new();
        for name in exp.plugins.keys() {
            components.insert(name.clone(), read_component(exp, name)?);
        }
        let mut rewards = Vec::new();
        for r in &exp.rewards {
            rewards.push(start_reward(exp, &runtime, &components, r)?);
        }
        let mut datasets = BTreeMap::new();
        for name in exp.datasets.keys() {
            datasets.insert(
                name.clone(),
                start_loader(exp, &runtime, &components, name)?,
            );
        }
        let schedule = start_schedule(exp, &runtime, &components)?;
        Ok(Plugins {
            runtime,
            rewards: Arc::new(rewards),
            datasets,
            schedule,
            components,
        })
    }

    /// Plugin name -> SHA-256 of its component.
    pub fn hashes(&self) -> BTreeMap<String, String> {
        self.components
            .iter()
            .map(|(k, c)| (k.clone(), c.sha256.clone()))
            .collect()
    }

    /// Hot reload: every `watch = true` plugin whose file changed is restarted
    /// from the new bytes. A component that fails to load is refused and the
    /// old one keeps running. Returns one line per event, for the log.
    pub fn reload_changed(&mut self, exp: &Experiment) -> Vec<String> {
        let mut events = Vec::new();
        let watched: Vec<String> = exp
            .plugins
            .iter()
            .filter(|(_, e)| e.watch && e.wasm.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        for name in watched {
            let new = match read_component(exp, &name) {
                Ok(c) => c,
                Err(e) => {
                    events.push(format!(
                        "plugin {name}: reload refused, keeping the running one: {e:#}"
                    ));
                    continue;
                }
            };
            if self.components.get(&name).map(|c| &c.sha256) == Some(&new.sha256) {
                continue;
            }
            match self.restart(exp, &name, new.clone()) {
                Ok(()) => events.push(format!("plugin {name}: reloaded, sha256 {}", new.sha256)),
                Err(e) => events.push(format!(
                    "plugin {name}: reload refused (sha256 {}), keeping the running one: {e:#}",
                    new.sha256
                )),
            }
        }
        events
    }

    /// Starts everything that uses plugin `name` from `c`; swaps only if all succeed.
    fn restart(&mut self, exp: &Experiment, name: &str, c: Component) -> Result<()> {
        let mut comps = self.components.clone();
        comps.insert(name.to_string(), c);
        let mut new_rewards = Vec::new();
        for (i, r) in exp.rewards.iter().enumerate() {
            if r.plugin == name {
                new_rewards.push((i, start_reward(exp, &self.runtime, &comps, r)?));
            }
        }
        let mut new_loaders = Vec::new();
        for (ds, d) in &exp.datasets {
            if d.loader == name {
                new_loaders.push((ds.clone(), start_loader(exp, &self.runtime, &comps, ds)?));
            }
        }
        let new_schedule = if exp.schedule.plugin == name {
            let mut s = start_schedule(exp, &self.runtime, &comps)?;
            let state = self.schedule.save_state()?;
            s.load_state(&state)
                .context("the new schedule refused the running schedule's state")?;
            Some(s)
        } else {
            None
        };
        let rewards = Arc::get_mut(&mut self.rewards)
            .context("reward plugins are still in use by a scoring task")?;
        for (i, r) in new_rewards {
            rewards[i] = r;
        }
        for (ds, l) in new_loaders {
            if let Some(old) = self.datasets.get(&ds) {
                if old.len() != l.len() {
                    bail!(
                        "dataset {ds}: the reloaded loader reports {} samples, the running one {}",
                        l.len(),
                        old.len()
                    );
                }
            }
            self.datasets.insert(ds, l);
        }
        if let Some(s) = new_schedule {
            self.schedule = s;
        }
        self.components = comps;
        Ok(())
    }
}

fn component<'a>(comps: &'a BTreeMap<String, Component>, name: &str) -> Result<&'a Component> {
    comps
        .get(name)
        .ok_or_else(|| anyhow!("no plugin named {name:?} in [plugins]"))
}

fn start_reward(
    exp: &Experiment,
    runtime: &PluginRuntime,
    comps: &BTreeMap<String, Component>,
    r: &RewardRef,
) -> Result<Reward> {
    let name = r.plugin.as_str();
    let c = component(comps, name)?;
    let s = spec(exp, name, c, &exp.plugins[name].config, Vec::new())?;
    Ok(Reward {
        name: name.to_string(),
        weight: r.weight,
        datasets: r.datasets.clone(),
        plugin: RewardPlugin::new(runtime, s)?,
    })
}

fn start_loader(
    exp: &Experiment,
    runtime: &PluginRuntime,
    comps: &BTreeMap<String, Component>,
    dataset: &str,
) -> Result<LoaderPlugin> {
    let loader = open_loader(exp, runtime, comps, dataset)?;
    if loader.is_empty() {
        bail!(
            "dataset {dataset}: loader {} opened it but it has no samples ({} rows skipped)",
            exp.datasets[dataset].loader,
            loader.info().skipped_rows
        );
    }
    Ok(loader)
}

/// Dataset `dataset`'s loader, opened on its files with its image roots
/// granted (it may have no samples).
fn open_loader(
    exp: &Experiment,
    runtime: &PluginRuntime,
    comps: &BTreeMap<String, Component>,
    dataset: &str,
) -> Result<LoaderPlugin> {
    let d = &exp.datasets[dataset];
    let c = component(comps, &d.loader)?;
    let config = merge_tables(&exp.plugins[&d.loader].config, &d.config);
    let mut s = spec(exp, &d.loader, c, &config, d.files.clone())?;
    s.image_roots = d.images.clone();
    LoaderPlugin::new(runtime, s).with_context(|| format!("dataset {dataset}"))
}

/// Dataset `dataset`'s loader alone, opened as a run opens it (no reward
/// or schedule plugin is started); an empty dataset is returned, not refused.
pub fn open_dataset(
    exp: &Experiment,
    runtime: &PluginRuntime,
    dataset: &str,
) -> Result<LoaderPlugin> {
    let d = exp
        .datasets
        .get(dataset)
        .with_context(|| format!("no dataset named {dataset:?} in [datasets]"))?;
    let comps = BTreeMap::from([(d.loader.clone(), read_component(exp, &d.loader)?)]);
    open_loader(exp, runtime, &comps, dataset)
}

fn start_schedule(
    exp: &Experiment,
    runtime: &PluginRuntime,
    comps: &BTreeMap<String, Component>,
) -> Result<SchedulePlugin> {
    let name = &exp.schedule.plugin;
    let c = component(comps, name)?;
    let mut config = exp.plugins[name].config.clone();
    if let Some(f) = &exp.schedule.file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("schedule.file: cannot read {}", f.display()))?;
        let table: toml::Table = text
            .parse()
            .with_context(|| format!("schedule.file: {} is not TOML", f.display()))?;
        config = merge_tables(&config, &table);
    }
    let s = spec(exp, name, c, &config, Vec::new())?;
    SchedulePlugin::new(runtime, s)
}

/// What differs between the plugins a checkpoint ran and those of the experiment now.
pub(crate) fn changed_plugins(
    then: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, old) in then {
        match now.get(name) {
            Some(h) if h != old => warnings.push(format!(
                "plugin {name} changed since the checkpoint: sha256 {old} then, {h} now"
            )),
            None => warnings.push(format!(
                "plugin {name} of the checkpoint is not in the experiment"
            )),
            _ => {}
        }
    }
    warnings
}
