//! The experiment checked as a whole before any model loads: files that must
//! exist, names that must resolve, ranges and impossible combinations. Every
//! problem is reported at once, each naming its key.

use anyhow::{bail, Result};

use super::schema::Experiment;

impl Experiment {
    /// Every problem found, one per line, each naming its key.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, msg: String| {
            if !ok {
                problems.push(msg);
            }
        };
        check(
            self.model.path.exists(),
            format!("model.path: {} does not exist", self.model.path.display()),
        );
        check(
            self.model.threads != Some(0),
            "model.threads: must be at least 1 (leave it out for all cores)".into(),
        );
        check(
            self.model.workers >= 1,
            "model.workers: must be at least 1".into(),
        );
        for (name, p) in &self.plugins {
            match (&p.wasm, &p.bundle) {
                (Some(w), None) => check(
                    w.is_file(),
                    format!("plugins.{name}.wasm: file not found: {}", w.display()),
                ),
                (None, Some(b)) => {
                    check(
                        b.is_file(),
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
            check(
                p.limits.call_timeout_ms > 0,
                format!("plugins.{name}.limits.call_timeout_ms must be > 0"),
            );
            check(
                p.limits.memory_mb >= 1,
                format!("plugins.{name}.limits.memory_mb must be >= 1"),
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
            check(
                r.weight.is_finite(),
                format!("rewards[{i}].weight must be a finite number"),
            );
        }
        for (name, d) in &self.datasets {
            check(
                plugin(&d.loader),
                format!(
                    "datasets.{name}.loader: no plugin named {:?} in [plugins]",
                    d.loader
                ),
            );
            for f in &d.files {
                check(
                    f.exists(),
                    format!("datasets.{name}.files: {} does not exist", f.display()),
                );
            }
        }
        if let Some(f) = &self.schedule.file {
            check(
                f.is_file(),
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
            r.max_response_tokens >= 1,
            "rollout.max_response_tokens must be >= 1".into(),
        );
        check(
            r.min_new_tokens <= r.max_response_tokens,
            "rollout.min_new_tokens must be <= rollout.max_response_tokens".into(),
        );
        check(
            r.prompts_per_step >= 1,
            "rollout.prompts_per_step must be >= 1".into(),
        );

        let o = &self.optim;
        check(
            o.betas.iter().all(|b| (0.0..1.0).contains(b)),
            "optim.betas must both be in [0, 1)".into(),
        );
        check(
            o.grad_clip >= 0.0,
            "optim.grad_clip must be >= 0 (0 disables clipping)".into(),
        );
        check(
            (0.0..=1.0).contains(&o.min_lr_ratio),
            "optim.min_lr_ratio must be in [0, 1]".into(),
        );
        check(
            o.decay_steps != Some(0),
            "optim.decay_steps must be >= 1 (leave it out to decay over the stage)".into(),
        );
        check(
            self.sft.batch_size != Some(0),
            "sft.batch_size must be >= 1".into(),
        );

        for p in self.file_stage_settings().problems() {
            check(false, p);
        }
        if let Some(e) = &self.eval {
            for d in &e.datasets {
                check(
                    self.datasets.contains_key(d),
                    format!("eval.datasets: no dataset named {d:?} in [datasets]"),
                );
            }
            check(e.samples >= 1, "eval.samples must be >= 1".into());
            check(
                !(e.greedy && e.samples > 1),
                "eval.greedy = true with eval.samples > 1: greedy samples are all identical".into(),
            );
            for k in &e.pass_k {
                check(
                    *k >= 1 && *k <= e.samples,
                    format!(
                        "eval.pass_k: k = {k} needs 1 <= k <= eval.samples ({})",
                        e.samples
                    ),
                );
            }
        }
        if let Some(t) = &self.trust {
            check(
                t.trusted_keys.is_file(),
                format!(
                    "trust.trusted_keys: file not found: {}",
                    t.trusted_keys.display()
                ),
            );
        }
        check(
            self.checkpoint.keep_last >= 1,
            "checkpoint.keep_last must be >= 1".into(),
        );
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
    use super::super::test_files::{error_of, setup};
    use crate::train::experiment::Experiment;

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
        assert!(msg.contains("model.threads: must be at least 1"), "{msg}");
        assert!(msg.contains("model.workers: must be at least 1"), "{msg}");
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
