//! Every reward preset against the verifier it reproduces, on the recorded
//! verdicts of that verifier's own code (fixtures/reward_peer_verdicts.jsonl,
//! scripts/rewards/peer_verdicts.py) over realistic completions
//! (fixtures/reward_cases.jsonl, scripts/rewards/make_cases.py), and the
//! `math-verify` preset against Math-Verify on its own test tables
//! (fixtures/math_verify_cases.jsonl). Agreement must stay at or above 97%;
//! `--nocapture` prints the table and every disagreement.

use lmmhost_sdk::rules::math::{MathAccuracy, Preset};
use lmmhost_sdk::{Completion, Reward, Sample};
use serde_json::Value;
use std::collections::BTreeMap;

fn lines(name: &str) -> Vec<Value> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v.get("_comment").is_none())
        .collect()
}

fn score(rule: &MathAccuracy, response: &str, reference: &str) -> f64 {
    let c = Completion {
        sample: Sample {
            id: "case".into(),
            answer: Some(reference.into()),
            ..Default::default()
        },
        response: response.into(),
        response_tokens: 0,
    };
    rule.score(&c).unwrap().total
}

struct Case {
    id: String,
    reference: String,
    response: String,
    truth: bool,
    kind: String,
}

fn cases() -> Vec<Case> {
    lines("reward_cases.jsonl")
        .into_iter()
        .map(|v| Case {
            id: v["id"].as_str().unwrap().into(),
            reference: v["reference"].as_str().unwrap().into(),
            response: v["response"].as_str().unwrap().into(),
            truth: v["truth"].as_bool().unwrap(),
            kind: v["kind"].as_str().unwrap().into(),
        })
        .collect()
}

/// The preset's agreement with its peer: (agree, total, disagreements).
fn agreement(preset: Preset) -> (usize, usize, Vec<String>) {
    let verdicts: BTreeMap<String, Value> = lines("reward_peer_verdicts.jsonl")
        .into_iter()
        .map(|v| (v["id"].as_str().unwrap().to_owned(), v))
        .collect();
    let rule = preset.rule();
    let (mut agree, mut n, mut diffs) = (0, 0, Vec::new());
    for c in cases() {
        let peer = verdicts[&c.id][preset.name()]["total"].as_f64().unwrap();
        let ours = score(&rule, &c.response, &c.reference);
        n += 1;
        if (peer - ours).abs() < 1e-9 {
            agree += 1;
        } else {
            diffs.push(format!(
                "  {} [{}] ours {ours} peer {peer}\n    ref {:?}\n    resp {:?}",
                c.id, c.kind, c.reference, c.response
            ));
        }
    }
    (agree, n, diffs)
}

#[test]
fn every_preset_agrees_with_its_peer_on_the_recorded_cases() {
    let mut failed = Vec::new();
    let hacks = ["answer-only", "truncated", "two-boxed", "boxed-then"];
    for preset in Preset::ALL {
        // How often the accuracy term rewards right and wrong final answers
        // (hand labels; the hacking kinds are left out).
        let rule = preset.rule();
        let (mut right, mut wrong) = (0, 0);
        for c in cases()
            .iter()
            .filter(|c| !hacks.iter().any(|h| c.kind.starts_with(h)))
        {
            let acc = Completion {
                sample: Sample {
                    answer: Some(c.reference.clone()),
                    ..Default::default()
                },
                response: c.response.clone(),
                response_tokens: 0,
            };
            let s = rule.score(&acc).unwrap().component("accuracy").unwrap();
            if (s - rule.correct).abs() < 1e-12 {
                if c.truth {
                    right += 1;
                } else {
                    wrong += 1;
                }
            }
        }
        println!(
            "{:12} rewards {right} right and {wrong} wrong final answers",
            preset.name()
        );
    }
    for preset in Preset::ALL.into_iter().filter(|p| *p != Preset::Strict) {
        let (agree, n, diffs) = agreement(preset);
        let pct = 100.0 * agree as f64 / n as f64;
        println!("{:12} {agree}/{n} = {pct:.1}%", preset.name());
        for d in &diffs {
            println!("{d}");
        }
        if pct < 97.0 {
            failed.push(format!("{} {pct:.1}%", preset.name()));
        }
    }
    assert!(failed.is_empty(), "below 97%: {failed:?}");
}

#[test]
fn math_verify_preset_agrees_with_math_verify_on_its_own_tables() {
    // These tables call `verify(parse(gold), parse(pred))`: the reference is
    // extracted like the response.
    let rule = MathAccuracy::new("preset = \"math-verify\"\nreference = \"math_verify\"").unwrap();
    let mut by_set: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let cases = lines("math_verify_cases.jsonl");
    let mut diffs = Vec::new();
    for c in &cases {
        let (pred, reference) = (
            c["prediction"].as_str().unwrap(),
            c["reference"].as_str().unwrap(),
        );
        let want = c["math_verify"].as_bool().unwrap();
        let ours = score(&rule, pred, reference) > 0.5;
        let set = if c["source"]
            .as_str()
            .unwrap()
            .starts_with("huggingface/Math-Verify")
        {
            "Math-Verify's tests"
        } else {
            "realistic"
        };
        let e = by_set.entry(set).or_default();
        e.1 += 1;
        if ours == want {
            e.0 += 1;
        } else {
            diffs.push(format!(
                "  [{set}] ours {ours} mv {want}: {reference:?} vs {pred:?}"
            ));
        }
    }
    for (set, (a, n)) in &by_set {
        println!("{set:22} {a}/{n} = {:.1}%", 100.0 * *a as f64 / *n as f64);
    }
    for d in &diffs {
        println!("{d}");
    }
    let (a, n) = by_set["Math-Verify's tests"];
    assert!(
        a as f64 >= 0.97 * n as f64,
        "{a}/{n} on Math-Verify's tests"
    );
}

#[test]
fn the_default_never_rewards_a_wrong_answer() {
    let strict = Preset::Strict.rule();
    let default = MathAccuracy::new("").unwrap();
    let mut right = 0;
    for c in cases() {
        let s = score(&default, &c.response, &c.reference);
        assert_eq!(
            s,
            score(&strict, &c.response, &c.reference),
            "the default is `strict`"
        );
        if s > 0.0 {
            assert!(
                c.truth,
                "{} [{}] rewarded but wrong: {:?}",
                c.id, c.kind, c.response
            );
            right += 1;
        }
    }
    // It rewards every right answer that is boxed or in <answer> outside
    // the reasoning; prose answers ("Answer: 7", "... is $7$") it leaves to
    // the lenient presets.
    let prose = [
        "answer-line",
        "answer-line-dollar",
        "final-answer-is-dollar",
        "prose-dollar-last",
    ];
    let mut missed = Vec::new();
    for c in cases()
        .iter()
        .filter(|c| c.truth && !prose.contains(&c.kind.as_str()))
    {
        if score(&default, &c.response, &c.reference) <= 0.0 {
            missed.push(format!(
                "{} [{}]: {:?} vs {:?}",
                c.id, c.kind, c.response, c.reference
            ));
        }
    }
    let truths = cases().iter().filter(|c| c.truth).count();
    println!("strict rewards {right} of {truths} right answers");
    assert!(
        missed.is_empty(),
        "{} right answers missed:\n{}",
        missed.len(),
        missed.join("\n")
    );
}

#[test]
fn the_configs_in_docs_rewards_md_parse() {
    let path = format!("{}/../docs/rewards.md", env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(&path).unwrap();
    let mut n = 0;
    let mut lines = doc.lines();
    while let Some(line) = lines.by_ref().next() {
        if line != "```toml" {
            continue;
        }
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        let body = body.join("\n");
        let table: toml::Table = body.parse().unwrap_or_else(|e| panic!("{body}: {e}"));
        // An experiment snippet carries the plugin's table under `config`.
        let config = match table.get("plugins") {
            Some(plugins) => {
                let p = plugins.as_table().unwrap().values().next().unwrap();
                toml::to_string(&p["config"]).unwrap()
            }
            None => body,
        };
        MathAccuracy::new(&config).unwrap_or_else(|e| panic!("{config}: {e}"));
        n += 1;
    }
    assert_eq!(n, 2, "the two TOML blocks of docs/rewards.md");
}
