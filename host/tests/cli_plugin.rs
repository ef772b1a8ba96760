//! `lmmhost plugin check|score` as a user runs them: exit codes, the printed
//! table and means, the JSONL of scores, and the messages of each failure.
//! Needs the built plugins (scripts/build-plugins.sh).

mod cli_support;

use cli_support::{lmmhost, ok, refused};
use std::path::PathBuf;

fn plugin(name: &str) -> String {
    cli_support::plugin(name).to_string_lossy().into_owned()
}

const SAMPLES: &str = r#"{"id": "a", "prompt": "2+2?", "response": "<think>2+2=4</think><answer>4</answer>", "answer": "4"}

{"sample": {"id": "b", "messages": [{"role": "user", "content": [{"type": "text", "text": "Half?"}]}], "answer": "0.5"}, "response": "It is \\boxed{\\frac{1}{2}}.", "response_tokens": 7}
{"id": "c", "prompt": "2+2?", "response": "<think>guess</think><answer>5</answer>", "answer": "4"}
{"prompt": "1?", "response": "no idea", "answer": "1"}
"#;

fn setup(samples: &str, config: &str) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().to_path_buf();
    std::fs::write(dir.join("samples.jsonl"), samples).unwrap();
    std::fs::write(dir.join("math.toml"), config).unwrap();
    (t, dir)
}

fn row<'a>(stdout: &'a str, id: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("no row for {id} in:\n{stdout}"))
}

#[test]
fn score_prints_the_table_and_means_and_writes_jsonl() {
    let (_t, dir) = setup(SAMPLES, "format = \"r1\"\n");
    let math = plugin("reward-math");
    let out = ok(
        &dir,
        &[
            "plugin",
            "score",
            &math,
            "--config",
            "math.toml",
            "--input",
            "samples.jsonl",
        ],
    );
    // Both input shapes; an id-less flat line is named by its line number.
    assert!(
        row(&out, "a").contains("1.500  format=0.5 accuracy=1"),
        "{out}"
    );
    assert!(
        row(&out, "b").contains("1.000  format=0 accuracy=1"),
        "{out}"
    );
    assert!(
        row(&out, "c").contains("0.500  format=0.5 accuracy=0"),
        "{out}"
    );
    assert!(row(&out, "line-5").contains("0.000"), "{out}");
    assert!(
        out.contains("4 completions, 0 failed; mean total 0.7500"),
        "{out}"
    );
    assert!(out.contains("mean format: 0.2500"), "{out}");
    assert!(out.contains("mean accuracy: 0.5000"), "{out}");
    assert!(
        out.contains("scores written to samples.scores.jsonl"),
        "{out}"
    );

    let jsonl = std::fs::read_to_string(dir.join("samples.scores.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    let ids: Vec<&str> = lines.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b", "c", "line-5"]);
    let totals: Vec<f64> = lines
        .iter()
        .map(|v| v["score"]["total"].as_f64().unwrap())
        .collect();
    assert_eq!(totals, [1.5, 1.0, 0.5, 0.0]);
    // Each line parses back as the SDK's Score.
    let s: lmmhost_sdk::Score = serde_json::from_value(lines[0]["score"].clone()).unwrap();
    assert_eq!(s.component("format"), Some(0.5));
    assert_eq!(s.component("accuracy"), Some(1.0));

    // --out, and no config (defaults: accuracy only).
    let out = ok(
        &dir,
        &[
            "plugin",
            "score",
            &math,
            "--input",
            "samples.jsonl",
            "--out",
            "s.jsonl",
        ],
    );
    assert!(
        out.contains("mean total 0.5000") && out.contains("scores written to s.jsonl"),
        "{out}"
    );
    assert!(!out.contains("mean format"), "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.join("s.jsonl"))
            .unwrap()
            .lines()
            .count(),
        4
    );
}

#[test]
fn a_failing_item_stops_the_run_or_scores_zero() {
    let samples = format!(
        "{SAMPLES}{}\n",
        r#"{"id": "noref", "response": "\\boxed{1}"}"#
    );
    let (_t, dir) = setup(&samples, "");
    let math = plugin("reward-math");
    let e = refused(
        &dir,
        &["plugin", "score", &math, "--input", "samples.jsonl"],
    );
    assert!(
        e.contains("reward-math")
            && e.contains("item 4")
            && e.contains("\"noref\"")
            && e.contains("`answer`"),
        "{e}"
    );
    assert!(
        !dir.join("samples.scores.jsonl").exists(),
        "nothing written on abort"
    );

    let out = ok(
        &dir,
        &[
            "plugin",
            "score",
            &math,
            "--input",
            "samples.jsonl",
            "--zero-on-error",
        ],
    );
    assert!(row(&out, "noref").contains("0 (err)  error:"), "{out}");
    assert!(
        out.contains("5 completions, 1 failed; mean total 0.4000"),
        "{out}"
    );
    let jsonl = std::fs::read_to_string(dir.join("samples.scores.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(jsonl.lines().last().unwrap()).unwrap();
    assert_eq!(last["id"], "noref");
    assert!(last["error"].as_str().unwrap().contains("answer"), "{last}");
}

#[test]
fn bad_inputs_and_configs_are_named() {
    let math = plugin("reward-math");
    // Invalid JSON on line 3.
    let (_t, dir) = setup("{\"response\": \"x\"}\n\n{\"response\": \n", "");
    let e = refused(
        &dir,
        &["plugin", "score", &math, "--input", "samples.jsonl"],
    );
    assert!(e.contains("samples.jsonl:3"), "{e}");
    // A Completion-shaped line with an error inside is reported as a Completion.
    let (_t, dir) = setup(
        "{\"sample\": {\"id\": \"b\", \"mesages\": []}, \"response\": \"x\"}\n",
        "",
    );
    let e = refused(
        &dir,
        &["plugin", "score", &math, "--input", "samples.jsonl"],
    );
    assert!(
        e.contains("samples.jsonl:1") && e.contains("mesages"),
        "{e}"
    );
    // A flat line with an unknown key names it.
    let (_t, dir) = setup("{\"response\": \"x\", \"anwser\": \"1\"}\n", "");
    let e = refused(
        &dir,
        &["plugin", "score", &math, "--input", "samples.jsonl"],
    );
    assert!(e.contains("samples.jsonl:1") && e.contains("anwser"), "{e}");
    // Empty input.
    let (_t, dir) = setup("\n\n", "");
    let e = refused(
        &dir,
        &["plugin", "score", &math, "--input", "samples.jsonl"],
    );
    assert!(e.contains("holds no completions"), "{e}");
    // The plugin refuses its config: the key is named.
    let (_t, dir) = setup(SAMPLES, "corect = 1.0\n");
    let e = refused(
        &dir,
        &[
            "plugin",
            "score",
            &math,
            "--config",
            "math.toml",
            "--input",
            "samples.jsonl",
        ],
    );
    assert!(e.contains("reward-math") && e.contains("corect"), "{e}");
    // Missing files.
    let e = refused(&dir, &["plugin", "score", &math, "--input", "nope.jsonl"]);
    assert!(e.contains("nope.jsonl"), "{e}");
    let e = refused(
        &dir,
        &[
            "plugin",
            "score",
            &math,
            "--config",
            "nope.toml",
            "--input",
            "samples.jsonl",
        ],
    );
    assert!(e.contains("nope.toml"), "{e}");
    // A loader is not a reward.
    let e = refused(
        &dir,
        &[
            "plugin",
            "score",
            &plugin("loader-jsonl"),
            "--input",
            "samples.jsonl",
        ],
    );
    assert!(
        e.contains("loader-plugin") && e.contains("reward-plugin"),
        "{e}"
    );
    // An out-of-version plugin is refused with both versions.
    let e = refused(
        &dir,
        &[
            "plugin",
            "score",
            &plugin("wrong-wit-version"),
            "--input",
            "samples.jsonl",
        ],
    );
    assert!(
        e.contains("needs lmmhost:plugin@0.9.0, this host speaks @0.1.0 and @0.2.0"),
        "{e}"
    );
}

#[test]
fn check_reports_world_version_and_compatibility() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let math = plugin("reward-math");
    let out = ok(dir, &["plugin", "check", &math]);
    let size = std::fs::metadata(&math).unwrap().len();
    assert!(out.contains("world:        reward-plugin"), "{out}");
    assert!(out.contains("wit version:  0.2.0"), "{out}");
    assert!(
        out.contains("compatible:   yes (host speaks lmmhost:plugin @0.1.0 and @0.2.0)"),
        "{out}"
    );
    assert!(
        out.contains(&format!("size:         {size} bytes")),
        "{out}"
    );
    assert!(out.contains("  lmmhost:plugin/reward@0.2.0"), "{out}");
    assert!(out.contains("  lmmhost:plugin/types@0.2.0"), "{out}");
    let out = ok(dir, &["plugin", "check", &plugin("schedule-staged")]);
    assert!(out.contains("world:        schedule-plugin"), "{out}");

    // Incompatible: printed, and the exit code says so (for scripts).
    let o = lmmhost(dir, &["plugin", "check", &plugin("wrong-wit-version")]);
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout
            .contains("compatible:   NO: plugin needs lmmhost:plugin@"),
        "{}",
        o.stdout
    );
    assert!(o.stderr.contains("not compatible"), "{}", o.stderr);
    // Not a component.
    std::fs::write(dir.join("x.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let e = refused(dir, &["plugin", "check", "x.wasm"]);
    assert!(e.contains("x.wasm is not a usable component"), "{e}");
}
