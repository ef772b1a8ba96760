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
mod tests {
    use super::super::schema_keys::{numeric_keys, Numeric};
    use super::super::test_files::{error_of, setup};
    use super::*;
    use crate::train::experiment::Experiment;

    /// Every numeric key of the schema has a range, and every range is a key.
    #[test]
    fn every_numeric_key_has_a_range() {
        let keys = numeric_keys();
        assert!(keys.len() > 40, "the probe found only {keys:?}");
        let missing: Vec<&str> = keys
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| range_of(k).is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "numeric settings without a range in RANGES: {missing:?}"
        );
        let stale: Vec<&str> = RANGES
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| !keys.iter().any(|(n, _)| n == k))
            .collect();
        assert!(
            stale.is_empty(),
            "RANGES entries the schema does not have: {stale:?}"
        );
    }

    /// A value just outside the range, when the key's type can hold one.
    fn outside(r: &Range, kind: Numeric) -> Option<toml::Value> {
        let v = match (r.min, r.max, kind) {
            (Bound::Inclusive(m), _, Numeric::Integer) if m >= 1.0 => m - 1.0,
            (_, Bound::Inclusive(m), Numeric::Integer) if m.is_finite() => m + 1.0,
            (Bound::Inclusive(m), _, Numeric::Float) => m - 0.5,
            (Bound::Exclusive(m), _, Numeric::Float) => m,
            (_, Bound::Inclusive(m), Numeric::Float) if m.is_finite() => m + 0.5,
            (_, Bound::Exclusive(m), Numeric::Float) => m,
            (Bound::None, Bound::None, Numeric::Float) => f64::NAN,
            _ => return None,
        };
        Some(match kind {
            Numeric::Integer => toml::Value::Integer(v as i64),
            Numeric::Float => toml::Value::Float(v),
        })
    }

    /// `plugins.*.limits.memory_mb` as a path in the test file, and that
    /// path as the error names it.
    fn concrete(pattern: &str) -> (Vec<String>, String) {
        let named = pattern.replacen("plugins.*", "plugins.math", 1).replacen(
            "datasets.*",
            "datasets.train",
            1,
        );
        let parts = named.split('.').map(str::to_string).collect();
        (parts, named.replace("[]", "[0]"))
    }

    fn set(table: &mut toml::Table, parts: &[String], value: toml::Value) {
        let (last, parents) = parts.split_last().unwrap();
        let mut t = table;
        for p in parents {
            let (name, arr) = match p.strip_suffix("[]") {
                Some(n) => (n, true),
                None => (p.as_str(), false),
            };
            let entry = t
                .entry(name.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = if arr {
                entry.as_array_mut().unwrap()[0].as_table_mut().unwrap()
            } else {
                entry.as_table_mut().unwrap()
            };
        }
        match last.strip_suffix("[]") {
            Some(name) => {
                t.insert(
                    name.to_string(),
                    toml::Value::Array(vec![value.clone(), value]),
                );
            }
            None => {
                t.insert(last.clone(), value);
            }
        }
    }

    /// Every numeric key, set just outside its range, is refused with its
    /// key path, its value and the range.
    #[test]
    fn every_range_is_enforced_with_key_and_range() {
        let (dir, p) = setup("[eval]\ndatasets = [\"train\"]\n");
        let base: toml::Table = std::fs::read_to_string(&p).unwrap().parse().unwrap();
        let mut checked = 0;
        for (pattern, kind) in numeric_keys() {
            let r = range_of(&pattern).unwrap();
            let Some(bad) = outside(r, kind) else {
                // Only unsigned integers from 0 up: the parse refuses the rest.
                assert!(
                    kind == Numeric::Integer
                        && matches!(r.min, Bound::Inclusive(m) if m <= 0.0)
                        && matches!(r.max, Bound::None),
                    "{pattern}: no out-of-range value to test"
                );
                continue;
            };
            let (parts, named) = concrete(&pattern);
            let mut t = base.clone();
            set(&mut t, &parts, bad.clone());
            let file = dir.path().join("range.toml");
            std::fs::write(&file, toml::to_string(&t).unwrap()).unwrap();
            let msg = format!("{:#}", Experiment::load(&file).unwrap_err());
            assert!(
                msg.contains(&format!("{named} = ")) && msg.contains(&r.describe()),
                "{pattern} = {bad}: {msg}"
            );
            checked += 1;
        }
        assert!(
            checked > 35,
            "only {checked} keys had an out-of-range value"
        );
    }

    #[test]
    fn the_campaign_inputs_are_refused() {
        let msg = error_of(
            "[optim]\neps = -1e-8\nweight_decay = -0.1\n[grpo]\nloss_constant_length = 0\n",
        );
        assert!(
            msg.contains("optim.eps = -1e-8: must be in (0, 1]"),
            "{msg}"
        );
        assert!(
            msg.contains("optim.weight_decay = -0.1: must be >= 0"),
            "{msg}"
        );
        assert!(
            msg.contains("grpo.loss_constant_length = 0: must be >= 1"),
            "{msg}"
        );
        let msg = error_of("[plugins.math.limits]\nmemory_mb = 17592186044416\n");
        assert!(
            msg.contains("plugins.math.limits.memory_mb = 17592186044416: must be in [1, 4096]"),
            "{msg}"
        );
    }

    #[test]
    fn defaults_are_inside_their_ranges() {
        let (_d, p) = setup("");
        let e = Experiment::load(&p).unwrap();
        let s = e.file_stage_settings();
        let defaults = [
            ("rollout.temperature", s.rollout.temperature),
            ("rollout.top_p", s.rollout.top_p),
            ("optim.eps", s.optim.eps),
            ("optim.weight_decay", s.optim.weight_decay),
            ("optim.betas[]", s.optim.betas[0]),
            ("optim.betas[]", s.optim.betas[1]),
            ("grpo.clip_low", s.grpo.clip_low),
            ("grpo.clip_high", s.grpo.clip_high),
            ("grpo.entropy.decay", s.grpo.entropy.decay),
            ("grpo.pad.t_low", s.grpo.pad.t_low),
            ("grpo.pad.t_high", s.grpo.pad.t_high),
            ("grpo.pad.ratio", s.grpo.pad.ratio),
            (
                "plugins.*.limits.memory_mb",
                e.plugins["math"].limits.memory_mb as f64,
            ),
            ("checkpoint.keep_last", e.checkpoint.keep_last as f64),
            ("distributed.timeout_secs", e.distributed.timeout_secs),
        ];
        for (k, v) in defaults {
            assert!(range_of(k).unwrap().contains(v), "{k} = {v}");
        }
    }

    #[test]
    fn impossible_combinations_are_rejected_together() {
        let msg = error_of(
            "[grpo]\nfreeze_vision = true\nfreeze_language = true\n[grpo.pad]\nenabled = true\n[grpo.dynamic_sampling]\nenabled = true\n[eval]\ndatasets = [\"nope\"]\nsamples = 2\n",
        );
        assert!(
            msg.contains("grpo.freeze_vision and grpo.freeze_language"),
            "{msg}"
        );
        assert!(msg.contains("choose one remedy"), "{msg}");

        assert!(
            msg.contains("eval.datasets: no dataset named \"nope\""),
            "{msg}"
        );
        assert!(
            msg.contains("eval.greedy = true with eval.samples > 1"),
            "{msg}"
        );
    }

    #[test]
    fn zero_threads_or_workers_are_named() {
        let (_d, p) = setup("");
        let text = std::fs::read_to_string(&p).unwrap().replace(
            "path = \"model\"",
            "path = \"model\"\nthreads = 0\nworkers = 0",
        );
        std::fs::write(&p, text).unwrap();
        let msg = format!("{:#}", Experiment::load(&p).unwrap_err());
        assert!(msg.contains("model.threads = 0: must be >= 1"), "{msg}");
        assert!(msg.contains("model.workers = 0: must be >= 1"), "{msg}");
    }

    #[test]
    fn dtypes_are_named() {
        let (_d, p) = setup("[grpo.kl]\nreference_dtype = \"f32-pure\"\n");
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("path = \"model\"", "path = \"model\"\ndtype = \"bf17\"");
        std::fs::write(&p, text).unwrap();
        let msg = format!("{:#}", Experiment::load(&p).unwrap_err());
        assert!(msg.contains("model.dtype: dtype \"bf17\""), "{msg}");
        assert!(
            msg.contains("grpo.kl.reference_dtype: dtype \"f32-pure\""),
            "{msg}"
        );
    }

    #[test]
    fn image_folders_must_exist_and_roots_come_from_images_only() {
        let (dir, p) = setup("");
        let text = std::fs::read_to_string(&p).unwrap().replace(
            "files = [\"data/train.jsonl\"]",
            "files = [\"data/train.jsonl\"]\nimages = [\"data/train.jsonl\", \"data/pics\"]\nconfig = { image_roots = [\"/srv/pics\"] }",
        );
        std::fs::write(&p, text).unwrap();
        let msg = format!("{:#}", Experiment::load(&p).unwrap_err());
        let file = dir.path().join("data/train.jsonl");
        let pics = dir.path().join("data/pics");
        assert!(
            msg.contains(&format!(
                "datasets.train.images: {} is not a directory",
                file.display()
            )),
            "{msg}"
        );
        assert!(
            msg.contains(&format!(
                "datasets.train.images: {} does not exist",
                pics.display()
            )),
            "{msg}"
        );
        assert!(
            msg.contains(
                "datasets.train: set image roots with images = [...], not config.image_roots"
            ),
            "{msg}"
        );
        // In the loader plugin's own table too.
        let msg = error_of("[plugins.jsonl.config]\nimage_roots = [\"/srv\"]\n");
        assert!(
            msg.contains("datasets.train: set image roots with images = [...]"),
            "{msg}"
        );
    }

    #[test]
    fn missing_files_and_dangling_names() {
        let (dir, p) = setup("");
        std::fs::remove_file(dir.path().join("p/math.wasm")).unwrap();
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("loader = \"jsonl\"", "loader = \"jsnl\"");
        std::fs::write(&p, text).unwrap();
        let msg = format!("{:#}", Experiment::load(&p).unwrap_err());
        assert!(msg.contains("plugins.math.wasm: file not found"), "{msg}");
        assert!(
            msg.contains("datasets.train.loader: no plugin named \"jsnl\""),
            "{msg}"
        );
    }
}
