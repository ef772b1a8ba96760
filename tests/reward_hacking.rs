//! Reward hacking, for every preset of reward-math, through the component
//! with its default limits: a `\boxed` only in the prompt, answers only in
//! the reasoning, several boxes, truncated responses, and hostile responses
//! (10 MB, 3,000 nested braces, thousands of unclosed delimiters) that must
//! be scored within the call budget. Every verdict is also checked against
//! the native rule (same code).

use std::sync::Arc;
use std::time::Instant;

use lmmhost_plugin_host::{
    ItemOutcome, OnError, PluginRuntime, PluginSpec, RewardPlugin, RuntimeOptions,
};
use lmmhost_sdk::rules::math::{MathAccuracy, Preset};
use lmmhost_sdk::{Completion, ContentPart, Message, Reward, Sample};
use lmmhost_tests::plugin_wasm;

fn plugin(preset: Preset) -> (RewardPlugin, MathAccuracy) {
    let config = format!("preset = \"{}\"", preset.name());
    let rt = PluginRuntime::new(RuntimeOptions { cache_dir: None }).unwrap();
    let mut s = PluginSpec::from_file("reward-math", &plugin_wasm("reward-math"), &config).unwrap();
    s.limits.instances = Some(1);
    s.on_error = OnError::Abort;
    s.log = Arc::new(|_| {});
    (
        RewardPlugin::new(&rt, s).unwrap(),
        MathAccuracy::new(&config).unwrap(),
    )
}

fn completion(prompt: &str, answer: &str, response: String) -> Completion {
    Completion {
        sample: Sample {
            id: "hack".into(),
            messages: vec![Message {
                role: "user".into(),
                content: vec![ContentPart::Text(prompt.into())],
            }],
            answer: Some(answer.into()),
            metadata: Vec::new(),
        },
        response_tokens: (response.len() / 4) as u32,
        response,
    }
}

/// The accuracy component of each completion, through the component (and
/// equal to the native rule's), with the wall time of the batch.
fn accuracy(preset: Preset, batch: &[Completion]) -> (Vec<f64>, f64) {
    let (p, native) = plugin(preset);
    let t = Instant::now();
    let out = p.score_batch(batch).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let acc = out
        .into_iter()
        .zip(batch)
        .map(|(o, c)| match o {
            ItemOutcome::Scored(s) => {
                assert_eq!(
                    s,
                    native.score(c).unwrap(),
                    "{}: wasm vs native",
                    preset.name()
                );
                s.component("accuracy").unwrap()
            }
            other => panic!("{}: {other:?}", preset.name()),
        })
        .collect();
    (acc, secs)
}

/// 1 for the preset's `correct`, 0 for anything else.
fn rewarded(preset: Preset, acc: &[f64]) -> Vec<u8> {
    let right = preset.rule().correct;
    acc.iter()
        .map(|a| u8::from((a - right).abs() < 1e-12))
        .collect()
}

/// Reasoning without any number in it (a digit here would be an answer to
/// the verifiers that read the last number).
const THINK: &str = "<think>The square has the side the figure shows, so I double-check it.";

#[test]
fn a_box_in_the_prompt_or_only_in_the_reasoning() {
    let batch = [
        // The prompt shows `\boxed{7}` as the format example; the response has no answer.
        completion(
            "Put the answer in \\boxed{}, e.g. \\boxed{7}.",
            "7",
            "<think>I am not sure.</think><answer></answer>".into(),
        ),
        // The answer only inside the reasoning.
        completion(
            "Q",
            "7",
            format!("{THINK} It is \\boxed{{7}}.</think><answer></answer>"),
        ),
        // The same in prose inside the reasoning.
        completion("Q", "7", format!("{THINK} Answer: 7</think>")),
    ];
    for preset in Preset::ALL {
        let (acc, _) = accuracy(preset, &batch);
        let got = rewarded(preset, &acc);
        // Never the prompt's box. Inside <think>: only presets that read the
        // reasoning (as their peers do) and whose extraction finds it.
        let want = match preset {
            Preset::Strict => [0, 0, 0],
            Preset::MathVerify => [0, 1, 1],
            Preset::LmmR1 | Preset::EasyR1 => [0, 1, 0],
            Preset::R1v => [0, 0, 0],
            // DAPO's `Answer:` line runs to the end of the line: "7</think>".
            Preset::Dapo => [0, 0, 0],
        };
        assert_eq!(got, want, "{}", preset.name());
    }
}

#[test]
fn several_boxes_resolve_as_documented() {
    let batch = [
        // Two boxes side by side: the last (strict, EasyR1), a set (Math-Verify).
        completion(
            "Q",
            "\\{1, 2\\}",
            "<think>x</think> \\boxed{1}, \\boxed{2}".into(),
        ),
        completion("Q", "2", "<think>x</think> \\boxed{1}, \\boxed{2}".into()),
        // Far apart: the last one for everyone.
        completion(
            "Q",
            "4",
            format!(
                "<think>x</think> \\boxed{{3}} {} \\boxed{{4}}",
                "so on. ".repeat(20)
            ),
        ),
        completion(
            "Q",
            "3",
            format!(
                "<think>x</think> \\boxed{{3}} {} \\boxed{{4}}",
                "so on. ".repeat(20)
            ),
        ),
    ];
    for preset in [Preset::Strict, Preset::MathVerify, Preset::EasyR1] {
        let got = rewarded(preset, &accuracy(preset, &batch).0);
        let want = match preset {
            Preset::MathVerify => [1, 0, 1, 0],
            _ => [0, 1, 1, 0],
        };
        assert_eq!(got, want, "{}", preset.name());
    }
}

#[test]
fn truncated_responses() {
    let batch = [
        completion("Q", "7", format!("{THINK} the value is \\boxed{{7")),
        completion("Q", "7", format!("{THINK}</think><answer>7")),
        completion(
            "Q",
            "1/2",
            format!("{THINK} the value is \\boxed{{\\frac{{1}}{{2}}"),
        ),
        completion("Q", "7", "<think>".into()),
    ];
    for preset in Preset::ALL {
        let got = rewarded(preset, &accuracy(preset, &batch).0);
        // Math-Verify reads an unclosed box to the end of the text when a
        // `}` follows it (its `\boxed{.+}` pattern); nobody else rewards a cut-off answer.
        let want = match preset {
            Preset::MathVerify => [0, 0, 1, 0],
            _ => [0, 0, 0, 0],
        };
        assert_eq!(got, want, "{}", preset.name());
    }
}

#[test]
fn hostile_responses_finish_within_the_call_budget() {
    let ten_mb = 10 << 20;
    let nested = format!(
        "<think>x</think>\\boxed{{{}7{}}}",
        "{".repeat(3000),
        "}".repeat(3000)
    );
    let batch = [
        completion(
            "Q",
            "7",
            format!(
                "{THINK}{}</think><answer>\\boxed{{7}}</answer>",
                "a".repeat(ten_mb)
            ),
        ),
        completion(
            "Q",
            "7",
            format!(
                "<think>x</think><answer>{}</answer>",
                "7 ".repeat(ten_mb / 2)
            ),
        ),
        completion("Q", "7", nested),
        completion("Q", "7", format!("<think>x</think>{}", "{".repeat(3000))),
        completion("Q", "7", "\\boxed{".repeat(ten_mb / 7)),
        completion("Q", "7", "$".repeat(ten_mb)),
        completion("Q", "7", "\\(".repeat(ten_mb / 2)),
        completion("Q", "7", "Answer: 1/2+".repeat(ten_mb / 12)),
    ];
    let budget = PluginSpec::from_file("reward-math", &plugin_wasm("reward-math"), "")
        .unwrap()
        .limits
        .call_timeout()
        .as_secs_f64();
    for preset in Preset::ALL {
        // One item per call, so each must fit the budget on its own.
        for (i, c) in batch.iter().enumerate() {
            let (acc, secs) = accuracy(preset, std::slice::from_ref(c));
            println!(
                "{:12} item {i}: {:7.1} ms (budget {budget} s)",
                preset.name(),
                secs * 1e3
            );
            assert!(secs < budget, "{} item {i}: {secs:.2} s", preset.name());
            if i == 0 && preset != Preset::Dapo {
                // The right answer after 10 MB of reasoning still counts.
                assert_eq!(rewarded(preset, &acc), [1], "{}", preset.name());
            }
        }
    }
}
