//! The schedule driven the way the trainer drives it: one `next_plan` per
//! optimizer step, with the stage and step count of the previous plan.
//! (Test cases partly adapted from an earlier helper's draft.)

use crate::Staged;
use lmmhost_sdk::{Plan, Schedule, StageKind, TrainState};

/// The metrics of a step: (global step, stage, step in stage) -> name/value pairs.
type Metrics<'a> = dyn Fn(u64, &str, u64) -> Vec<(&'static str, f64)> + 'a;

/// A minimal trainer: asks for a plan, "runs" the step, reports the metrics
/// `metrics(global_step, stage, stage_step)` of that step to the next call.
struct Host {
    state: TrainState,
}

impl Host {
    /// Before the first step the trainer already reports the dataset sizes.
    fn new(metrics: &Metrics<'_>) -> Self {
        let state = TrainState {
            metrics: metrics(0, "", 0)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            ..TrainState::default()
        };
        Host { state }
    }

    fn step(&mut self, s: &mut Staged, metrics: &Metrics<'_>) -> Option<Plan> {
        let plan = s.next_plan(&self.state).unwrap()?;
        let stage_step = if plan.stage == self.state.stage {
            self.state.stage_step + 1
        } else {
            1
        };
        let global = self.state.global_step + 1;
        self.state = TrainState {
            global_step: global,
            stage: plan.stage.clone(),
            stage_step,
            metrics: metrics(global, &plan.stage, stage_step)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        };
        Some(plan)
    }
}

/// Every plan until the schedule ends.
fn walk(s: &mut Staged, metrics: &Metrics<'_>) -> Vec<Plan> {
    let mut host = Host::new(metrics);
    let mut out = Vec::new();
    while let Some(p) = host.step(s, metrics) {
        out.push(p);
        assert!(out.len() < 100_000, "schedule never ends");
    }
    out
}

/// Consecutive plans grouped by stage: (first plan of the run, run length);
/// also checks the plan does not change within a stage.
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

fn seq(plans: &[Plan]) -> Vec<(String, usize)> {
    runs(plans).into_iter().map(|(p, n)| (p.stage, n)).collect()
}

fn pairs(v: &[(&str, usize)]) -> Vec<(String, usize)> {
    v.iter().map(|(s, n)| (s.to_string(), *n)).collect()
}

fn none(_: u64, _: &str, _: u64) -> Vec<(&'static str, f64)> {
    Vec::new()
}

const THREE: &str = r#"
[overrides]
temperature = 0.9
group_size = 8

[[stages]]
name = "sft"
kind = "sft"
datasets = { traces = 1.0 }
steps = 3
[stages.overrides]
learning_rate = 1e-5
freeze_vision = false

[[stages]]
name = "mm"
kind = "grpo"
datasets = { geo = 0.25, chart = 0.75, unused = 0.0 }
epochs = 2.5
[stages.overrides]
learning_rate = 1e-6
kl_coef = 0.0
pad = { enabled = true, t_low = 0.05, t_high = 5.0, ratio = 0.5, tau_start = 1.0, tau_end = 0.3 }
extra = { "grpo.clip_eps_high" = 0.28, "lr.schedule" = "cos \"x\"", betas = [0.9, 0.99], on = true }

[[stages]]
name = "text"
kind = "grpo"
datasets = { math = 1 }
steps = 2
[stages.overrides]
temperature = 1.0
freeze_vision = true
kl_coef = 2e-3
entropy_coef = 0.02
entropy_warmup_steps = 5
entropy_decay = 0.985
dynamic_sampling = true
freeze_language = false
top_p = 0.95
"#;

/// Dataset sizes and batch size as the trainer reports them.
fn sizes(_: u64, _: &str, _: u64) -> Vec<(&'static str, f64)> {
    vec![
        ("dataset/geo/len", 20.0),
        ("dataset/chart/len", 13.0),
        ("dataset/unused/len", 1000.0),
        ("batch/prompts", 10.0),
    ]
}

#[test]
fn walks_three_stages_with_their_plans() {
    let mut s = Staged::new(THREE).unwrap();
    let plans = walk(&mut s, &sizes);
    // mm: 2.5 epochs * (20 + 13) samples / 10 per step = 8.25 -> 9 steps
    // (`unused` has weight 0 and does not count).
    assert_eq!(seq(&plans), pairs(&[("sft", 3), ("mm", 9), ("text", 2)]));
    let r = runs(&plans);
    let (sft, mm, text) = (&r[0].0, &r[1].0, &r[2].0);
    assert_eq!(sft.kind, StageKind::Sft);
    assert_eq!(sft.datasets, vec![("traces".to_owned(), 1.0)]);
    assert_eq!(sft.overrides.learning_rate, Some(1e-5));
    assert_eq!(
        sft.overrides.temperature,
        Some(0.9),
        "top-level override applies"
    );
    assert_eq!(sft.overrides.group_size, Some(8));
    assert_eq!(sft.overrides.freeze_vision, Some(false));
    assert_eq!(sft.overrides.kl_coef, None);

    assert_eq!(mm.kind, StageKind::Grpo);
    assert_eq!(
        mm.datasets,
        vec![
            ("chart".to_owned(), 0.75),
            ("geo".to_owned(), 0.25),
            ("unused".to_owned(), 0.0)
        ]
    );
    assert_eq!(mm.overrides.learning_rate, Some(1e-6));
    assert_eq!(mm.overrides.kl_coef, Some(0.0));
    assert_eq!(mm.overrides.pad.enabled, Some(true));
    assert_eq!(mm.overrides.pad.t_low, Some(0.05));
    assert_eq!(mm.overrides.pad.t_high, Some(5.0));
    assert_eq!(mm.overrides.pad.ratio, Some(0.5));
    assert_eq!(mm.overrides.pad.tau_start, Some(1.0));
    assert_eq!(mm.overrides.pad.tau_end, Some(0.3));
    assert_eq!(
        mm.overrides.extra,
        vec![
            ("betas".to_owned(), "[0.9, 0.99]".to_owned()),
            ("grpo.clip_eps_high".to_owned(), "0.28".to_owned()),
            // toml writes a string holding `"` as a literal string.
            ("lr.schedule".to_owned(), r#"'cos "x"'"#.to_owned()),
            ("on".to_owned(), "true".to_owned()),
            // The stage's length, added by the schedule.
            ("optim.stage_steps".to_owned(), "9".to_owned()),
        ]
    );
    // Each value is TOML text that parses back to what the config wrote.
    for (k, v) in &mm.overrides.extra {
        let back: toml::Table = toml::from_str(&format!("v = {v}")).unwrap();
        assert!(back.contains_key("v"), "{k} = {v}");
    }
    let back: toml::Table = toml::from_str(&format!("v = {}", mm.overrides.extra[2].1)).unwrap();
    assert_eq!(back["v"].as_str(), Some("cos \"x\""));

    assert_eq!(text.datasets, vec![("math".to_owned(), 1.0)]);
    assert_eq!(text.overrides.temperature, Some(1.0), "stage override wins");
    assert_eq!(text.overrides.group_size, Some(8));
    assert_eq!(text.overrides.freeze_vision, Some(true));
    assert_eq!(text.overrides.freeze_language, Some(false));
    assert_eq!(text.overrides.kl_coef, Some(2e-3));
    assert_eq!(text.overrides.entropy_coef, Some(0.02));
    assert_eq!(text.overrides.entropy_warmup_steps, Some(5));
    assert_eq!(text.overrides.entropy_decay, Some(0.985));
    assert_eq!(text.overrides.dynamic_sampling, Some(true));
    assert_eq!(text.overrides.top_p, Some(0.95));
    assert_eq!(text.overrides.pad.enabled, None);
    assert_eq!(
        text.overrides.extra,
        vec![("optim.stage_steps".to_owned(), "2".to_owned())]
    );
    // Finished: stays finished.
    assert_eq!(s.next_plan(&TrainState::default()).unwrap(), None);
}

#[test]
fn asking_twice_for_the_same_state_does_not_advance() {
    let mut s = Staged::new(THREE).unwrap();
    let st = TrainState {
        global_step: 2,
        stage: "sft".into(),
        stage_step: 2,
        metrics: vec![],
    };
    for _ in 0..4 {
        assert_eq!(s.next_plan(&st).unwrap().unwrap().stage, "sft");
    }
    let st3 = TrainState {
        stage_step: 3,
        metrics: sizes(3, "sft", 3)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        ..st
    };
    assert_eq!(s.next_plan(&st3).unwrap().unwrap().stage, "mm");
    assert_eq!(s.next_plan(&st3).unwrap().unwrap().stage, "mm");
}

const COND: &str = r#"
[[stages]]
name = "warm"
kind = "grpo"
datasets = { t = 1.0 }
steps = 100
advance_when = { metric = "accuracy", over_last = 3, at_least = 0.8 }
[[stages]]
name = "main"
kind = "grpo"
datasets = { m = 1.0 }
steps = 2
"#;

#[test]
fn advances_when_the_window_mean_reaches_the_bound() {
    // Accuracy 0, 1, 1, 0, 1, 1, 1: 3-step means 0.67 until step 7 (1.0).
    let acc = [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0];
    let m = |_: u64, stage: &str, k: u64| {
        if stage == "warm" {
            vec![("accuracy", acc[(k - 1) as usize])]
        } else {
            vec![]
        }
    };
    let mut s = Staged::new(COND).unwrap();
    assert_eq!(seq(&walk(&mut s, &m)), pairs(&[("warm", 7), ("main", 2)]));
}

#[test]
fn below_the_bound_or_without_the_metric_the_cap_applies() {
    // Alternating 0.7 / 0.8: every 3-step mean is 0.733 or 0.767.
    let alt =
        |_: u64, _: &str, k: u64| vec![("accuracy", if k.is_multiple_of(2) { 0.7 } else { 0.8 })];
    let mut s = Staged::new(COND).unwrap();
    assert_eq!(
        seq(&walk(&mut s, &alt)),
        pairs(&[("warm", 100), ("main", 2)])
    );
    // A metric the trainer does not report at all is an error naming what it reports.
    let other = |_: u64, _: &str, _: u64| vec![("reward/mean", 1.0)];
    let mut s = Staged::new(COND).unwrap();
    let mut host = Host::new(&other);
    host.step(&mut s, &other).unwrap();
    let e = s.next_plan(&host.state).unwrap_err();
    assert!(
        e.contains("advance_when.metric `accuracy` is not among the metrics")
            && e.contains("reward/mean"),
        "{e}"
    );
    // An eval metric is missing from most steps: not an error.
    let cond_eval = COND.replace("metric = \"accuracy\"", "metric = \"eval/geo/accuracy\"");
    assert_ne!(cond_eval, COND);
    let mut s = Staged::new(&cond_eval).unwrap();
    let mut host = Host::new(&other);
    host.step(&mut s, &other).unwrap();
    s.next_plan(&host.state).unwrap();
    // Steps without the metric, once it was reported, do not count towards the window.
    let sparse = |_: u64, _: &str, k: u64| {
        if k.is_multiple_of(10) {
            vec![("accuracy", 1.0)]
        } else {
            vec![]
        }
    };
    let mut s = Staged::new(COND).unwrap();
    assert_eq!(
        seq(&walk(&mut s, &sparse)),
        pairs(&[("warm", 30), ("main", 2)])
    );
}

#[test]
fn save_and_restore_mid_stage_continues_identically() {
    let m = |_: u64, stage: &str, k: u64| {
        if stage == "warm" {
            vec![("accuracy", if k < 6 { 0.2 } else { 1.0 })]
        } else {
            vec![]
        }
    };
    let mut reference = Staged::new(COND).unwrap();
    let full = walk(&mut reference, &m);
    assert_eq!(seq(&full), pairs(&[("warm", 8), ("main", 2)]));

    for cut in [1usize, 4, 7, 8, 9] {
        let mut first = Staged::new(COND).unwrap();
        let mut host = Host::new(&m);
        let mut plans = Vec::new();
        for _ in 0..cut {
            plans.push(host.step(&mut first, &m).unwrap());
        }
        let saved = first.save_state();
        let mut resumed = Staged::new(COND).unwrap();
        resumed.load_state(&saved).unwrap();
        assert_eq!(resumed.save_state(), saved);
        while let Some(p) = host.step(&mut resumed, &m) {
            plans.push(p);
        }
        assert_eq!(plans, full, "resumed after {cut} steps");
    }
}

#[test]
fn restore_errors_and_stage_mismatch() {
    let three = Staged::new(THREE).unwrap();
    let mut cond = Staged::new(COND).unwrap();
    let e = cond.load_state(&three.save_state()).unwrap_err();
    assert!(e.contains("\"sft\"") && e.contains("\"warm\""), "{e}");
    let e = cond.load_state(b"{not json").unwrap_err();
    assert!(e.contains("not valid"), "{e}");
    // The trainer resumed at a stage the schedule is not at (state not restored).
    let e = cond
        .next_plan(&TrainState {
            global_step: 50,
            stage: "main".into(),
            stage_step: 3,
            metrics: vec![],
        })
        .unwrap_err();
    assert!(
        e.contains("\"main\"") && e.contains("stage 0 (\"warm\")"),
        "{e}"
    );
}

#[test]
fn epochs_need_sizes_from_the_trainer_or_the_config() {
    let mut s = Staged::new(THREE).unwrap();
    let mut host = Host::new(&none);
    for _ in 0..3 {
        host.step(&mut s, &none);
    }
    let e = s.next_plan(&host.state).unwrap_err();
    assert!(
        e.contains("stage 1 (\"mm\")") && e.contains("dataset/chart/len"),
        "{e}"
    );
    let only_lens =
        |_: u64, _: &str, _: u64| vec![("dataset/geo/len", 20.0), ("dataset/chart/len", 13.0)];
    let mut s = Staged::new(THREE).unwrap();
    let mut host = Host::new(&only_lens);
    for _ in 0..3 {
        host.step(&mut s, &only_lens);
    }
    let e = s.next_plan(&host.state).unwrap_err();
    assert!(
        e.contains("stage 1 (\"mm\")") && e.contains("batch/prompts"),
        "{e}"
    );
    // Sizes in the config win over the trainer's numbers: 2.5 * (40 + 13) / 5 = 26.5 -> 27.
    let cfg = format!("samples_per_step = 5\n[dataset_sizes]\ngeo = 40\n{THREE}");
    let mut s = Staged::new(&cfg).unwrap();
    assert_eq!(
        seq(&walk(&mut s, &sizes)),
        pairs(&[("sft", 3), ("mm", 27), ("text", 2)])
    );
}

#[test]
fn config_errors_name_stage_and_key() {
    let ok = "[[stages]]\nname='a'\nkind='sft'\ndatasets={x=1.0}\nsteps=1\n";
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            "[[stages]]\nname='a'\nkind='grpo'\ndatasets={x=1.0}\n".into(),
            vec!["stage 0 (\"a\")", "steps"],
        ),
        (
            "[[stages]]\nname='a'\nkind='rl'\ndatasets={x=1.0}\nsteps=1\n".into(),
            vec!["stage 0 (\"a\")", "`kind`", "rl"],
        ),
        (format!("{ok}stepz=2\n"), vec!["stage 0 (\"a\")", "stepz"]),
        (
            format!("{ok}[[stages]]\nname='b'\nkind='sft'\ndatasets={{x=1.0}}\nsteps='ten'\n"),
            vec!["stage 1 (\"b\")", "`steps`"],
        ),
        (
            format!("{ok}[[stages]]\nname='b'\nkind='sft'\ndatasets={{x=-1.0}}\nsteps=1\n"),
            vec!["stage 1 (\"b\")", "datasets.x"],
        ),
        (
            format!("{ok}[stages.overrides]\nlerning_rate=1.0\n"),
            vec!["stage 0 (\"a\")", "lerning_rate"],
        ),
        (
            format!("{ok}[stages.overrides]\nlearning_rate='fast'\n"),
            vec!["stage 0 (\"a\")", "`learning_rate`"],
        ),
        (
            format!("{ok}[stages.overrides]\ngroup_size=0\n"),
            vec!["stage 0 (\"a\")", "group_size"],
        ),
        (
            format!("{ok}[stages.overrides]\npad={{ratio=2.0}}\n"),
            vec!["stage 0 (\"a\")", "pad.ratio"],
        ),
        (
            format!("{ok}[stages.overrides]\npad={{t_low=0.5, t_high=0.1}}\n"),
            vec!["stage 0 (\"a\")", "pad.t_low"],
        ),
        (
            format!("{ok}[stages.overrides]\npad={{enabled='yes'}}\n"),
            vec!["stage 0 (\"a\")", "`pad`"],
        ),
        (
            format!("{ok}advance_when={{metric='acc',over_last=3}}\n"),
            vec!["stage 0 (\"a\")", "at_least"],
        ),
        (
            format!("{ok}advance_when={{metric='acc',over_last=0,at_least=1}}\n"),
            vec!["stage 0 (\"a\")", "over_last"],
        ),
        (
            format!("{ok}advance_when={{metric='acc',over_last=3,at_least=1,when='x'}}\n"),
            vec!["stage 0 (\"a\")", "when"],
        ),
        (
            format!("{ok}epochs=2\n"),
            vec!["stage 0 (\"a\")", "not both"],
        ),
        (
            "[[stages]]\nname='a'\nkind='sft'\ndatasets={}\nsteps=1\n".into(),
            vec!["stage 0 (\"a\")", "datasets"],
        ),
        (
            "[[stages]]\nkind='sft'\ndatasets={x=1}\nsteps=1\n".into(),
            vec!["stage 0", "name"],
        ),
        (format!("{ok}{ok}"), vec!["stage 1 (\"a\")", "name"]),
        (
            "[overrides]\ntemprature=1\n".to_owned() + ok,
            vec!["[overrides]", "temprature"],
        ),
        ("stages = []\n".into(), vec!["stages"]),
        ("stage = 1\n".into(), vec!["stage"]),
    ];
    for (cfg, needles) in cases {
        let err = match Staged::new(&cfg) {
            Ok(_) => panic!("accepted: {cfg}"),
            Err(e) => e,
        };
        for n in needles {
            assert!(err.contains(n), "error for {cfg:?} lacks {n:?}: {err}");
        }
    }
}

const LMM_R1: &str = include_str!("../../../configs/schedules/lmm-r1-fre-mgt.toml");
const REVISUAL: &str = include_str!("../../../configs/schedules/revisual-r1.toml");
const COLD_START: &str = include_str!("../../../configs/schedules/rl-cold-start.toml");

#[test]
fn recipe_lmm_r1_fre_then_mgt() {
    let mut s = Staged::new(LMM_R1).unwrap();
    let m = |_: u64, _: &str, _: u64| {
        vec![
            ("dataset/fre/len", 40_000.0),
            ("dataset/mgt/len", 2_100.0),
            ("batch/prompts", 256.0),
        ]
    };
    let plans = walk(&mut s, &m);
    // FRE: 2 epochs of 40k / 256 = 312.5 -> 313; MGT: 2 epochs of 2100 / 256 = 16.4 -> 17.
    assert_eq!(seq(&plans), pairs(&[("fre", 313), ("mgt", 17)]));
    let r = runs(&plans);
    let (fre, mgt) = (&r[0].0, &r[1].0);
    assert_eq!(fre.datasets, vec![("fre".to_owned(), 1.0)]);
    assert_eq!(mgt.datasets, vec![("mgt".to_owned(), 1.0)]);
    for p in [fre, mgt] {
        assert_eq!(p.kind, StageKind::Grpo);
        assert_eq!(p.overrides.group_size, Some(16));
        assert_eq!(p.overrides.temperature, Some(1.0));
        assert_eq!(p.overrides.kl_coef, Some(1e-3));
        assert_eq!(p.overrides.pad.enabled, Some(false));
    }
    assert_eq!(fre.overrides.learning_rate, Some(4e-7));
    assert_eq!(mgt.overrides.learning_rate, Some(4e-7));
}

#[test]
fn recipe_revisual_r1_cold_start_mm_rl_text_rl() {
    let mut s = Staged::new(REVISUAL).unwrap();
    let m = |_: u64, _: &str, _: u64| {
        vec![
            ("dataset/text_traces/len", 1000.0),
            ("batch/prompts", 512.0),
            ("batch/sft_samples", 128.0),
        ]
    };
    let plans = walk(&mut s, &m);
    // 5 epochs * 1000 / 128 (sft.batch_size) = 39.06 -> 40 steps.
    assert_eq!(
        seq(&plans),
        pairs(&[("cold-start", 40), ("mm-rl", 200), ("text-rl", 200)])
    );
    let r = runs(&plans);
    let (sft, mm, txt) = (&r[0].0, &r[1].0, &r[2].0);
    assert_eq!(sft.kind, StageKind::Sft);
    assert_eq!(sft.overrides.learning_rate, Some(1e-5));
    assert_eq!(mm.kind, StageKind::Grpo);
    assert_eq!(mm.overrides.kl_coef, Some(0.0));
    assert_eq!(mm.overrides.pad.enabled, Some(true));
    assert_eq!(mm.overrides.pad.t_low, Some(0.03));
    assert_eq!(mm.overrides.pad.tau_start, Some(1.0));
    assert_eq!(mm.overrides.pad.tau_end, Some(0.3));
    assert_eq!(mm.overrides.group_size, Some(8));
    assert_eq!(mm.overrides.temperature, Some(1.0));
    assert_eq!(mm.overrides.top_p, Some(0.95));
    assert_eq!(mm.overrides.freeze_vision, Some(false));
    assert_eq!(txt.kind, StageKind::Grpo);
    assert_eq!(txt.datasets, vec![("text_math".to_owned(), 1.0)]);
    assert_eq!(txt.overrides.freeze_vision, Some(true));
    assert_eq!(txt.overrides.kl_coef, Some(2e-3));
    assert_eq!(txt.overrides.entropy_coef, Some(0.02));
    assert_eq!(txt.overrides.entropy_warmup_steps, Some(20));
    assert_eq!(txt.overrides.entropy_decay, Some(0.985));
    assert_eq!(txt.overrides.pad.enabled, Some(false));
}

#[test]
fn recipe_rl_with_cold_start_sft_then_grpo() {
    let mut s = Staged::new(COLD_START).unwrap();
    let m = |_: u64, _: &str, _: u64| {
        vec![
            ("dataset/cot_traces/len", 500.0),
            ("dataset/mm_math/len", 1000.0),
            ("batch/prompts", 512.0),
            ("batch/sft_samples", 64.0),
        ]
    };
    let plans = walk(&mut s, &m);
    // SFT: 3 epochs * 500 / 64 (sft.batch_size) = 23.4 -> 24 steps;
    // GRPO: 2 epochs * 1000 / 512 = 3.9 -> 4.
    assert_eq!(seq(&plans), pairs(&[("sft", 24), ("grpo", 4)]));
    let r = runs(&plans);
    let (sft, rl) = (&r[0].0, &r[1].0);
    assert_eq!(sft.kind, StageKind::Sft);
    assert_eq!(rl.kind, StageKind::Grpo);
    assert_eq!(rl.overrides.group_size, Some(10));
    assert_eq!(rl.overrides.temperature, Some(0.7));
    assert_eq!(rl.overrides.top_p, Some(0.99));
    assert_eq!(rl.overrides.kl_coef, Some(1e-2));
    assert_eq!(rl.overrides.learning_rate, Some(1e-6));
}

/// An SFT stage in epochs counts SFT steps: `sft.batch_size` samples each
/// (the stage's override, else the trainer's `batch/sft_samples`, else the
/// prompts per step, as the trainer sizes an SFT step); a GRPO stage counts
/// `rollout.prompts_per_step`, its override first.
#[test]
fn epochs_count_the_steps_of_the_stages_kind() {
    let cfg = |sft_extra: &str, rl_extra: &str| {
        format!(
            "[[stages]]\nname = \"sft\"\nkind = \"sft\"\ndatasets = {{ t = 1.0 }}\nepochs = 1\n\
             [stages.overrides]\nextra = {{ {sft_extra} }}\n\
             [[stages]]\nname = \"rl\"\nkind = \"grpo\"\ndatasets = {{ t = 1.0 }}\nepochs = 1\n\
             [stages.overrides]\nextra = {{ {rl_extra} }}\n"
        )
    };
    let steps = |cfg: &str, metrics: Vec<(&'static str, f64)>| {
        let mut s = Staged::new(cfg).unwrap();
        let m = move |_: u64, _: &str, _: u64| metrics.clone();
        seq(&walk(&mut s, &m))
    };
    let file = vec![
        ("dataset/t/len", 10.0),
        ("batch/prompts", 8.0),
        ("batch/sft_samples", 3.0),
    ];
    // 10 rows: ceil(10 / 3) = 4 SFT steps, ceil(10 / 8) = 2 GRPO steps.
    assert_eq!(
        steps(&cfg("", ""), file.clone()),
        pairs(&[("sft", 4), ("rl", 2)])
    );
    // Stage overrides: sft.batch_size 4 -> 3 steps; prompts_per_step 4 -> 3.
    let own = cfg("\"sft.batch_size\" = 4", "\"rollout.prompts_per_step\" = 4");
    assert_eq!(steps(&own, file), pairs(&[("sft", 3), ("rl", 3)]));
    // No sft.batch_size anywhere: an SFT step takes the prompts per step.
    let no_sft = vec![("dataset/t/len", 10.0), ("batch/prompts", 8.0)];
    assert_eq!(
        steps(&cfg("", ""), no_sft.clone()),
        pairs(&[("sft", 2), ("rl", 2)])
    );
    let own = cfg("\"rollout.prompts_per_step\" = 3", "");
    assert_eq!(steps(&own, no_sft), pairs(&[("sft", 4), ("rl", 2)]));
}
