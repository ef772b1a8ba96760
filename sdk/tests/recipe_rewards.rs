//! The recipes' own rewards against the verdicts of their projects' code
//! (fixtures/recipe_reward_verdicts.jsonl, recorded by
//! scripts/rewards/recipe_peer_verdicts.py, which runs LMM-R1's
//! sokoban_verifier.py on gym-sokoban, ReVisual-R1's length_reward_l1_max
//! and EasyR1's format_reward): every case must agree.

use lmmhost_sdk::rules::format::FormatRule;
use lmmhost_sdk::rules::length::LengthBudget;
use lmmhost_sdk::rules::sokoban::SokobanReward;
use lmmhost_sdk::{Completion, Reward, Sample};
use serde_json::Value;

fn verdicts(kind: &str) -> Vec<Value> {
    let path = format!(
        "{}/tests/fixtures/recipe_reward_verdicts.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let rows: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["kind"] == kind)
        .collect();
    assert!(!rows.is_empty(), "no {kind} verdicts in {path}");
    rows
}

fn completion(response: &str, tokens: u32, metadata: Vec<(String, String)>) -> Completion {
    Completion {
        sample: Sample {
            id: "case".into(),
            metadata,
            ..Default::default()
        },
        response: response.into(),
        response_tokens: tokens,
    }
}

#[test]
fn sokoban_matches_lmm_r1() {
    let rule = SokobanReward::new("").unwrap();
    let rows = verdicts("sokoban");
    let mut wrong = Vec::new();
    let (mut solved, mut formatted) = (0, 0);
    for (i, v) in rows.iter().enumerate() {
        let level = v["level"].as_str().unwrap();
        let response = v["response"].as_str().unwrap();
        let c = completion(response, 0, vec![("level".into(), level.into())]);
        let s = rule.score(&c).unwrap();
        let (total, game) = (v["total"].as_f64().unwrap(), v["game"].as_f64().unwrap());
        let ours = s.component("game").unwrap();
        if (s.total - total).abs() > 1e-9 || (ours - game).abs() > 1e-9 {
            wrong.push(format!(
                "case {i}: LMM-R1 {total} (game {game}), ours {} (game {ours})\n{level}\n{response}",
                s.total
            ));
        }
        solved += usize::from(game >= 10.0);
        formatted += usize::from(total != 0.0);
    }
    eprintln!(
        "sokoban: {} cases, {formatted} with the format, {solved} solved",
        rows.len()
    );
    // The cases cover solutions, formats that fail and random play.
    assert!(solved >= 20 && formatted >= 100 && rows.len() - formatted >= 100);
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n\n")
    );
}

#[test]
fn length_budget_matches_revisual_r1() {
    for v in verdicts("length") {
        let budget = v["budget"].as_u64().unwrap();
        let tokens = v["tokens"].as_u64().unwrap() as u32;
        let rule = LengthBudget::new(&format!("budget = {budget}")).unwrap();
        let s = rule.score(&completion("", tokens, Vec::new())).unwrap();
        let want = v["value"].as_f64().unwrap();
        assert!(
            (s.total - want).abs() < 1e-12,
            "budget {budget}, {tokens} tokens: ReVisual-R1 {want}, ours {}",
            s.total
        );
    }
}

#[test]
fn boxed_format_matches_easyr1() {
    let rule = FormatRule::new("mode = \"boxed\"\nvalue = 1.0").unwrap();
    for v in verdicts("easyr1-format") {
        let response = v["response"].as_str().unwrap();
        let s = rule.score(&completion(response, 0, Vec::new())).unwrap();
        let want = v["format"].as_f64().unwrap();
        assert_eq!(s.total, want, "EasyR1 gives {want} to {response:?}");
    }
}
