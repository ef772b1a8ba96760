//! The four core reward plugins loaded as components through the plugin host:
//! every score equals the native SDK rule's (same Rust code) and the numbers
//! the rule documents.

use std::sync::Arc;

use lmmhost_plugin_host::{
    ItemOutcome, OnError, PluginRuntime, PluginSpec, RewardPlugin, RuntimeOptions,
};
use lmmhost_sdk::rules::{
    choice::ChoiceAccuracy, format::FormatRule, math::MathAccuracy, sokoban::SokobanReward,
};
use lmmhost_sdk::{Completion, ContentPart, Message, Reward, Sample, Score};
use lmmhost_tests::plugin_wasm;

fn runtime() -> PluginRuntime {
    PluginRuntime::new(RuntimeOptions { cache_dir: None }).unwrap()
}

fn spec(name: &str, config: &str, instances: usize, on_error: OnError) -> PluginSpec {
    let mut s = PluginSpec::from_file(name, &plugin_wasm(name), config).unwrap();
    s.limits.instances = Some(instances);
    s.on_error = on_error;
    s.log = Arc::new(|_| {});
    s
}

fn completion(
    id: &str,
    prompt: &str,
    answer: Option<&str>,
    metadata: &[(&str, &str)],
    response: &str,
) -> Completion {
    Completion {
        sample: Sample {
            id: id.into(),
            messages: vec![Message {
                role: "user".into(),
                content: vec![ContentPart::Text(prompt.into())],
            }],
            answer: answer.map(str::to_owned),
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
        response: response.into(),
        response_tokens: response.len() as u32 / 4,
    }
}

/// Scores `batch` through the component and natively; every item must be
/// scored, and identical (total and components, bit for bit) on both paths.
fn score_both<R: Reward>(
    plugin: &str,
    config: &str,
    instances: usize,
    batch: &[Completion],
) -> Vec<Score> {
    let native = R::new(config).unwrap();
    let rt = runtime();
    let p = RewardPlugin::new(&rt, spec(plugin, config, instances, OnError::Abort)).unwrap();
    let out = p.score_batch(batch).unwrap();
    assert_eq!(out.len(), batch.len());
    out.into_iter()
        .zip(batch)
        .enumerate()
        .map(|(i, (o, c))| {
            let want = native.score(c).unwrap();
            match o {
                ItemOutcome::Scored(s) => {
                    assert_eq!(
                        s, want,
                        "{plugin} item {i} ({}): wasm vs native",
                        c.sample.id
                    );
                    s
                }
                other => panic!("{plugin} item {i}: {other:?}"),
            }
        })
        .collect()
}

fn totals(scores: &[Score]) -> Vec<f64> {
    scores.iter().map(|s| s.total).collect()
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
}

fn math_batch() -> Vec<Completion> {
    let q = "Find x.";
    vec![
        // Right answer in R1 format: 0.5 + 1.
        completion(
            "right-r1",
            q,
            Some("$\\boxed{60}$"),
            &[],
            "<think>6*10 = 60</think><answer>\\boxed{60}</answer>",
        ),
        // Wrong answer in R1 format: 0.5 + 0.
        completion(
            "wrong-r1",
            q,
            Some("60"),
            &[],
            "<think>6*10 = 61</think><answer>\\boxed{61}</answer>",
        ),
        // Right answer (1/2 = 0.5), no format: 0 + 1.
        completion(
            "right-plain",
            q,
            Some("0.5"),
            &[],
            "So x is \\boxed{\\frac{1}{2}}.",
        ),
        // No extractable answer, no format: 0.
        completion("none", q, Some("3"), &[], "I am not sure."),
        // Equivalent form from <answer> (no \boxed): 0.5 + 1.
        completion(
            "dfrac",
            q,
            Some("0.75"),
            &[],
            "<think>3/4</think><answer>\\dfrac{3}{4}</answer>",
        ),
    ]
}

#[test]
fn reward_math_scores_equal_native_and_documented_numbers() {
    let scores = score_both::<MathAccuracy>("reward-math", "format = \"r1\"", 2, &math_batch());
    assert!(
        close(&totals(&scores), &[1.5, 0.5, 1.0, 0.0, 1.5]),
        "{scores:?}"
    );
    assert_eq!(
        scores[1].components,
        vec![("format".to_owned(), 0.5), ("accuracy".to_owned(), 0.0)]
    );
    assert_eq!(
        scores[2].components,
        vec![("format".to_owned(), 0.0), ("accuracy".to_owned(), 1.0)]
    );
    // EasyR1 weighting: 0.9 * accuracy + 0.1 * boxed format.
    let scores = score_both::<MathAccuracy>(
        "reward-math",
        "correct = 0.9\nformat = \"boxed\"",
        1,
        &math_batch(),
    );
    // The last answers in <answer> without \boxed: accurate, not in boxed format.
    assert!(
        close(&totals(&scores), &[1.0, 0.1, 0.9, 0.0, 0.9]),
        "{scores:?}"
    );
}

#[test]
fn reward_math_large_batch_keeps_order_across_instances() {
    // 3 instances, an uneven split: every item comes back at its own index.
    let base = math_batch();
    let batch: Vec<Completion> = (0..301)
        .map(|i| {
            let mut c = base[i % base.len()].clone();
            c.sample.id = format!("{}-{i}", c.sample.id);
            c
        })
        .collect();
    let scores = score_both::<MathAccuracy>("reward-math", "format = \"r1\"", 3, &batch);
    let sum: f64 = totals(&scores).iter().sum();
    // 60 full rounds of (1.5 + 0.5 + 1 + 0 + 1.5) plus the first item again.
    assert!((sum - (60.0 * 4.5 + 1.5)).abs() < 1e-9, "{sum}");
}

#[test]
fn reward_math_bad_item_is_named_or_zeroed() {
    let mut batch = math_batch();
    batch.insert(3, completion("no-ref", "q", None, &[], "\\boxed{1}"));
    let rt = runtime();
    let p = RewardPlugin::new(&rt, spec("reward-math", "", 2, OnError::Abort)).unwrap();
    let err = format!("{:#}", p.score_batch(&batch).unwrap_err());
    assert!(
        err.contains("reward-math") && err.contains("item 3") && err.contains("no-ref"),
        "{err}"
    );
    let p = RewardPlugin::new(&rt, spec("reward-math", "", 2, OnError::Zero)).unwrap();
    let out = p.score_batch(&batch).unwrap();
    match &out[3] {
        ItemOutcome::Failed { index, error } => {
            assert_eq!(*index, 3);
            assert!(
                error.contains("no-ref") && error.contains("answer"),
                "{error}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The others are unaffected.
    let scored: Vec<f64> = out
        .iter()
        .filter_map(|o| match o {
            ItemOutcome::Scored(s) => Some(s.total),
            _ => None,
        })
        .collect();
    assert!(close(&scored, &[1.0, 0.0, 1.0, 0.0, 1.0]), "{scored:?}");
    // A config error names the plugin and the key.
    let e = RewardPlugin::new(&rt, spec("reward-math", "corect = 1.0", 1, OnError::Abort))
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap();
    assert!(e.contains("reward-math") && e.contains("corect"), "{e}");
}

#[test]
fn reward_format_r1_and_boxed_modes() {
    let batch = vec![
        completion(
            "r1",
            "q",
            None,
            &[],
            "<think>2+2=4</think><answer>4</answer>",
        ),
        completion(
            "two-answers",
            "q",
            None,
            &[],
            "<think>a</think><answer>1</answer><answer>2</answer>",
        ),
        completion("boxed", "q", None, &[], "<think>x</think> so \\boxed{3}"),
        completion("bare", "q", None, &[], "4"),
    ];
    let s = score_both::<FormatRule>("reward-format", "", 2, &batch);
    assert!(close(&totals(&s), &[0.5, 0.0, 0.0, 0.0]), "{s:?}");
    assert_eq!(s[0].components, vec![("format".to_owned(), 0.5)]);
    let s = score_both::<FormatRule>(
        "reward-format",
        "mode = \"boxed\"\nmismatch = -1.0\ncomponent = \"fmt\"",
        1,
        &batch,
    );
    assert!(close(&totals(&s), &[-1.0, -1.0, 0.1, -1.0]), "{s:?}");
    assert_eq!(s[2].components, vec![("fmt".to_owned(), 0.1)]);
}

#[test]
fn reward_choice_letters_and_option_text() {
    let opts = [("options", r#"["10 cm", "12 cm", "14 cm"]"#)];
    let prompt_opts = "Which is longest?\nA. 3 m\nB. 5 m\nC. 4 m";
    let batch = vec![
        completion(
            "letter",
            "q",
            Some("B"),
            &opts,
            "<think>..</think><answer>B</answer>",
        ),
        completion(
            "wrong",
            "q",
            Some("B"),
            &opts,
            "<think>..</think><answer>(A)</answer>",
        ),
        completion(
            "text",
            "q",
            Some("B"),
            &opts,
            "The answer is \\boxed{12 cm}",
        ),
        // Options parsed from the prompt; the reference names the option by text.
        completion(
            "prompt",
            prompt_opts,
            Some("5 m"),
            &[],
            "<answer>B</answer>",
        ),
        completion(
            "prompt-wrong",
            prompt_opts,
            Some("5 m"),
            &[],
            "<answer>C</answer>",
        ),
    ];
    let s = score_both::<ChoiceAccuracy>("reward-choice", "format = \"r1\"", 2, &batch);
    assert!(close(&totals(&s), &[1.5, 0.5, 1.0, 1.0, 0.0]), "{s:?}");
    assert_eq!(s[3].component("accuracy"), Some(1.0));
    assert_eq!(s[3].component("format"), Some(0.0));
}

#[test]
fn reward_sokoban_replays_levels() {
    // LMM-R1's reward: format 0.5 + best game reward + 0.05 per action +
    // 0.001 per reasoning word of two or more characters.
    let level = [("level", "#####\n#@$.#\n#####")];
    let batch = vec![
        // One push solves it: game -0.1 step + 1 box on target + 10 finished.
        completion(
            "solve",
            "q",
            None,
            &level,
            "<think>push right</think><answer>Right</answer>",
        ),
        // Into the wall: the step costs 0.1, the best stays 0.
        completion(
            "wall",
            "q",
            None,
            &level,
            "<think>left</think><answer>Left</answer>",
        ),
        // No format (LMM-R1 reads only full action words): everything 0.
        completion("junk", "q", None, &level, "<answer>Jump</answer>"),
        completion(
            "short",
            "q",
            None,
            &level,
            "<think>go</think><answer>R</answer>",
        ),
        // Actions after the level is solved are not played (but counted).
        completion(
            "extra",
            "q",
            None,
            &level,
            "<think>go</think><answer>Right, Left, Left</answer>",
        ),
    ];
    let s = score_both::<SokobanReward>("reward-sokoban", "", 2, &batch);
    assert!(
        close(&totals(&s), &[11.452, 0.551, 0.0, 0.0, 11.551]),
        "{s:?}"
    );
    assert_eq!(s[0].component("solved"), Some(1.0));
    assert_eq!(s[1].component("solved"), Some(0.0));
    assert!((s[0].component("game").unwrap() - 10.9).abs() < 1e-9);
    // A sample without a level is an error naming it.
    let rt = runtime();
    let p = RewardPlugin::new(&rt, spec("reward-sokoban", "", 1, OnError::Abort)).unwrap();
    let e = format!(
        "{:#}",
        p.score_batch(&[completion("nolevel", "q", None, &[], "<answer>R</answer>")])
            .unwrap_err()
    );
    assert!(e.contains("nolevel") && e.contains("level"), "{e}");
}
