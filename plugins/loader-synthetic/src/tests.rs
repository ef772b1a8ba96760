//! Loader-level tests: determinism, disjoint splits, answers recomputed
//! independently of the generators (prompt parsing, PNG decoding).

use std::collections::HashSet;

use lmmhost_sdk::answer::is_r1_format;
use lmmhost_sdk::rules::math::MathAccuracy;
use lmmhost_sdk::{Completion, ContentPart, ImageSource, Loader, Reward, Sample};

use crate::shapes::{BLUE, CELL_PX, RED};
use crate::SyntheticLoader;

fn open(config: &str) -> SyntheticLoader {
    SyntheticLoader::open(config, &[]).unwrap().0
}

fn meta<'a>(s: &'a Sample, key: &str) -> &'a str {
    s.metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("sample {} has no metadata {key:?}", s.id))
}

fn user_text(s: &Sample) -> &str {
    let user = &s.messages[s.messages.len() - 2];
    assert_eq!(user.role, "user");
    match user.content.last() {
        Some(ContentPart::Text(t)) => t,
        other => panic!("user message ends with {other:?}"),
    }
}

fn user_image(s: &Sample) -> Option<&[u8]> {
    let user = &s.messages[s.messages.len() - 2];
    user.content.iter().find_map(|p| match p {
        ContentPart::Image(ImageSource::Bytes(b)) => Some(b.as_slice()),
        _ => None,
    })
}

fn response(s: &Sample) -> &str {
    let a = s.messages.last().unwrap();
    assert_eq!(a.role, "assistant");
    assert_eq!(a.content.len(), 1);
    match &a.content[0] {
        ContentPart::Text(t) => t,
        other => panic!("assistant content {other:?}"),
    }
}

/// The problem a sample poses, as the key the splits must not share.
fn problem_key(s: &Sample) -> String {
    match meta(s, "task") {
        "arithmetic" => meta(s, "expression").to_owned(),
        _ => format!("{}:{}", meta(s, "grid"), meta(s, "cells")),
    }
}

const TASKS: [&str; 3] = ["arithmetic", "shapes-count", "shapes-describe"];

#[test]
fn deterministic_random_access() {
    for task in TASKS {
        let cfg = format!("task = \"{task}\"\nlen = 300\nseed = 11");
        let (a, b) = (open(&cfg), open(&cfg));
        // Reverse order on one side: a sample depends on its index only.
        let fwd: Vec<Sample> = (0..300).map(|i| a.get(i).unwrap()).collect();
        let rev: Vec<Sample> = (0..300).rev().map(|i| b.get(i).unwrap()).collect();
        for (i, s) in fwd.iter().enumerate() {
            assert_eq!(s, &rev[299 - i], "{task} sample {i}");
            assert_eq!(s.id, format!("{task}/train/11/{i}"));
        }
        // The seed changes the draw; the samples are not all the same problem.
        let other = open(&format!("task = \"{task}\"\nlen = 300\nseed = 12"));
        let differ = (0..300)
            .filter(|&i| other.get(i).unwrap().messages != fwd[i as usize].messages)
            .count();
        assert!(
            differ > 150,
            "{task}: only {differ} of 300 differ across seeds"
        );
        let distinct: HashSet<String> = fwd
            .iter()
            .map(|s| user_text(s).to_owned() + &problem_key(s))
            .collect();
        assert!(
            distinct.len() > 40,
            "{task}: {} distinct problems",
            distinct.len()
        );
    }
}

#[test]
fn splits_never_overlap() {
    for task in TASKS {
        let train = open(&format!("task = \"{task}\"\nlen = 6000\nseed = 1"));
        let mut train_keys = HashSet::new();
        for i in 0..6000 {
            let s = train.get(i).unwrap();
            assert_eq!(meta(&s, "split"), "train");
            train_keys.insert(problem_key(&s));
        }
        let mut eval_keys = HashSet::new();
        // Several eval seeds: none of them may reach a train problem.
        for seed in [1, 2, 3] {
            let eval = open(&format!(
                "task = \"{task}\"\nsplit = \"eval\"\nlen = 2000\nseed = {seed}"
            ));
            for i in 0..2000 {
                let s = eval.get(i).unwrap();
                assert_eq!(meta(&s, "split"), "eval");
                let k = problem_key(&s);
                assert!(
                    !train_keys.contains(&k),
                    "{task}: eval sample {i} ({k}) is in train"
                );
                eval_keys.insert(k);
            }
        }
        // Both splits are real: eval about 1/5 of the problem space.
        let share = eval_keys.len() as f64 / (eval_keys.len() + train_keys.len()) as f64;
        assert!((0.1..0.3).contains(&share), "{task}: eval share {share}");
    }
    // Image tasks share the layout partition: describe-train never shows a count-eval image.
    let describe = open("task = \"shapes-describe\"\nlen = 3000");
    let count_eval = open("task = \"shapes-count\"\nsplit = \"eval\"\nlen = 1000");
    let d: HashSet<String> = (0..3000)
        .map(|i| problem_key(&describe.get(i).unwrap()))
        .collect();
    for i in 0..1000 {
        let k = problem_key(&count_eval.get(i).unwrap());
        assert!(
            !d.contains(&k),
            "count eval layout {k} is a describe train image"
        );
    }
}

#[test]
fn notes_report_distinct_problems_honestly() {
    let eval =
        SyntheticLoader::open("task = \"shapes-count\"\nsplit = \"eval\"\nlen = 500", &[]).unwrap();
    let notes = eval.1.notes.join("\n");
    assert_eq!(eval.1.len, 500);
    // Every layout the eval split draws is counted in the note, and no more.
    let layouts: HashSet<String> = (0..500)
        .map(|i| meta(&eval.0.get(i).unwrap(), "cells").to_owned())
        .collect();
    let (train, n_eval) = crate::shapes::count_layouts(2, 2, 1000).unwrap();
    assert_eq!(
        layouts.len() as u64,
        n_eval,
        "500 draws should cover all eval layouts"
    );
    assert!(
        notes.contains(&format!("{train} train, {n_eval} eval")),
        "{notes}"
    );
    assert!(notes.contains("samples repeat"), "{notes}");
    let arith = SyntheticLoader::open("task = \"arithmetic\"\nlen = 10", &[])
        .unwrap()
        .1;
    let (t, e) = crate::arithmetic::count_problems(&Default::default(), 1_000_000).unwrap();
    assert!(arith
        .notes
        .join("\n")
        .contains(&format!("{t} train, {e} eval")));
    assert!(!arith.notes.join("\n").contains("repeat"));
}

/// Evaluates `3+4-2` left to right with its own parser.
fn eval_expression(expr: &str) -> i64 {
    let mut total: Option<i64> = None;
    let mut sign = 1;
    let mut num = String::new();
    let flush = |num: &mut String, sign: i64, total: &mut Option<i64>| {
        let v: i64 = num.parse().unwrap();
        *total = Some(total.unwrap_or(0) + sign * v);
        num.clear();
    };
    for c in expr.chars() {
        match c {
            '0'..='9' => num.push(c),
            '+' | '-' => {
                flush(&mut num, sign, &mut total);
                sign = if c == '+' { 1 } else { -1 };
            }
            _ => panic!("unexpected {c:?} in {expr:?}"),
        }
    }
    flush(&mut num, sign, &mut total);
    total.unwrap()
}

fn score(s: &Sample, resp: &str) -> f64 {
    let rule = MathAccuracy::new("").unwrap();
    rule.score(&Completion {
        sample: s.clone(),
        response: resp.to_owned(),
        response_tokens: 0,
    })
    .unwrap()
    .total
}

#[test]
fn arithmetic_answers_are_right() {
    for split in ["train", "eval"] {
        let l = open(&format!(
            "task = \"arithmetic\"\nsplit = \"{split}\"\nlen = 3000"
        ));
        let mut terms_seen = HashSet::new();
        for i in 0..3000 {
            let s = l.get(i).unwrap();
            assert_eq!(s.messages.len(), 2);
            let q = user_text(&s);
            let expr = q
                .strip_prefix("Compute ")
                .and_then(|r| r.strip_suffix('.'))
                .unwrap();
            let want = eval_expression(expr);
            assert!((0..=18).contains(&want), "{q}");
            assert_eq!(s.answer.as_deref(), Some(want.to_string().as_str()), "{q}");
            let r = response(&s);
            assert!(is_r1_format(r), "{r}");
            // Every step of the trace is correct arithmetic and chains on.
            let think = r
                .strip_prefix("<think>")
                .unwrap()
                .split("</think>")
                .next()
                .unwrap();
            let steps: Vec<&str> = think.split(' ').collect();
            terms_seen.insert(steps.len() + 1);
            let mut prev: Option<i64> = None;
            for step in &steps {
                let (lhs, rhs) = step.split_once('=').unwrap();
                let v: i64 = rhs.parse().unwrap();
                assert_eq!(eval_expression(lhs), v, "step {step} of {r}");
                assert!((0..=18).contains(&v), "partial {v} out of range in {r}");
                if let Some(p) = prev {
                    assert!(lhs.starts_with(&p.to_string()), "{r}");
                }
                prev = Some(v);
            }
            assert_eq!(prev, Some(want));
            assert_eq!(r, format!("<think>{think}</think><answer>{want}</answer>"));
            assert_eq!(score(&s, r), 1.0);
            assert_eq!(
                score(
                    &s,
                    &format!("<think>x</think><answer>{}</answer>", want + 1)
                ),
                0.0
            );
            assert_eq!(meta(&s, "result"), want.to_string());
        }
        assert_eq!(terms_seen, HashSet::from([2, 3]));
    }
}

/// Reads the grid back from the decoded PNG: cell colour at its centre,
/// background at its corner.
fn decode_cells(png: &[u8], rows: u32, cols: u32) -> String {
    let img = image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8();
    assert_eq!(img.dimensions(), (cols * CELL_PX, rows * CELL_PX));
    let mut out = String::new();
    for r in 0..rows {
        for c in 0..cols {
            let (x0, y0) = (c * CELL_PX, r * CELL_PX);
            assert_eq!(img.get_pixel(x0, y0).0, [255, 255, 255], "cell corner");
            assert_eq!(
                img.get_pixel(x0 + 27, y0 + 27).0,
                [255, 255, 255],
                "cell corner"
            );
            let centre = img.get_pixel(x0 + 14, y0 + 14).0;
            // The square fills the cell but its margin, solid.
            let edge = img.get_pixel(x0 + 5, y0 + 22).0;
            assert_eq!(centre, edge);
            out.push(match centre {
                c if c == RED => 'R',
                c if c == BLUE => 'B',
                [255, 255, 255] => '.',
                other => panic!("unexpected colour {other:?}"),
            });
        }
    }
    out
}

#[test]
fn shapes_count_answers_match_the_image() {
    for (rows, cols) in [(2, 2), (3, 4)] {
        let l = open(&format!(
            "task = \"shapes-count\"\nrows = {rows}\ncols = {cols}\ncolors = [\"red\", \"blue\"]\nmin_add = 0\nmax_add = 7\nlen = 1000"
        ));
        let mut asked = HashSet::new();
        for i in 0..1000 {
            let s = l.get(i).unwrap();
            let cells = decode_cells(user_image(&s).unwrap(), rows, cols);
            assert_eq!(cells, meta(&s, "cells"));
            let q = user_text(&s);
            // "How many red squares? Add 3."
            let words: Vec<&str> = q.split(' ').collect();
            assert_eq!(words[..2], ["How", "many"], "{q}");
            let color = words[2];
            asked.insert(color.to_owned());
            let add: u32 = words[5].trim_end_matches('.').parse().unwrap();
            assert!(add <= 7);
            let letter = if color == "red" { 'R' } else { 'B' };
            let n = cells.chars().filter(|&c| c == letter).count() as u32;
            let want = (n + add).to_string();
            assert_eq!(s.answer.as_deref(), Some(want.as_str()), "{q} {cells}");
            let r = response(&s);
            assert!(is_r1_format(r), "{r}");
            assert!(
                r.contains(&format!("{color}={n} {n}+{add}={want}</think>")),
                "{r}"
            );
            assert_eq!(score(&s, r), 1.0);
        }
        assert_eq!(asked.len(), 2);
    }
    // The default: 2x2, red only, add 1..=5.
    let l = open("task = \"shapes-count\"\nlen = 200");
    for i in 0..200 {
        let s = l.get(i).unwrap();
        assert!(user_text(&s).starts_with("How many red squares? Add "));
        let add: u32 = meta(&s, "add").parse().unwrap();
        assert!((1..=5).contains(&add));
        assert_eq!(decode_cells(user_image(&s).unwrap(), 2, 2).len(), 4);
    }
}

#[test]
fn shapes_describe_matches_the_image() {
    let l = open("task = \"shapes-describe\"\nlen = 500\nsplit = \"eval\"");
    for i in 0..500 {
        let s = l.get(i).unwrap();
        let cells = decode_cells(user_image(&s).unwrap(), 2, 2);
        let (r, b) = (cells.matches('R').count(), cells.matches('B').count());
        assert_eq!(user_text(&s), "Describe the image.");
        assert_eq!(
            s.answer.as_deref(),
            Some(format!("{r} red {b} blue").as_str())
        );
        let words: Vec<String> = cells
            .chars()
            .map(|c| {
                match c {
                    'R' => "red",
                    'B' => "blue",
                    _ => ".",
                }
                .to_owned()
            })
            .collect();
        assert_eq!(
            response(&s),
            format!(
                "<think>see {}, red={r} blue={b}</think><answer>{r} red {b} blue</answer>",
                words.join(" ")
            )
        );
    }
}

#[test]
fn message_shape_and_system_prompt() {
    let l = open("task = \"shapes-count\"\nsystem_prompt = \"Think first.\"\nlen = 3");
    let s = l.get(0).unwrap();
    assert_eq!(s.messages.len(), 3);
    assert_eq!(s.messages[0].role, "system");
    assert_eq!(
        s.messages[0].content,
        vec![ContentPart::Text("Think first.".into())]
    );
    // The image comes before the question.
    assert!(matches!(
        s.messages[1].content[0],
        ContentPart::Image(ImageSource::Bytes(_))
    ));
    let a = open("task = \"arithmetic\"\nlen = 3").get(2).unwrap();
    assert_eq!(a.messages.len(), 2);
    assert_eq!(a.messages[0].content.len(), 1);
    for key in [
        "task",
        "split",
        "seed",
        "index",
        "expression",
        "operands",
        "ops",
        "trace",
        "result",
    ] {
        meta(&a, key);
    }
}

#[test]
fn errors() {
    let l = open("task = \"arithmetic\"\nlen = 3");
    let e = l.get(3).unwrap_err();
    assert!(e.contains("index 3") && e.contains("len 3"), "{e}");
    let e = SyntheticLoader::open("task = \"arithmetic\"", &["data/x.jsonl".into()]).unwrap_err();
    assert!(
        e.contains("reads no files") && e.contains("data/x.jsonl"),
        "{e}"
    );
}

/// In tiny problem spaces the draws reach exactly the enumerated problems of
/// each split (what DatasetInfo.notes reports), and no split is empty.
#[test]
fn tiny_spaces_are_covered_exactly() {
    for max in 1..=3 {
        let k = crate::arithmetic::ArithKnobs {
            min_terms: 2,
            max_terms: 2,
            max_operand: max,
            max_result: max,
        };
        let (train, eval) = crate::arithmetic::count_problems(&k, 1000).unwrap();
        for (split, want) in [("train", train), ("eval", eval)] {
            let cfg = format!(
                "task = \"arithmetic\"\nsplit = \"{split}\"\nmax_terms = 2\nmax_operand = {max}\nmax_result = {max}\nlen = 400"
            );
            let (l, info) = SyntheticLoader::open(&cfg, &[]).unwrap();
            assert!(want > 0, "{cfg}");
            let seen: HashSet<String> = (0..400).map(|i| problem_key(&l.get(i).unwrap())).collect();
            assert_eq!(seen.len() as u64, want, "{cfg}");
            assert!(info
                .notes
                .join(" ")
                .contains(&format!("{train} train, {eval} eval")));
        }
    }
}

/// `stop_early`: the same problems as without it, about that share of the
/// responses stopping one step early (well formed, answering the result
/// before the last step), the sample's `answer` still the true result.
#[test]
fn stop_early_slips_a_share_of_the_responses() {
    for (task, knobs) in [
        ("arithmetic", "min_terms = 3\nmax_terms = 4"),
        ("shapes-count", "colors = [\"red\", \"blue\"]"),
    ] {
        let base = format!("task = \"{task}\"\nlen = 2000\nseed = 3\n{knobs}");
        let (faithful, weak) = (open(&base), open(&format!("{base}\nstop_early = 0.7")));
        let mut slipped = 0;
        for i in 0..2000 {
            let (f, w) = (faithful.get(i).unwrap(), weak.get(i).unwrap());
            assert_eq!(user_text(&f), user_text(&w), "{task} {i}: the same problem");
            assert_eq!(f.answer, w.answer);
            assert_eq!(meta(&f, "stopped_early"), "false");
            let (rf, rw) = (response(&f), response(&w));
            assert!(is_r1_format(rw), "{rw}");
            if meta(&w, "stopped_early") == "false" {
                assert_eq!(rf, rw);
                continue;
            }
            slipped += 1;
            // The trace is the faithful one less its last step, and the
            // answer is the last value it shows.
            let (think_f, think_w) = (
                rf.split("</think>").next().unwrap(),
                rw.split("</think>").next().unwrap(),
            );
            let cut = think_f.rfind(' ').unwrap();
            assert_eq!(think_w, &think_f[..cut], "{task} {i}");
            let last = think_w.rsplit('=').next().unwrap();
            assert!(rw.ends_with(&format!("<answer>{last}</answer>")), "{rw}");
            // Wrong, but where the last step adds or takes 0.
            if w.answer.as_deref() == Some(last) {
                assert!(rf.contains("+0=") || rf.contains("-0="), "{rf} vs {rw}");
            }
        }
        let share = f64::from(slipped) / 2000.0;
        assert!((0.66..0.74).contains(&share), "{task}: share {share}");
    }
    // A two-term chain has no earlier result to stop at.
    let two = open("task = \"arithmetic\"\nmin_terms = 2\nmax_terms = 2\nstop_early = 1.0");
    for i in 0..50 {
        assert_eq!(meta(&two.get(i).unwrap(), "stopped_early"), "false");
    }
}

/// `swap_color`: the same problems, about that share of the counting traces
/// counting the colour not asked (its count, plus the number to add), the
/// sample's `answer` still the asked colour's.
#[test]
fn swap_color_counts_the_other_colour_in_a_share_of_the_traces() {
    let base = "task = \"shapes-count\"\nlen = 2000\nseed = 4\ncolors = [\"red\", \"blue\"]";
    let (faithful, weak) = (open(base), open(&format!("{base}\nswap_color = 0.5")));
    let mut swapped = 0;
    for i in 0..2000 {
        let (f, w) = (faithful.get(i).unwrap(), weak.get(i).unwrap());
        assert_eq!(user_text(&f), user_text(&w));
        assert_eq!(f.answer, w.answer);
        assert_eq!(meta(&w, "stopped_early"), "false");
        if meta(&w, "swapped_color") == "false" {
            assert_eq!(response(&f), response(&w));
            continue;
        }
        swapped += 1;
        let other = if meta(&w, "color") == "red" {
            "blue"
        } else {
            "red"
        };
        let n: u32 = meta(&w, other).parse().unwrap();
        let add: u32 = meta(&w, "add").parse().unwrap();
        let want = format!(
            "{other}={n} {n}+{add}={}</think><answer>{}</answer>",
            n + add,
            n + add
        );
        assert!(response(&w).ends_with(&want), "{} vs {want}", response(&w));
    }
    let share = f64::from(swapped) / 2000.0;
    assert!((0.46..0.54).contains(&share), "share {share}");
}
