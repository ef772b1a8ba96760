//! Per-stage settings: the experiment's `[rollout]`, `[optim]`, `[grpo]` and
//! `[sft]` with the schedule plan's overrides applied, and the checks every
//! stage's settings must pass.
//!
//! [`OVERRIDE_KEYS`] is the one list of the typed overrides a stage may set
//! and the experiment key each one sets. The WIT record `overrides`, the
//! SDK's `Overrides` and schedule-staged's `[overrides]` table spell the same
//! names; host/tests/stage_overrides.rs checks that they agree with it.

use anyhow::{bail, Context, Result};
use lmmhost_sdk as sdk;
use serde::Deserialize;

use super::schema::{path_error, Experiment, Grpo, Optim, Rollout, Sft};
use super::validate::range_problems;
use crate::rl::advantage::AdvantageEstimator;
use crate::rl::policy_loss::PolicyLoss;

/// The settings one step runs with: the experiment file's sections with the
/// schedule plan's overrides applied.
#[derive(Debug, Clone)]
pub struct StageSettings {
    pub rollout: Rollout,
    pub optim: Optim,
    pub grpo: Grpo,
    pub sft: Sft,
}

/// The sections a stage may change (`extra` keys must fall inside them).
#[derive(Deserialize)]
struct Sections {
    #[serde(default)]
    rollout: Rollout,
    #[serde(default)]
    optim: Optim,
    #[serde(default)]
    grpo: Grpo,
    #[serde(default)]
    sft: Sft,
}

const STAGE_SECTIONS: [&str; 4] = ["rollout", "optim", "grpo", "sft"];

/// One typed stage override.
pub struct OverrideKey {
    /// Its name in the SDK's `Overrides` (`pad.` for a field of `PadOverrides`).
    pub name: &'static str,
    /// The experiment key it sets.
    pub key: &'static str,
    /// Its value in a plan, when set.
    pub value: fn(&sdk::Overrides) -> Option<toml::Value>,
}

impl OverrideKey {
    const fn new(
        name: &'static str,
        key: &'static str,
        value: fn(&sdk::Overrides) -> Option<toml::Value>,
    ) -> OverrideKey {
        OverrideKey { name, key, value }
    }
}

fn float(v: Option<f64>) -> Option<toml::Value> {
    v.map(toml::Value::Float)
}

fn boolean(v: Option<bool>) -> Option<toml::Value> {
    v.map(toml::Value::Boolean)
}

/// Counts beyond TOML's integers (2^63) saturate; no setting reaches them.
fn integer(v: Option<u64>) -> Option<toml::Value> {
    v.map(|v| toml::Value::Integer(i64::try_from(v).unwrap_or(i64::MAX)))
}

/// Every typed override, in the order of the WIT record.
pub const OVERRIDE_KEYS: [OverrideKey; 17] = [
    OverrideKey::new("learning_rate", "optim.lr", |o| float(o.learning_rate)),
    OverrideKey::new("kl_coef", "grpo.kl.coef", |o| float(o.kl_coef)),
    OverrideKey::new("temperature", "rollout.temperature", |o| {
        float(o.temperature)
    }),
    OverrideKey::new("top_p", "rollout.top_p", |o| float(o.top_p)),
    OverrideKey::new("group_size", "rollout.group_size", |o| {
        integer(o.group_size.map(u64::from))
    }),
    OverrideKey::new("entropy_coef", "grpo.entropy.coef", |o| {
        float(o.entropy_coef)
    }),
    OverrideKey::new("entropy_warmup_steps", "grpo.entropy.warmup_steps", |o| {
        integer(o.entropy_warmup_steps)
    }),
    OverrideKey::new("entropy_decay", "grpo.entropy.decay", |o| {
        float(o.entropy_decay)
    }),
    OverrideKey::new("freeze_vision", "grpo.freeze_vision", |o| {
        boolean(o.freeze_vision)
    }),
    OverrideKey::new("freeze_language", "grpo.freeze_language", |o| {
        boolean(o.freeze_language)
    }),
    OverrideKey::new("dynamic_sampling", "grpo.dynamic_sampling.enabled", |o| {
        boolean(o.dynamic_sampling)
    }),
    OverrideKey::new("pad.enabled", "grpo.pad.enabled", |o| {
        boolean(o.pad.enabled)
    }),
    OverrideKey::new("pad.t_low", "grpo.pad.t_low", |o| float(o.pad.t_low)),
    OverrideKey::new("pad.t_high", "grpo.pad.t_high", |o| float(o.pad.t_high)),
    OverrideKey::new("pad.ratio", "grpo.pad.ratio", |o| float(o.pad.ratio)),
    OverrideKey::new("pad.tau_start", "grpo.pad.tau_start", |o| {
        float(o.pad.tau_start)
    }),
    OverrideKey::new("pad.tau_end", "grpo.pad.tau_end", |o| float(o.pad.tau_end)),
];

/// Sets `value` at the dotted `key` of `table`.
pub(super) fn set_dotted(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    let (last, parents) = parts.split_last().context("empty key")?;
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .with_context(|| format!("`{p}` in `{key}` is not a table"))?;
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

/// A TOML value written as text (`0.28`, `"k1"`, `[1, 2]`).
pub(super) fn toml_value(text: &str) -> Result<toml::Value> {
    let parsed: toml::Table = format!("v = {text}")
        .parse()
        .map_err(|e| anyhow::anyhow!("value {text:?} is not a TOML value: {e}"))?;
    parsed.get("v").cloned().context("empty value")
}

impl Experiment {
    /// The settings as the file sets them, before any stage override.
    pub fn file_stage_settings(&self) -> StageSettings {
        StageSettings {
            rollout: self.rollout.clone(),
            optim: self.optim.clone(),
            grpo: self.grpo.clone(),
            sft: self.sft.clone(),
        }
    }

    /// The effective settings for `plan`: the file's sections with `extra`
    /// (any key of rollout/optim/grpo/sft) set, then the typed overrides
    /// ([`OVERRIDE_KEYS`]), re-read with the same checks as the file.
    pub fn stage_settings(&self, plan: &sdk::Plan) -> Result<StageSettings> {
        self.check_rewarded(plan)?;
        let o = &plan.overrides;
        let ctx = || format!("stage {:?}: overrides", plan.stage);
        let typed: Vec<(&str, toml::Value)> = OVERRIDE_KEYS
            .iter()
            .filter_map(|k| (k.value)(o).map(|v| (k.key, v)))
            .collect();
        let settings = if o.extra.is_empty() && typed.is_empty() {
            self.file_stage_settings()
        } else {
            let mut raw = toml::Table::new();
            for s in STAGE_SECTIONS {
                if let Some(v) = self.raw.get(s) {
                    raw.insert(s.to_string(), v.clone());
                }
            }
            for (key, value) in &o.extra {
                let section = key.split('.').next().unwrap_or_default();
                if !STAGE_SECTIONS.contains(&section) || !key.contains('.') {
                    bail!(
                        "{}: extra key {key:?} cannot change per stage (allowed: {})",
                        ctx(),
                        STAGE_SECTIONS.map(|s| format!("{s}.*")).join(", ")
                    );
                }
                toml_value(value)
                    .and_then(|v| set_dotted(&mut raw, key, v))
                    .with_context(|| format!("{}: extra key {key:?}", ctx()))?;
            }
            for (key, value) in typed {
                set_dotted(&mut raw, key, value).with_context(ctx)?;
            }
            let out_of_range = range_problems(&raw);
            if !out_of_range.is_empty() {
                bail!("{}: {}", ctx(), out_of_range.join("; "));
            }
            let s: Sections = serde_path_to_error::deserialize(toml::Value::Table(raw))
                .map_err(|e| anyhow::anyhow!("{}: {}", ctx(), path_error(e)))?;
            StageSettings {
                rollout: s.rollout,
                optim: s.optim,
                grpo: s.grpo,
                sft: s.sft,
            }
        };
        let mut problems = settings.problems();
        if let Some(l) = &self.model.lora {
            let g = &settings.grpo;
            problems.extend(crate::train::lora::conflicts(
                l,
                &self.model.dtype,
                g.freeze_vision,
                g.freeze_language,
                "grpo.",
            ));
        }
        if !problems.is_empty() {
            bail!("{}: {}", ctx(), problems.join("; "));
        }
        Ok(settings)
    }
}

impl Experiment {
    /// What a step takes, reported to the schedule for stages sized in
    /// epochs: the prompts per step, and the SFT batch where the file sets one.
    pub fn batch_metrics(&self) -> Vec<(String, f64)> {
        let mut out = vec![(
            "batch/prompts".to_string(),
            self.rollout.prompts_per_step as f64,
        )];
        if let Some(n) = self.sft.batch_size {
            out.push(("batch/sft_samples".into(), n as f64));
        }
        out
    }

    /// A GRPO stage draws only from datasets some reward scores: a sample
    /// no reward scores would train on a reward of zero.
    fn check_rewarded(&self, plan: &sdk::Plan) -> Result<()> {
        if plan.kind != sdk::StageKind::Grpo {
            return Ok(());
        }
        let unscored: Vec<&str> = plan
            .datasets
            .iter()
            .filter(|(name, weight)| *weight > 0.0 && !self.rewards.iter().any(|r| r.scores(name)))
            .map(|(name, _)| name.as_str())
            .collect();
        if !unscored.is_empty() {
            bail!(
                "stage {:?} (GRPO) draws from dataset {} that no [[rewards]] entry scores \
                 (add it to a reward's `datasets`, or leave `datasets` out to score every dataset)",
                plan.stage,
                unscored.join(", ")
            );
        }
        Ok(())
    }
}

impl StageSettings {
    /// Impossible combinations (also checked for the file's own settings).
    pub fn problems(&self) -> Vec<String> {
        let (r, g, o) = (&self.rollout, &self.grpo, &self.optim);
        let mut out = Vec::new();
        let mut check = |ok: bool, msg: &str| {
            if !ok {
                out.push(msg.to_string());
            }
        };
        check(
            !(g.freeze_vision && g.freeze_language),
            "grpo.freeze_vision and grpo.freeze_language: freezing both leaves nothing to train",
        );
        check(
            !(g.pad.enabled && g.dynamic_sampling.enabled),
            "grpo.pad.enabled and grpo.dynamic_sampling.enabled: choose one remedy for zero-advantage groups",
        );
        check(
            !(g.advantage == AdvantageEstimator::GroupNorm && r.group_size == 1),
            "rollout.group_size = 1 with grpo.advantage = \"group-norm\": a group of one has no advantage",
        );
        check(
            !(o.warmup_ratio.is_some() && o.warmup_steps > 0),
            "optim.warmup_ratio and optim.warmup_steps: set one of them",
        );
        check(
            g.dual_clip.is_none() || g.policy_loss == PolicyLoss::PpoClip,
            "grpo.dual_clip applies to grpo.policy_loss = \"ppo-clip\" only",
        );
        check(
            g.advantage_clip.is_none_or(|[lo, hi]| lo < hi),
            "grpo.advantage_clip must be [low, high] with low < high",
        );
        check(
            !g.freeze_prefixes.iter().any(String::is_empty),
            "grpo.freeze_prefixes: an empty prefix would freeze every parameter",
        );
        if let Err(e) = g.pad.validate() {
            out.push(format!("grpo.{e}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_files::setup;
    use super::*;
    use crate::rl::kl::{KlEstimator, KlPlacement};

    fn plan(overrides: lmmhost_sdk::Overrides) -> lmmhost_sdk::Plan {
        lmmhost_sdk::Plan {
            stage: "mgt".into(),
            kind: lmmhost_sdk::StageKind::Grpo,
            datasets: vec![("train".into(), 1.0)],
            overrides,
        }
    }

    #[test]
    fn stage_overrides_typed_and_extra() {
        let (_d, p) = setup("[grpo]\nclip_high = 0.3\n[rollout]\ntop_k = 5\n");
        let e = Experiment::load(&p).unwrap();
        let mut o = lmmhost_sdk::Overrides {
            learning_rate: Some(4e-7),
            kl_coef: Some(1e-3),
            group_size: Some(16),
            freeze_vision: Some(true),
            ..Default::default()
        };
        o.pad.enabled = Some(true);
        o.pad.ratio = Some(0.25);
        o.extra = vec![
            ("grpo.kl.estimator".into(), "\"k1\"".into()),
            ("grpo.kl.placement".into(), "\"reward\"".into()),
            ("optim.micro_batch_size".into(), "4".into()),
        ];
        let s = e.stage_settings(&plan(o)).unwrap();
        assert_eq!(s.optim.lr, 4e-7);
        assert_eq!(s.optim.micro_batch_size, 4);
        assert_eq!(s.grpo.kl.coef, 1e-3);
        assert_eq!(s.grpo.kl.estimator, KlEstimator::K1);
        assert_eq!(s.grpo.kl.placement, KlPlacement::Reward);
        assert_eq!(s.rollout.group_size, 16);
        assert!(s.grpo.freeze_vision && s.grpo.pad.enabled);
        assert_eq!(s.grpo.pad.ratio, 0.25);
        // The file's own settings survive the re-read.
        assert_eq!(s.grpo.clip_high, 0.3);
        assert_eq!(s.rollout.top_k, 5);
    }

    #[test]
    fn bad_stage_overrides_are_named() {
        let (_d, p) = setup("");
        let e = Experiment::load(&p).unwrap();
        let with_extra = |k: &str, v: &str| {
            let o = lmmhost_sdk::Overrides {
                extra: vec![(k.into(), v.into())],
                ..Default::default()
            };
            format!("{:#}", e.stage_settings(&plan(o)).unwrap_err())
        };
        let msg = with_extra("model.path", "\"x\"");
        assert!(
            msg.contains("\"model.path\" cannot change per stage"),
            "{msg}"
        );
        let msg = with_extra("grpo.clip_lo", "0.1");
        assert!(
            msg.contains("stage \"mgt\"") && msg.contains("clip_lo"),
            "{msg}"
        );
        let msg = with_extra("grpo.clip_low", "1.5");
        assert!(
            msg.contains("grpo.clip_low = 1.5: must be in (0, 1)"),
            "{msg}"
        );
        let o = lmmhost_sdk::Overrides {
            dynamic_sampling: Some(true),
            pad: lmmhost_sdk::PadOverrides {
                enabled: Some(true),
                ..Default::default()
            },
            ..Default::default()
        };
        let msg = format!("{:#}", e.stage_settings(&plan(o)).unwrap_err());
        assert!(msg.contains("choose one remedy"), "{msg}");
    }

    /// Each typed override, set alone, is taken and changes the setting it
    /// names (a key that named nothing would fail the re-read).
    #[test]
    fn every_override_key_sets_its_setting() {
        let (_d, p) = setup("");
        let e = Experiment::load(&p).unwrap();
        let file = format!("{:?}", e.file_stage_settings());
        let set = |name: &str| {
            let mut o = lmmhost_sdk::Overrides::default();
            match name {
                "learning_rate" => o.learning_rate = Some(0.25),
                "kl_coef" => o.kl_coef = Some(0.25),
                "temperature" => o.temperature = Some(0.25),
                "top_p" => o.top_p = Some(0.25),
                "group_size" => o.group_size = Some(3),
                "entropy_coef" => o.entropy_coef = Some(0.25),
                "entropy_warmup_steps" => o.entropy_warmup_steps = Some(3),
                "entropy_decay" => o.entropy_decay = Some(0.25),
                "freeze_vision" => o.freeze_vision = Some(true),
                "freeze_language" => o.freeze_language = Some(true),
                "dynamic_sampling" => o.dynamic_sampling = Some(true),
                "pad.enabled" => o.pad.enabled = Some(true),
                "pad.t_low" => o.pad.t_low = Some(0.25),
                "pad.t_high" => o.pad.t_high = Some(0.25),
                "pad.ratio" => o.pad.ratio = Some(0.25),
                "pad.tau_start" => o.pad.tau_start = Some(0.25),
                "pad.tau_end" => o.pad.tau_end = Some(0.25),
                other => panic!("no test value for override {other}"),
            }
            o
        };
        for k in &OVERRIDE_KEYS {
            let o = set(k.name);
            assert!((k.value)(&o).is_some(), "{}", k.name);
            let s = format!("{:?}", e.stage_settings(&plan(o)).unwrap());
            // The first difference is in the value of the key's last part.
            let at = file
                .bytes()
                .zip(s.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            assert!(at < s.len(), "{} did not change {}", k.name, k.key);
            let before = &s[..s[..at].rfind(": ").unwrap()];
            let field = before.rsplit([' ', '{', ',']).next().unwrap();
            assert_eq!(field, k.key.rsplit('.').next().unwrap(), "{}", k.name);
        }
    }
}
