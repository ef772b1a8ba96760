//! Which model the KL penalty compares the policy with, loaded when a stage
//! first needs it: the model the run started from, or the policy as the
//! stage started (`grpo.kl.reference`), on its own device and in its own
//! dtype (`grpo.kl.reference_device`, `reference_dtype`). Under `model.lora`
//! the initial model is the policy with its adapters off, no copy.

use anyhow::{Context, Result};
use lmmhost_model::lm::CausalLm;
use tch::Device;

use super::experiment::StageSettings;
use super::lora;
use super::policy::{Placement, Reference};
use super::trainer::Trainer;
use crate::rl::kl::KlReference;

impl Trainer<'_> {
    /// Loads the KL reference `s` asks for unless it is the one held: the
    /// model the run loaded, or a copy of the policy as this stage started
    /// (saved under `<output_dir>/references/`, where a run resumed inside
    /// the stage finds it again).
    pub fn ensure_reference(&mut self, s: &StageSettings) -> Result<()> {
        let place = Placement {
            device: s.grpo.kl.reference_device.clone(),
            dtype: s.grpo.kl.reference_dtype.clone(),
        };
        if self
            .reference
            .as_ref()
            .is_some_and(|r| r.placement != place)
        {
            self.reference = None;
        }
        if lora::reference_is_policy(self.policy.lora.is_some(), &s.grpo.kl) {
            // The base model is the policy with its adapters off: no copy.
            self.reference = None;
            return Ok(());
        }
        let held = self.reference.as_ref().map(|r| r.stage.as_deref());
        match s.grpo.kl.reference {
            KlReference::Initial => {
                if held != Some(None) {
                    self.reference = None;
                    self.reference = Some(Reference::initial(&self.model, &place, self.exp.seed)?);
                }
            }
            KlReference::StageStart => {
                let stage = self.state.stage.clone();
                if held == Some(Some(stage.as_str())) {
                    return Ok(());
                }
                self.reference = None;
                let root = self.out.join("references");
                let dir = root.join(dir_name(&stage));
                let reference = if self.state.stage_step == 0 && self.dp.is_main() {
                    // One stage's copy at a time: the earlier ones are done with.
                    if root.exists() {
                        std::fs::remove_dir_all(&root)
                            .with_context(|| format!("cannot clear {}", root.display()))?;
                    }
                    let r =
                        Reference::stage_start(&self.policy, &self.model, &place, &dir, &stage)?;
                    // The other ranks load the copy rank 0 wrote.
                    self.dp.barrier()?;
                    r
                } else if self.state.stage_step == 0 {
                    self.dp.barrier()?;
                    Reference::saved(&self.model, &place, &dir, &stage)?
                } else {
                    Reference::saved(&self.model, &place, &dir, &stage).with_context(|| {
                        format!(
                            "resuming inside stage {stage:?}, whose KL reference is the model it started from (grpo.kl.reference = \"stage-start\")"
                        )
                    })?
                };
                self.reference = Some(reference);
            }
        }
        Ok(())
    }
}

impl Trainer<'_> {
    /// Runs `f` with the KL reference and its device: the loaded copy, or,
    /// under `model.lora` with the initial model as the reference, the
    /// policy with its adapters off; `None` when there is neither.
    pub fn with_reference<T>(&self, f: impl FnOnce(Option<(&dyn CausalLm, Device)>) -> T) -> T {
        match &self.reference {
            Some(r) => f(Some((r.lm(), r.device))),
            None if self.policy.lora.is_some() => {
                let p = &self.policy;
                p.model
                    .adapters
                    .without_adapters(|| f(Some((p.lm(), p.device))))
            }
            None => f(None),
        }
    }
}

/// A stage name as a directory name.
fn dir_name(stage: &str) -> String {
    stage
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
