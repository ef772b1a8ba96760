//! The schedule's TOML configuration: parsing and validation.
//!
//! Every error names the stage (index and name) and the key at fault, because
//! the user fixes it in their experiment file, not here.

use lmmhost_sdk::{Overrides, PadOverrides, StageKind};
use serde::Deserialize;
use std::collections::BTreeMap;

/// A parsed, validated schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleConfig {
    pub stages: Vec<StageConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StageConfig {
    pub name: String,
    pub kind: StageKind,
    /// Dataset name and sampling weight, sorted by name.
    pub datasets: Vec<(String, f64)>,
    pub length: Length,
    pub advance_when: Option<AdvanceWhen>,
    /// Stage overrides merged over the top-level `[overrides]`.
    pub overrides: Overrides,
    /// Prompts per step for turning epochs into steps; overrides the host's
    /// `batch/prompts` metric.
    pub samples_per_step: Option<u64>,
    /// Dataset sizes from the config; override the host's `dataset/<name>/len` metrics.
    pub dataset_sizes: BTreeMap<String, u64>,
}

/// How long a stage runs at most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Length {
    Steps(u64),
    /// Resolved to steps when the stage starts (needs dataset sizes).
    Epochs(f64),
}

/// Ends a stage early once the mean of `metric` over the last `over_last`
/// steps of the stage reaches the bound(s).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvanceWhen {
    pub metric: String,
    pub over_last: usize,
    #[serde(default)]
    pub at_least: Option<f64>,
    #[serde(default)]
    pub at_most: Option<f64>,
}

impl AdvanceWhen {
    pub fn satisfied_by(&self, mean: f64) -> bool {
        self.at_least.is_none_or(|lo| mean >= lo) && self.at_most.is_none_or(|hi| mean <= hi)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTop {
    stages: Vec<toml::Value>,
    #[serde(default)]
    overrides: Option<toml::Value>,
    #[serde(default)]
    samples_per_step: Option<u64>,
    #[serde(default)]
    dataset_sizes: BTreeMap<String, u64>,
}

/// Every field optional so that a one-key table deserializes too: that is how
/// [`typed`] finds the key at fault. Required keys are checked by hand.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    kind: Option<StageKind>,
    #[serde(default)]
    datasets: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    steps: Option<u64>,
    #[serde(default)]
    epochs: Option<f64>,
    #[serde(default)]
    advance_when: Option<AdvanceWhen>,
    #[serde(default)]
    overrides: Option<toml::Value>,
    #[serde(default)]
    samples_per_step: Option<u64>,
}

/// Deserializes a table; on failure, retries key by key so the error names
/// the key (serde's messages for a bad value do not).
fn typed<T: serde::de::DeserializeOwned>(v: toml::Value) -> Result<T, String> {
    let table = match &v {
        toml::Value::Table(t) => t.clone(),
        other => return Err(format!("expected a table, got a {}", other.type_str())),
    };
    match v.try_into::<T>() {
        Ok(t) => Ok(t),
        Err(e) => {
            for (k, x) in table {
                let mut one = toml::Table::new();
                one.insert(k.clone(), x);
                if let Err(e1) = toml::Value::Table(one).try_into::<T>() {
                    return Err(format!("`{k}`: {}", e1.message()));
                }
            }
            Err(e.message().to_owned())
        }
    }
}

impl ScheduleConfig {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut top: RawTop =
            toml::from_str(text).map_err(|e| format!("schedule config: {}", e.message()))?;
        if top.stages.is_empty() {
            return Err("schedule config: `stages` is empty; list at least one [[stages]]".into());
        }
        let base = match top.overrides.take() {
            Some(v) => {
                parse_overrides(v).map_err(|e| format!("schedule config: [overrides]: {e}"))?
            }
            None => Overrides::default(),
        };
        let raw_stages = std::mem::take(&mut top.stages);
        let mut stages: Vec<StageConfig> = Vec::with_capacity(raw_stages.len());
        for (i, raw) in raw_stages.into_iter().enumerate() {
            // Name the stage in errors even when the rest of it fails to parse.
            let label = match raw.get("name").and_then(|n| n.as_str()) {
                Some(n) => format!("stage {i} (\"{n}\")"),
                None => format!("stage {i}"),
            };
            let stage = parse_stage(raw, &base, &top)
                .map_err(|e| format!("schedule config: {label}: {e}"))?;
            if stages.iter().any(|s| s.name == stage.name) {
                return Err(format!(
                    "schedule config: {label}: `name` is used by an earlier stage"
                ));
            }
            stages.push(stage);
        }
        Ok(ScheduleConfig { stages })
    }
}

fn parse_stage(raw: toml::Value, base: &Overrides, top: &RawTop) -> Result<StageConfig, String> {
    let raw: RawStage = typed(raw)?;
    let name = raw.name.ok_or("missing `name`")?;
    if name.trim().is_empty() {
        return Err("`name` is empty".into());
    }
    let kind = raw.kind.ok_or("missing `kind` (\"sft\" or \"grpo\")")?;
    let datasets = raw
        .datasets
        .ok_or("missing `datasets` (a table of dataset name = weight)")?;
    if datasets.is_empty() {
        return Err("`datasets` is empty; give at least one dataset with a weight".into());
    }
    for (ds, w) in &datasets {
        if !(w.is_finite() && *w >= 0.0) {
            return Err(format!(
                "`datasets.{ds}` = {w}: a weight must be a finite number >= 0"
            ));
        }
    }
    if datasets.values().all(|w| *w == 0.0) {
        return Err("`datasets`: all weights are 0".into());
    }
    let length = match (raw.steps, raw.epochs) {
        (Some(_), Some(_)) => return Err("give either `steps` or `epochs`, not both".into()),
        (None, None) => return Err(
            "missing `steps` or `epochs` (with `advance_when` it is the cap on the stage's length)"
                .into(),
        ),
        (Some(0), None) => return Err("`steps` must be > 0".into()),
        (Some(s), None) => Length::Steps(s),
        (None, Some(e)) if !(e.is_finite() && e > 0.0) => {
            return Err(format!("`epochs` = {e}: must be a finite number > 0"))
        }
        (None, Some(e)) => Length::Epochs(e),
    };
    let samples_per_step = raw.samples_per_step.or(top.samples_per_step);
    if samples_per_step == Some(0) {
        return Err("`samples_per_step` must be > 0".into());
    }
    if let Some(a) = &raw.advance_when {
        if a.metric.is_empty() {
            return Err("`advance_when.metric` is empty".into());
        }
        if a.over_last == 0 {
            return Err("`advance_when.over_last` must be > 0".into());
        }
        if a.at_least.is_none() && a.at_most.is_none() {
            return Err("`advance_when` needs `at_least` or `at_most`".into());
        }
    }
    let own = match raw.overrides {
        Some(v) => parse_overrides(v).map_err(|e| format!("[overrides]: {e}"))?,
        None => Overrides::default(),
    };
    Ok(StageConfig {
        name,
        kind,
        datasets: datasets.into_iter().collect(),
        length,
        advance_when: raw.advance_when,
        overrides: merge(base, &own),
        samples_per_step,
        dataset_sizes: top.dataset_sizes.clone(),
    })
}

fn parse_overrides(v: toml::Value) -> Result<Overrides, String> {
    // `extra` values are TOML value text (`0.28`, `"cosine"`, `[1, 2]`): taken
    // out before the typed parse, which would turn `"cosine"` into `cosine`.
    let mut v = v;
    let extra = match v.as_table_mut().and_then(|t| t.remove("extra")) {
        None => Vec::new(),
        Some(toml::Value::Table(t)) => t.into_iter().map(|(k, x)| (k, toml_text(&x))).collect(),
        Some(other) => {
            return Err(format!(
                "`extra`: expected a table of key = value, got a {}",
                other.type_str()
            ))
        }
    };
    let mut o: Overrides = typed(v)?;
    o.extra = extra;
    let check = |key: &str, x: Option<f64>, ok: fn(f64) -> bool, want: &str| match x {
        Some(x) if !ok(x) => Err(format!("`{key}` = {x}: expected {want}")),
        _ => Ok(()),
    };
    let nonneg = |x: f64| x.is_finite() && x >= 0.0;
    check(
        "learning_rate",
        o.learning_rate,
        nonneg,
        "a finite number >= 0",
    )?;
    check("kl_coef", o.kl_coef, nonneg, "a finite number >= 0")?;
    check("temperature", o.temperature, nonneg, "a finite number >= 0")?;
    check(
        "top_p",
        o.top_p,
        |x| x > 0.0 && x <= 1.0,
        "a number in (0, 1]",
    )?;
    check(
        "entropy_coef",
        o.entropy_coef,
        nonneg,
        "a finite number >= 0",
    )?;
    check(
        "entropy_decay",
        o.entropy_decay,
        |x| x > 0.0 && x <= 1.0,
        "a factor in (0, 1]",
    )?;
    check("pad.t_low", o.pad.t_low, nonneg, "a finite number >= 0")?;
    check("pad.t_high", o.pad.t_high, nonneg, "a finite number >= 0")?;
    check(
        "pad.ratio",
        o.pad.ratio,
        |x| x > 0.0 && x <= 1.0,
        "a fraction in (0, 1]",
    )?;
    check(
        "pad.tau_start",
        o.pad.tau_start,
        |x| x.is_finite() && x > 0.0,
        "a number > 0",
    )?;
    check(
        "pad.tau_end",
        o.pad.tau_end,
        |x| x.is_finite() && x > 0.0,
        "a number > 0",
    )?;
    if let (Some(lo), Some(hi)) = (o.pad.t_low, o.pad.t_high) {
        if lo > hi {
            return Err(format!("`pad.t_low` = {lo} is above `pad.t_high` = {hi}"));
        }
    }
    if o.group_size == Some(0) {
        return Err("`group_size` must be > 0".into());
    }
    Ok(o)
}

/// A TOML value as the text that parses back to it (strings quoted and escaped).
pub fn toml_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => toml::Value::String(s.clone()).to_string(),
        toml::Value::Array(a) => {
            let items: Vec<String> = a.iter().map(toml_text).collect();
            format!("[{}]", items.join(", "))
        }
        toml::Value::Table(t) => {
            let items: Vec<String> = t
                .iter()
                .map(|(k, x)| format!("{} = {}", toml::Value::String(k.clone()), toml_text(x)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// `own` over `base`, field by field; `extra` keys of `own` replace equal keys of `base`.
pub fn merge(base: &Overrides, own: &Overrides) -> Overrides {
    let pad = PadOverrides {
        enabled: own.pad.enabled.or(base.pad.enabled),
        t_low: own.pad.t_low.or(base.pad.t_low),
        t_high: own.pad.t_high.or(base.pad.t_high),
        ratio: own.pad.ratio.or(base.pad.ratio),
        tau_start: own.pad.tau_start.or(base.pad.tau_start),
        tau_end: own.pad.tau_end.or(base.pad.tau_end),
    };
    let mut extra: Vec<(String, String)> = base
        .extra
        .iter()
        .filter(|(k, _)| !own.extra.iter().any(|(k2, _)| k2 == k))
        .cloned()
        .collect();
    extra.extend(own.extra.iter().cloned());
    Overrides {
        learning_rate: own.learning_rate.or(base.learning_rate),
        kl_coef: own.kl_coef.or(base.kl_coef),
        temperature: own.temperature.or(base.temperature),
        top_p: own.top_p.or(base.top_p),
        group_size: own.group_size.or(base.group_size),
        entropy_coef: own.entropy_coef.or(base.entropy_coef),
        entropy_warmup_steps: own.entropy_warmup_steps.or(base.entropy_warmup_steps),
        entropy_decay: own.entropy_decay.or(base.entropy_decay),
        freeze_vision: own.freeze_vision.or(base.freeze_vision),
        freeze_language: own.freeze_language.or(base.freeze_language),
        dynamic_sampling: own.dynamic_sampling.or(base.dynamic_sampling),
        pad,
        extra,
    }
}
