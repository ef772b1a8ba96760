//! schedule-staged loaded as a component through the plugin host, driven the
//! way the trainer drives it, on the example schedules in configs/schedules/.

use std::sync::Arc;

use lmmhost_plugin_host::{PluginRuntime, PluginSpec, RuntimeOptions, SchedulePlugin};
use lmmhost_sdk::{Plan, StageKind, TrainState};
use lmmhost_tests::{plugin_wasm, repo_root};

fn schedule(rt: &PluginRuntime, config: &str) -> anyhow::Result<SchedulePlugin> {
    let name = "schedule-staged";
    let mut s = PluginSpec::from_file(name, &plugin_wasm(name), config).unwrap();
    s.log = Arc::new(|_| {});
    SchedulePlugin::new(rt, s)
}

fn example(name: &str) -> String {
    let p = repo_root().join("configs/schedules").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A step's extra metrics: (stage, step in stage) -> name/value pairs.
type Metric<'m> = dyn Fn(&str, u64) -> Vec<(String, f64)> + 'm;

/// The trainer's side: the state after each step, with the dataset sizes and
/// prompts per step the trainer reports, plus `metric(stage, stage_step)`.
struct Trainer<'a> {
    state: TrainState,
    sizes: Vec<(String, f64)>,
    metric: &'a Metric<'a>,
}

impl<'a> Trainer<'a> {
    fn new(sizes: &[(&str, f64)], metric: &'a Metric<'a>) -> Self {
        let sizes: Vec<(String, f64)> = sizes.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        Trainer {
            state: TrainState {
                metrics: sizes.clone(),
                ..TrainState::default()
            },
            sizes,
            metric,
        }
    }

    /// Asks for the next plan and "runs" it.
    fn step(&mut self, s: &mut SchedulePlugin) -> Option<Plan> {
        let plan = s.next_plan(&self.state).unwrap()?;
        let stage_step = if plan.stage == self.state.stage {
            self.state.stage_step + 1
        } else {
            1
        };
        let mut metrics = self.sizes.clone();
        metrics.extend((self.metric)(&plan.stage, stage_step));
        self.state = TrainState {
            global_step: self.state.global_step + 1,
            stage: plan.stage.clone(),
            stage_step,
            metrics,
        };
        Some(plan)
    }

    fn walk(&mut self, s: &mut SchedulePlugin) -> Vec<Plan> {
        let mut out = Vec::new();
        while let Some(p) = self.step(s) {
            out.push(p);
            assert!(out.len() < 10_000, "schedule never ends");
        }
        out
    }
}

fn no_metric(_: &str, _: u64) -> Vec<(String, f64)> {
    Vec::new()
}

/// (stage, steps) runs of consecutive plans; the plan must not change within one.
fn runs(plans: &[Plan]) -> Vec<(Plan, usize)> {
    let mut r: Vec<(Plan, usize)> = Vec::new();
    for p in plans {
        match r.last_mut() {
            Some((last, n)) if last.stage == p.stage => {
                assert_eq!(last, p, "plan changed within stage {}", p.stage);
                *n += 1;
            }
            _ => r.push((p.clone(), 1)),
        }
    }
    r
}

fn lengths(r: &[(Plan, usize)]) -> Vec<(&str, usize)> {
    r.iter().map(|(p, n)| (p.stage.as_str(), *n)).collect()
}

const REVISUAL_SIZES: &[(&str, f64)] = &[
    ("dataset/text_traces/len", 40.0),
    ("batch/prompts", 20.0),
    ("batch/sft_samples", 128.0),
];

#[test]
fn revisual_r1_cold_start_then_mm_rl_with_pad_then_text_rl() {
    let rt = PluginRuntime::new(RuntimeOptions { cache_dir: None }).unwrap();
    let mut s = schedule(&rt, &example("revisual-r1.toml")).unwrap();
    let plans = Trainer::new(REVISUAL_SIZES, &no_metric).walk(&mut s);
    let r = runs(&plans);
    // 5 epochs of 40 traces at sft.batch_size 128 (`batch/sft_samples`, not
    // the 20 prompts of `batch/prompts`) = 2 steps; then 200 and 200.
    assert_eq!(
        lengths(&r),
        [("cold-start", 2), ("mm-rl", 200), ("text-rl", 200)]
    );
    let (sft, mm, text) = (&r[0].0, &r[1].0, &r[2].0);
    assert_eq!(sft.kind, StageKind::Sft);
    assert_eq!(sft.datasets, vec![("text_traces".to_owned(), 1.0)]);
    assert_eq!(sft.overrides.learning_rate, Some(1e-5));
    assert_eq!(mm.kind, StageKind::Grpo);
    assert_eq!(mm.datasets, vec![("mm_math".to_owned(), 1.0)]);
    assert_eq!(mm.overrides.kl_coef, Some(0.0));
    assert_eq!(mm.overrides.pad.enabled, Some(true));
    assert_eq!(mm.overrides.pad.t_low, Some(0.03));
    assert_eq!(mm.overrides.pad.t_high, Some(10.0));
    assert_eq!(mm.overrides.pad.ratio, Some(0.5));
    assert_eq!(
        (mm.overrides.pad.tau_start, mm.overrides.pad.tau_end),
        (Some(1.0), Some(0.3))
    );
    assert_eq!(mm.overrides.group_size, Some(8));
    assert_eq!(text.overrides.freeze_vision, Some(true));
    assert_eq!(text.overrides.kl_coef, Some(2e-3));
    assert_eq!(text.overrides.entropy_coef, Some(0.02));
    assert_eq!(text.overrides.entropy_warmup_steps, Some(20));
    assert_eq!(text.overrides.entropy_decay, Some(0.985));
    assert_eq!(text.overrides.pad.enabled, Some(false));
    // Finished stays finished.
    let done = TrainState {
        global_step: 402,
        stage: "text-rl".into(),
        stage_step: 200,
        metrics: vec![],
    };
    assert_eq!(s.next_plan(&done).unwrap(), None);
}

#[test]
fn lmm_r1_and_rl_cold_start_examples_resolve_epochs_from_trainer_metrics() {
    let rt = PluginRuntime::new(RuntimeOptions { cache_dir: None }).unwrap();
    let sizes = [
        ("dataset/fre/len", 256.0),
        ("dataset/mgt/len", 100.0),
        ("batch/prompts", 128.0),
    ];
    let mut s = schedule(&rt, &example("lmm-r1-fre-mgt.toml")).unwrap();
    let r = runs(&Trainer::new(&sizes, &no_metric).walk(&mut s));
    // FRE: 2 epochs of 256 / 128 = 4 steps; MGT: ceil(2 * 100 / 128) = 2 steps.
    assert_eq!(lengths(&r), [("fre", 4), ("mgt", 2)]);
    let (fre, mgt) = (&r[0].0, &r[1].0);
    assert_eq!(fre.overrides.learning_rate, Some(4e-7));
    assert_eq!(mgt.overrides.learning_rate, Some(4e-7));
    for kv in [
        ("optim.micro_batch_size", "1"),
        ("rollout.max_response_tokens", "8192"),
    ] {
        assert!(
            mgt.overrides
                .extra
                .iter()
                .any(|(k, v)| (k.as_str(), v.as_str()) == kv),
            "{:?}",
            mgt.overrides.extra
        );
    }
    // Top-level overrides apply to both stages.
    for p in [fre, mgt] {
        assert_eq!(p.overrides.group_size, Some(16));
        assert_eq!(p.overrides.kl_coef, Some(1e-3));
        assert_eq!(p.overrides.pad.enabled, Some(false));
    }

    let sizes = [
        ("dataset/cot_traces/len", 50.0),
        ("dataset/mm_math/len", 256.0),
        ("batch/prompts", 128.0),
        ("batch/sft_samples", 64.0),
    ];
    let mut s = schedule(&rt, &example("rl-cold-start.toml")).unwrap();
    let r = runs(&Trainer::new(&sizes, &no_metric).walk(&mut s));
    // SFT: 3 epochs of 50 at sft.batch_size 64 = 3 steps; GRPO: 2 x 256 / 128.
    assert_eq!(lengths(&r), [("sft", 3), ("grpo", 4)]);
    assert_eq!(r[0].0.kind, StageKind::Sft);
    assert_eq!(r[1].0.overrides.group_size, Some(10));

    // Without the sizes, the error names the stage and the missing metric.
    let mut s = schedule(&rt, &example("rl-cold-start.toml")).unwrap();
    let e = format!("{:#}", s.next_plan(&TrainState::default()).unwrap_err());
    assert!(
        e.contains("schedule-staged") && e.contains("dataset/cot_traces/len"),
        "{e}"
    );
}

#[test]
fn save_state_and_load_state_round_trip_through_the_host() {
    let rt = PluginRuntime::new(RuntimeOptions { cache_dir: None }).unwrap();
    let cfg = example("revisual-r1.toml");
    let mut reference = schedule(&rt, &cfg).unwrap();
    let full = Trainer::new(REVISUAL_SIZES, &no_metric).walk(&mut reference);
    // Cut mid cold-start, at the stage boundary and mid mm-rl.
    for cut in [3usize, 10, 11, 250] {
        let mut first = schedule(&rt, &cfg).unwrap();
        let mut trainer = Trainer::new(REVISUAL_SIZES, &no_metric);
        let mut plans: Vec<Plan> = (0..cut)
            .map(|_| trainer.step(&mut first).unwrap())
            .collect();
        let saved = first.save_state().unwrap();
        drop(first);
        // A fresh instance (another process after a restart) continues identically.
        let mut resumed = schedule(&rt, &cfg).unwrap();
        resumed.load_state(&saved).unwrap();
        assert_eq!(resumed.save_state().unwrap(), saved);
        plans.extend(trainer.walk(&mut resumed));
        assert_eq!(plans, full, "resumed after {cut} steps");
    }
    // A state saved under another schedule is refused with the reason.
    let mut other = schedule(&rt, &example("rl-cold-start.toml")).unwrap();
    let saved = other.save_state().unwrap();
    let mut s = schedule(&rt, &cfg).unwrap();
    let e = format!("{:#}", s.load_state(&saved).unwrap_err());
    assert!(
        e.contains("schedule-staged") && e.contains("sft") && e.contains("cold-start"),
        "{e}"
    );
    let e = format!("{:#}", s.load_state(b"not json").unwrap_err());
    assert!(e.contains("load-state") || e.contains("saved state"), "{e}");
}

const COND: &str = r#"
[overrides]
extra = { "grpo.clip_eps_high" = 0.28, "optim.schedule" = "cosine" }

[[stages]]
name = "warm"
kind = "grpo"
datasets = { t = 1.0 }
steps = 100
advance_when = { metric = "reward/accuracy", over_last = 3, at_least = 0.8 }

[[stages]]
name = "main"
kind = "grpo"
datasets = { m = 0.25, n = 0.75 }
steps = 2
[stages.overrides]
extra = { "optim.schedule" = "constant", "rollout.n" = [4, 8] }
"#;

#[test]
fn advance_condition_and_extra_overrides_as_toml_text() {
    let rt = PluginRuntime::new(RuntimeOptions { cache_dir: None }).unwrap();
    let mut s = schedule(&rt, COND).unwrap();
    // Accuracy 0, 1, 1, 0, 1, 1, 1: the 3-step mean first reaches 0.8 after step 7.
    let acc = [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0];
    let metric = |stage: &str, k: u64| {
        if stage == "warm" {
            vec![("reward/accuracy".to_owned(), acc[(k - 1) as usize])]
        } else {
            vec![]
        }
    };
    let r = runs(&Trainer::new(&[], &metric).walk(&mut s));
    assert_eq!(lengths(&r), [("warm", 7), ("main", 2)]);
    // Strings keep their TOML quotes, so the trainer parses each value back
    // to the type the config wrote; the stage's keys win over the top level.
    assert_eq!(
        r[0].0.overrides.extra,
        vec![
            ("grpo.clip_eps_high".to_owned(), "0.28".to_owned()),
            ("optim.schedule".to_owned(), "\"cosine\"".to_owned()),
            // The stage's length (its cap), which the trainer lays schedules over.
            ("optim.stage_steps".to_owned(), "100".to_owned()),
        ]
    );
    assert_eq!(
        r[1].0.overrides.extra,
        vec![
            ("grpo.clip_eps_high".to_owned(), "0.28".to_owned()),
            ("optim.schedule".to_owned(), "\"constant\"".to_owned()),
            ("rollout.n".to_owned(), "[4, 8]".to_owned()),
            ("optim.stage_steps".to_owned(), "2".to_owned()),
        ]
    );
    assert_eq!(
        r[1].0.datasets,
        vec![("m".to_owned(), 0.25), ("n".to_owned(), 0.75)]
    );
    // A config error names the stage and the key.
    let e = format!(
        "{:#}",
        schedule(
            &rt,
            "[[stages]]\nname = \"a\"\nkind = \"grpo\"\ndatasets = { t = 1.0 }\nstep = 3\n"
        )
        .err()
        .unwrap()
    );
    assert!(e.contains("schedule-staged") && e.contains("step"), "{e}");
}
