//! A schedule built against the 0.1.0 contract: stage "warmup" (sft) for 2
//! steps, then "rl" (grpo, KL off) for 3, then done; its state is the
//! number of plans handed out.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "schedule-plugin" });

use exports::lmmhost::plugin::schedule::{Overrides, PadOverrides, Plan, StageKind, TrainState};

thread_local! {
    static PLANS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

struct Legacy;

impl exports::lmmhost::plugin::schedule::Guest for Legacy {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn next_plan(state: TrainState) -> Result<Option<Plan>, String> {
        let k = PLANS.with(|p| p.get());
        if k >= 5 {
            return Ok(None);
        }
        PLANS.with(|p| p.set(k + 1));
        let (stage, kind) = if k < 2 {
            ("warmup", StageKind::Sft)
        } else {
            ("rl", StageKind::Grpo)
        };
        Ok(Some(Plan {
            stage: stage.into(),
            kind,
            datasets: vec![("math".into(), 1.0)],
            overrides: Overrides {
                learning_rate: Some(1e-5),
                kl_coef: (k >= 2).then_some(0.0),
                temperature: None,
                top_p: None,
                group_size: None,
                entropy_coef: None,
                entropy_warmup_steps: None,
                entropy_decay: None,
                freeze_vision: None,
                freeze_language: None,
                dynamic_sampling: None,
                pad: PadOverrides {
                    enabled: None,
                    t_low: None,
                    t_high: None,
                    ratio: None,
                    tau_start: None,
                    tau_end: None,
                },
                extra: vec![("seen.step".into(), state.global_step.to_string())],
            },
        }))
    }

    fn save_state() -> Vec<u8> {
        PLANS.with(|p| p.get()).to_le_bytes().to_vec()
    }

    fn load_state(state: Vec<u8>) -> Result<(), String> {
        let b: [u8; 8] = state
            .as_slice()
            .try_into()
            .map_err(|_| format!("expected 8 bytes, got {}", state.len()))?;
        PLANS.with(|p| p.set(u64::from_le_bytes(b)));
        Ok(())
    }
}

export!(Legacy);
