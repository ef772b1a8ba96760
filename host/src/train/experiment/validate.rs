//! The experiment checked as a whole before any model loads: files that must
//! exist, names that must resolve, the range of every numeric setting
//! ([`RANGES`]) and impossible combinations. Every problem is reported at
//! once, each naming its key.

use anyhow::{bail, Result};

use super::schema::Experiment;

/// One end of a range.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    Inclusive(f64),
    Exclusive(f64),
    None,
}

/// The valid values of a numeric setting. NaN is never valid; an infinite
/// float only where a bound is an inclusive infinity.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub min: Bound,
    pub max: Bound,
    /// Why the bound is there, when it is not obvious.
    pub why: &'static str,
}

const fn range(min: Bound, max: Bound) -> Range {
    Range { min, max, why: "" }
}

const fn at_least(v: f64) -> Range {
    range(Bound::Inclusive(v), Bound::None)
}

const fn above(v: f64) -> Range {
    range(Bound::Exclusive(v), Bound::None)
}

const ANY: Range = range(Bound::None, Bound::None);

impl Range {
    const fn because(self, why: &'static str) -> Range {
        Range { why, ..self }
    }

    pub fn contains(&self, v: f64) -> bool {
        let low = match self.min {
            Bound::Inclusive(m) => v >= m,
            Bound::Exclusive(m) => v > m,
            Bound::None => v > f64::NEG_INFINITY,
        };
        let high = match self.max {
            Bound::Inclusive(m) => v <= m,
            Bound::Exclusive(m) => v < m,
            Bound::None => v < f64::INFINITY,
        };
        low && high
    }

    /// `in (0, 1]`, `>= 1`, `a finite number`.
    pub fn describe(&self) -> String {
        let num = |v: f64| {
            if v == f64::INFINITY {
                "inf".to_string()
            } else {
                format!("{v}")
            }
        };
        match (self.min, self.max) {
            (Bound::None, Bound::None) => "a finite number".into(),
            (Bound::Inclusive(m), Bound::None) => format!(">= {}", num(m)),
            (Bound::Exclusive(m), Bound::None) => format!("> {}", num(m)),
            (Bound::None, Bound::Inclusive(m)) => format!("<= {}", num(m)),
            (Bound::None, Bound::Exclusive(m)) => format!("< {}", num(m)),
            (lo, hi) => {
                let (l, a) = match lo {
                    Bound::Inclusive(m) => ('[', m),
                    Bound::Exclusive(m) => ('(', m),
                    Bound::None => ('(', f64::NEG_INFINITY),
                };
                let (h, b) = match hi {
                    Bound::Inclusive(m) => (']', m),
                    Bound::Exclusive(m) => (')', m),
                    Bound::None => (')', f64::INFINITY),
                };
                format!("in {l}{}, {}{h}", num(a), num(b))
            }
        }
    }
}

/// The valid range of every numeric setting of the experiment file, by key
/// path: `*` stands for any plugin or dataset name, `[]` for any element
/// of an array. A test enumerates the schema's numeric keys and fails on one
/// missing here.
pub const RANGES: &[(&str, Range)] = &[
    ("seed", at_least(0.0)),
    ("model.threads", at_least(1.0)),
    ("model.workers", at_least(1.0)),
    ("model.max_image_pixels", at_least(1.0)),
    ("model.min_pixels", at_least(1.0)),
    ("model.lora.rank", at_least(1.0)),
    ("model.lora.alpha", above(0.0)),
    (
        "model.lora.dropout",
        range(Bound::Inclusive(0.0), Bound::Exclusive(1.0)),
    ),
    (
        "model.max_pixels",
        at_least(784.0)
            .because("one 28 x 28 merged patch, the smallest image Qwen2.5-VL's processor makes"),
    ),
    (
        "plugins.*.limits.call_timeout_ms",
        range(Bound::Inclusive(1.0), Bound::Inclusive(86_400_000.0)).because("at most a day"),
    ),
    (
        "plugins.*.limits.memory_mb",
        range(Bound::Inclusive(1.0), Bound::Inclusive(4096.0))
            .because("a 32-bit WebAssembly memory holds at most 4 GiB"),
    ),
    (
        "plugins.*.limits.instances",
        range(Bound::Inclusive(1.0), Bound::Inclusive(1024.0)),
    ),
    ("rewards[].weight", ANY),
    ("rollout.group_size", at_least(1.0)),
    ("rollout.temperature", above(0.0)),
    (
        "rollout.top_p",
        range(Bound::Exclusive(0.0), Bound::Inclusive(1.0)),
    ),
    ("rollout.top_k", at_least(0.0).because("0 disables top-k")),
    ("rollout.max_prompt_tokens", at_least(1.0)),
    ("rollout.max_response_tokens", at_least(1.0)),
    ("rollout.min_new_tokens", at_least(0.0)),
    ("rollout.prompts_per_step", at_least(1.0)),
    ("rollout.kv_cache_budget", at_least(1.0)),
    ("optim.lr", at_least(0.0)),
    ("optim.warmup_steps", at_least(0.0)),
    (
        "optim.warmup_ratio",
        range(Bound::Inclusive(0.0), Bound::Exclusive(1.0))
            .because("a share of the stage's updates"),
    ),
    ("optim.stage_steps", at_least(1.0)),
    (
        "optim.min_lr_ratio",
        range(Bound::Inclusive(0.0), Bound::Inclusive(1.0)),
    ),
    ("optim.decay_steps", at_least(1.0)),
    (
        "optim.betas[]",
        range(Bound::Inclusive(0.0), Bound::Exclusive(1.0)),
    ),
    (
        "optim.eps",
        range(Bound::Exclusive(0.0), Bound::Inclusive(1.0))
            .because("it keeps AdamW's denominator positive"),
    ),
    (
        "optim.weight_decay",
        at_least(0.0).because("a negative decay grows the weights"),
    ),
    (
        "optim.grad_clip",
        at_least(0.0).because("0 disables clipping"),
    ),
    ("optim.micro_batch_size", at_least(1.0)),
    ("optim.updates_per_batch", at_least(1.0)),
    (
        "grpo.clip_low",
        range(Bound::Exclusive(0.0), Bound::Exclusive(1.0)),
    ),
    ("grpo.clip_high", above(0.0)),
    ("grpo.dual_clip", above(1.0)),
    ("grpo.advantage_clip[]", ANY),
    (
        "grpo.loss_constant_length",
        at_least(1.0).because("the sequence loss is divided by it"),
    ),
    (
        "grpo.logprob_chunk_tokens",
        at_least(1.0).because("a chunk holds at least one token"),
    ),
    ("grpo.kl.coef", at_least(0.0)),
    ("grpo.entropy.coef", at_least(0.0)),
    ("grpo.entropy.warmup_steps", at_least(0.0)),
    (
        "grpo.entropy.decay",
        range(Bound::Exclusive(0.0), Bound::Inclusive(1.0)),
    ),
    (
        "grpo.pad.t_low",
        above(0.0).because("zero-advantage samples carry no gradient"),
    ),
    (
        "grpo.pad.t_high",
        range(Bound::Exclusive(0.0), Bound::Inclusive(f64::INFINITY)),
    ),
    (
        "grpo.pad.ratio",
        range(Bound::Exclusive(0.0), Bound::Inclusive(1.0)),
    ),
    ("grpo.pad.tau_start", above(0.0)),
    ("grpo.pad.tau_end", above(0.0)),
    ("grpo.pad.tau_decay_steps", at_least(0.0)),
    (
        "grpo.dynamic_sampling.max_retries",
        range(Bound::Inclusive(0.0), Bound::Inclusive(1000.0)),
    ),
    (
        "checkpoint.every",
        at_least(0.0).because("0 saves only at the end"),
    ),
    ("checkpoint.keep_last", at_least(1.0)),
    ("distributed.timeout_secs", above(0.0)),
    (
        "distributed.zero_stage",
        range(Bound::Inclusive(0.0), Bound::Inclusive(2.0))
            .because("ZeRO stages 1 and 2 shard the optimizer state and gradients; 3 is not there"),
    ),
    (
        "distributed.bucket_mb",
        range(Bound::Exclusive(0.0), Bound::Inclusive(65536.0)),
    ),
    ("logging.total_steps", at_least(1.0)),
    (
        "eval.every",
        at_least(0.0).because("0 evaluates only at stage boundaries and the end"),
    ),
    ("eval.samples", at_least(1.0)),
    ("eval.pass_k[]", at_least(1.0)),
    ("eval.temperature", above(0.0)),
    ("eval.max_response_tokens", at_least(1.0)),
    ("eval.limit", at_least(1.0)),
    ("sft.batch_size", at_least(1.0)),
    ("sft.max_tokens", at_least(1.0)),
];

/// Tables whose keys are names the user chose: `*` in [`RANGES`].
const NAMED_TABLES: [&str; 2] = ["plugins", "datasets"];

/// Free-form tables handed to plugins as they are.
const FREE_FORM: [&str; 2] = ["plugins.*.config", "datasets.*.config"];

/// The [`RANGES`] entry for a key pattern.
pub fn range_of(pattern: &str) -> Option<&'static Range> {
    RANGES.iter().find(|(k, _)| *k == pattern).map(|(_, r)| r)
}

/// Every numeric value of `table` (the experiment file as parsed, or a
/// stage's sections) outside its range, one message each naming the key,
/// the value and the range.
pub fn range_problems(table: &toml::Table) -> Vec<String> {
    let mut out = Vec::new();
    walk_table(table, "", "", &mut out);
    out
}

fn walk_table(t: &toml::Table, pattern: &str, path: &str, out: &mut Vec<String>) {
    let named = NAMED_TABLES.contains(&pattern);
    for (k, v) in t {
        let join = |prefix: &str, k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        let p = join(pattern, if named { "*" } else { k });
        if FREE_FORM.contains(&p.as_str()) {
            continue;
        }
        walk_value(v, &p, &join(path, k), out);
    }
}

fn walk_value(v: &toml::Value, pattern: &str, path: &str, out: &mut Vec<String>) {
    let value = match v {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        toml::Value::Table(t) => return walk_table(t, pattern, path, out),
        toml::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_value(item, &format!("{pattern}[]"), &format!("{path}[{i}]"), out);
            }
            return;
        }
        _ => return,
    };
    // Keys without an entry are not numeric settings of ours (a wrong type
    // or an unknown key fails the typed parse with its own message).
    let Some(r) = range_of(pattern) else { return };
    if !r.contains(value) {
        let why = if r.why.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.why)
        };
        out.push(format!(
            "{path} = {}: must be {}{why}",
            match v {
                toml::Value::Float(f) => format!("{f:?}"),
                other => other.to_string(),
            },
            r.describe()
        ));
    }
}

impl Experiment {
    /// Every problem found, one per line, each naming its key.
    pub fn validate(&self) -> Result<()> {
        self.validate_with(true)
    }

    /// [`Experiment::validate`] without looking for the plugin, data and
    /// schedule files (`lmmhost plan` needs only shapes and settings).
    pub fn validate_settings(&self) -> Result<()> {
        self.validate_with(false)
    }

    fn validate_with(&self, files: bool) -> Result<()> {
        let mut problems = range_problems(&self.raw);
        if let Err(e) = crate::train::precision::Precision::parse(&self.model.dtype) {
            problems.push(format!("model.dtype: {e:#}"));
        }
        if let Some(d) = &self.grpo.kl.reference_dtype {
            if let Err(e) = crate::train::precision::Precision::parse(d) {
                problems.push(format!("grpo.kl.reference_dtype: {e:#}"));
            }
        }
        if let Some(lora) = &self.model.lora {
            let g = &self.grpo;
            problems.extend(
                lora.config()
                    .problems("model.lora")
                    .into_iter()
                    .filter(|p| {
                        // Ranges are reported once, by the range check above.
                        p.contains("targets")
                    }),
            );
            problems.extend(crate::train::lora::conflicts(
                lora,
                &self.model.dtype,
                g.freeze_vision,
                g.freeze_language,
                "grpo.",
            ));
            // The checkpointed forward runs without a graph (no dropout) and
            // its recompute with one: their dropout masks would disagree.
            if lora.dropout > 0.0 && self.model.activation_checkpointing {
                problems.push(format!(
                    "model.lora.dropout = {} with model.activation_checkpointing = true: the recomputed layers would draw other dropout masks than the forward they replay; set model.lora.dropout = 0 or turn checkpointing off",
                    lora.dropout
                ));
            }
        }
        let mut check = |ok: bool, msg: String| {
            if !ok {
                problems.push(msg);
            }
        };
        check(
            self.model.path.exists(),
            format!("model.path: {} does not exist", self.model.path.display()),
        );
        for (name, p) in &self.plugins {
            match (&p.wasm, &p.bundle) {
                (Some(w), None) => check(
                    !files || w.is_file(),
                    format!("plugins.{name}.wasm: file not found: {}", w.display()),
                ),
                (None, Some(b)) => {
                    check(
                        !files || b.is_file(),
                        format!("plugins.{name}.bundle: file not found: {}", b.display()),
                    );
                    check(
                        p.component.is_some(),
                        format!("plugins.{name}.component: required with `bundle`"),
                    );
                    check(
                        self.trust.is_some(),
                        format!("plugins.{name}.bundle: needs a [trust] section with trusted_keys"),
                    );
                }
                _ => check(
                    false,
                    format!("plugins.{name}: set exactly one of `wasm` or `bundle`"),
                ),
            }
        }
        if let (Some(min), Some(max)) = (self.model.min_pixels, self.model.max_pixels) {
            check(
                min <= max,
                format!("model.min_pixels = {min}: must be at most model.max_pixels = {max}"),
            );
        }
        let plugin = |n: &str| self.plugins.contains_key(n);
        check(
            !self.rewards.is_empty(),
            "rewards: at least one reward plugin is needed".into(),
        );
        for (i, r) in self.rewards.iter().enumerate() {
            check(
                plugin(&r.plugin),
                format!(
                    "rewards[{i}].plugin: no plugin named {:?} in [plugins]",
                    r.plugin
                ),
            );
            let names = r.datasets.as_deref().unwrap_or_default();
            check(
                r.datasets.is_none() || !names.is_empty(),
                format!("rewards[{i}].datasets: empty (leave it out to score every dataset)"),
            );
            for d in names {
                check(
                    self.datasets.contains_key(d),
                    format!(
                        "rewards[{i}].datasets: no dataset named {d:?} in [datasets] (have: {})",
                        self.datasets.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
        for (name, d) in &self.datasets {
            check(
                plugin(&d.loader),
                format!(
                    "datasets.{name}.loader: no plugin named {:?} in [plugins]",
                    d.loader
                ),
            );
            for f in d.files.iter().filter(|_| files) {
                check(
                    f.exists(),
                    format!("datasets.{name}.files: {} does not exist", f.display()),
                );
            }
            for f in d.images.iter().filter(|_| files) {
                if !f.exists() {
                    check(
                        false,
                        format!("datasets.{name}.images: {} does not exist", f.display()),
                    );
                } else {
                    check(
                        f.is_dir(),
                        format!("datasets.{name}.images: {} is not a directory", f.display()),
                    );
                }
            }
            let loader_config = self.plugins.get(&d.loader).map(|p| &p.config);
            check(
                !d.config.contains_key("image_roots")
                    && !loader_config.is_some_and(|c| c.contains_key("image_roots")),
                format!(
                    "datasets.{name}: set image roots with images = [...], not config.image_roots \
                     (the host grants the folders and writes image_roots itself)"
                ),
            );
        }
        if let Some(f) = &self.schedule.file {
            check(
                !files || f.is_file(),
                format!("schedule.file: file not found: {}", f.display()),
            );
        }
        check(
            plugin(&self.schedule.plugin),
            format!(
                "schedule.plugin: no plugin named {:?} in [plugins]",
                self.schedule.plugin
            ),
        );

        let r = &self.rollout;
        check(
            r.min_new_tokens <= r.max_response_tokens,
            "rollout.min_new_tokens must be <= rollout.max_response_tokens".into(),
        );
        if let Some(b) = r.kv_cache_budget {
            let least = r.max_prompt_tokens + r.max_response_tokens.saturating_sub(1).max(1);
            check(
                b >= least,
                format!(
                    "rollout.kv_cache_budget = {b} cannot hold one prompt of max_prompt_tokens ({}) \
                     and one response of max_response_tokens ({}): it needs at least {least}",
                    r.max_prompt_tokens, r.max_response_tokens
                ),
            );
        }

        for p in self.file_stage_settings().problems() {
            check(false, p);
        }
        if let Some(e) = &self.eval {
            for d in &e.datasets {
                check(
                    self.datasets.contains_key(d),
                    format!("eval.datasets: no dataset named {d:?} in [datasets]"),
                );
                check(
                    self.rewards.iter().any(|r| r.scores(d)),
                    format!("eval.datasets: no [[rewards]] entry scores dataset {d:?}"),
                );
            }
            check(
                !(e.greedy && e.samples > 1),
                "eval.greedy = true with eval.samples > 1: greedy samples are all identical".into(),
            );
            for k in &e.pass_k {
                check(
                    *k <= e.samples,
                    format!(
                        "eval.pass_k: k = {k} needs k <= eval.samples ({})",
                        e.samples
                    ),
                );
            }
        }
        if let Some(t) = &self.trust {
            check(
                !files || t.trusted_keys.is_file(),
                format!(
                    "trust.trusted_keys: file not found: {}",
                    t.trusted_keys.display()
                ),
            );
        }
        problems.extend(self.schedule_metric_problems());
        if problems.is_empty() {
            Ok(())
        } else {
            bail!(
                "{} problem(s):\n  - {}",
                problems.len(),
                problems.join("\n  - ")
            )
        }
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
