//! `lmmhost data`, through the binary on the tiny Qwen2.5-VL (its directory
//! has no weights: the command reads none) and the layout fixtures of
//! tests/fixtures/datasets/: what it shows is what a run's processor sees.

mod cli_support;

use std::path::Path;

use cli_support::experiments::{
    easyr1_dataset, experiment, fixtures, lmm_r1_dataset, lmm_r1_sibling_layout, tiny_vl,
    with_init, LMM_R1_QUESTION,
};
use cli_support::{lmmhost, ok, refused};
use lmmhost_model::processor::{ImageInput, Message, Part, Processor};
use serde_json::Value;

fn json(dir: &Path, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["data"];
    all.extend_from_slice(args);
    all.push("--json");
    let o = lmmhost(dir, &all);
    let v = serde_json::from_str(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", o.stdout, o.stderr));
    (o.code, v)
}

/// The tokens the run's processor gives a one-turn prompt.
fn prompt_tokens(parts: Vec<Part>) -> usize {
    let p = Processor::from_dir(tiny_vl()).unwrap();
    let conv = vec![Message {
        role: "user".into(),
        parts,
    }];
    p.encode(&[conv], true).unwrap()[0].len()
}

#[test]
fn lmm_r1_sibling_folder_is_shown_as_the_processor_sees_it() {
    let t = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(t.path()).unwrap();
    let img_path = lmm_r1_sibling_layout(&dir);
    experiment(&dir, &lmm_r1_dataset(true), "geo", "pretrained");
    // `lmmhost data` shows the sample as the step saw it.
    let (code, r) = json(&dir, &["exp.toml"]);
    assert_eq!(code, 0, "{r}");
    let d = &r["datasets"][0];
    assert_eq!(d["name"], "geo");
    assert_eq!(d["samples"], 2);
    assert_eq!(d["images"][0], dir.join("images").display().to_string());
    let s = &d["shown"][0];
    let img = &s["images"][0];
    assert_eq!(
        img["source"],
        dir.join("images/1.png").display().to_string()
    );
    // A 2x2 image is scaled up to min_pixels (56x56): 2x2 merged patches.
    assert_eq!((&img["width"], &img["height"]), (&2.into(), &2.into()));
    assert_eq!(
        (&img["resized_width"], &img["resized_height"]),
        (&56.into(), &56.into())
    );
    assert_eq!(img["tokens"], 4);
    assert_eq!(s["image_tokens"], 4);
    let want = prompt_tokens(vec![
        Part::Image(ImageInput::Path(img_path)),
        Part::Text(LMM_R1_QUESTION.into()),
    ]);
    assert_eq!(s["prompt_tokens"], want);
    assert_eq!(s["answer"], "$\\boxed{60}$");
    assert!(d["skipped"].as_array().unwrap().is_empty(), "{d}");
    assert!(d["refused"].as_array().unwrap().is_empty(), "{d}");
}

/// `model.min_pixels` / `model.max_pixels` replace the checkpoint's values
/// in what `lmmhost data` measures, as in a run; impossible bounds are refused
/// naming the key.
#[test]
fn image_resolution_keys_change_the_counted_tokens() {
    let t = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(t.path()).unwrap();
    lmm_r1_sibling_layout(&dir);
    experiment(&dir, &lmm_r1_dataset(true), "geo", "pretrained");
    // A 2x2 image scaled up to 112x112 pixels: 4x4 merged patches.
    let (code, r) = json(&dir, &["exp.toml", "--set", "model.min_pixels=12544"]);
    assert_eq!(code, 0, "{r}");
    let img = &r["datasets"][0]["shown"][0]["images"][0];
    assert_eq!(
        (&img["resized_width"], &img["resized_height"]),
        (&112.into(), &112.into())
    );
    assert_eq!(img["tokens"], 16);
    let err = refused(
        &dir,
        &[
            "data",
            "exp.toml",
            "--set",
            "model.min_pixels=5000",
            "--set",
            "model.max_pixels=4000",
        ],
    );
    assert!(
        err.contains("model.min_pixels = 5000: must be at most model.max_pixels = 4000"),
        "{err}"
    );
    let err = refused(&dir, &["data", "exp.toml", "--set", "model.max_pixels=700"]);
    assert!(
        err.contains("model.max_pixels = 700: must be >= 784"),
        "{err}"
    );
}

#[test]
fn easyr1_image_dir_every_sample_shown() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let f = fixtures();
    experiment(dir, &easyr1_dataset(), "easy", "pretrained");
    let (code, r) = json(dir, &["exp.toml", "--samples", "3"]);
    assert_eq!(code, 0, "{r}");
    let d = &r["datasets"][0];
    assert_eq!(d["samples"], 3);
    assert_eq!(d["samples_with_images"], 2);
    assert_eq!(d["image_count"], 3);
    assert_eq!(d["without_answer"], 0);
    let shown = d["shown"].as_array().unwrap();
    assert_eq!(shown.len(), 3);
    let answers: Vec<&str> = shown
        .iter()
        .map(|s| s["answer"].as_str().unwrap())
        .collect();
    assert_eq!(answers, ["1", "B", "42"]);
    let image_tokens: Vec<u64> = shown
        .iter()
        .map(|s| s["image_tokens"].as_u64().unwrap())
        .collect();
    assert_eq!(image_tokens, [4, 8, 0]);
    assert_eq!(
        shown[1]["images"][1]["source"],
        f.join("images/blue.png").display().to_string()
    );
    let rendered = shown[1]["prompt"].as_str().unwrap();
    assert!(
        rendered.contains("Compare <|vision_start|><|image_pad|><|vision_end|> and"),
        "{rendered}"
    );
    assert_eq!(
        shown[2]["prompt_tokens"],
        prompt_tokens(vec![Part::Text("What is 12 + 30?".into())])
    );
    let stats = &d["prompt_tokens"];
    assert_eq!(stats["count"], 3);
    assert_eq!(stats["max"], shown[1]["prompt_tokens"]);

    // The terminal form says the same.
    let text = ok(dir, &["data", "exp.toml", "--samples", "1"]);
    for want in [
        "== dataset easy (loader jsonl)",
        "samples     3 (0 rows skipped by the loader)",
        "red.png 2x2 -> 56x56, 4 tokens",
        "answer      1",
        "prompt      <|im_start|>system",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    assert!(!text.contains("sample 1 (id"), "one sample shown\n{text}");
}

#[test]
fn data_names_what_a_run_would_skip_or_stop_on() {
    let t = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(t.path()).unwrap();
    let imgs = dir.join("images");
    std::fs::create_dir_all(&imgs).unwrap();
    std::fs::copy(fixtures().join("images/red.png"), imgs.join("red.png")).unwrap();
    let long = "many words ".repeat(40);
    let rows = [
        serde_json::json!({"problem": "<image>Colour?", "answer": "red", "images": ["red.png"]}),
        serde_json::json!({"problem": format!("{long}?"), "answer": "1"}),
        serde_json::json!({"problem": "<image>Shape?", "answer": "square", "images": ["gone.png"]}),
        serde_json::json!({"problem": 7, "answer": "x"}),
        serde_json::json!({"problem": "Sum?", "answer": ""}),
    ];
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(dir.join("rows.jsonl"), body).unwrap();
    let sft = serde_json::json!({"messages": [
        {"role": "user", "content": "Add 2 and 3."},
        {"role": "assistant", "content": long},
    ]});
    std::fs::write(dir.join("sft.jsonl"), format!("{sft}\n")).unwrap();
    let ds =
        "[datasets.mixed]\nloader = \"jsonl\"\nfiles = [\"rows.jsonl\"]\nimages = [\"images\"]\n\
              config = { image_dir = \"images\", skip_bad_rows = true }\n\
              [datasets.sft]\nloader = \"jsonl\"\nfiles = [\"sft.jsonl\"]\n";
    let exp = experiment(&dir, ds, "mixed", "pretrained");
    // A step could draw every prompt.
    let text = std::fs::read_to_string(&exp).unwrap();
    std::fs::write(
        &exp,
        text.replace("prompts_per_step = 2", "prompts_per_step = 4"),
    )
    .unwrap();
    let set = [
        "--set",
        "rollout.max_prompt_tokens=60",
        "--set",
        "sft.max_tokens=50",
    ];
    let mut args = vec!["exp.toml"];
    args.extend_from_slice(&set);
    let (code, r) = json(&dir, &args);
    assert_eq!(code, 1, "a missing image stops a run: {r}");
    assert_eq!(r["max_prompt_tokens"], 60);
    let d = &r["datasets"][0];
    assert_eq!(d["name"], "mixed");
    // The rows whose `problem` is a number and whose answer is empty are
    // the loader's to skip, with why.
    assert_eq!(d["samples"], 3);
    assert_eq!(d["loader_skipped_rows"], 2);
    let notes = d["loader_notes"].to_string();
    assert!(notes.contains("rows.jsonl:4"), "{notes}");
    assert!(notes.contains("`answer` is empty"), "{notes}");
    assert_eq!(d["without_answer"], 0);
    let skipped = d["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(
        skipped[0]["reason"],
        "GRPO stages skip it: prompt longer than rollout.max_prompt_tokens = 60"
    );
    assert_eq!(skipped[0]["count"], 1);
    assert_eq!(skipped[0]["examples"][0]["index"], 1);
    let long_tokens = prompt_tokens(vec![Part::Text(format!("{long}?"))]);
    assert!(long_tokens > 60);
    assert_eq!(
        skipped[0]["examples"][0]["detail"],
        format!("{long_tokens} tokens")
    );
    let refused_ = d["refused"].as_array().unwrap();
    assert_eq!(refused_.len(), 1, "{refused_:?}");
    assert_eq!(refused_[0]["reason"], "image file missing");
    let detail = refused_[0]["examples"][0]["detail"].as_str().unwrap();
    assert_eq!(
        detail,
        format!(
            "image 0: {} does not exist",
            imgs.join("gone.png").display()
        )
    );
    // The SFT dataset: its one conversation is over sft.max_tokens.
    let s = &r["datasets"][1];
    assert_eq!(s["name"], "sft");
    assert_eq!(s["conversation_tokens"]["count"], 1);
    assert_eq!(
        s["skipped"][0]["reason"],
        "SFT stages skip it: conversation longer than sft.max_tokens = 50"
    );
    let worked = s["shown"][0]["worked_answer"].as_str().unwrap();
    assert_eq!(worked, long);
    assert_eq!(s["shown"][0]["answer"], Value::Null);

    // The terminal form, for one dataset, exits 1 after the report.
    let mut args = vec!["data", "exp.toml", "--dataset", "mixed"];
    args.extend_from_slice(&set);
    let o = lmmhost(&dir, &args);
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    assert!(!o.stdout.contains("== dataset sft"), "{}", o.stdout);
    for want in [
        "skipped 1 sample(s): GRPO stages skip it",
        "refused 1 sample(s): image file missing",
        "gone.png does not exist",
        "loader: ",
    ] {
        assert!(o.stdout.contains(want), "{want:?} in\n{}", o.stdout);
    }
    assert!(
        o.stderr.contains("1 problem(s) would stop a run"),
        "{}",
        o.stderr
    );
    // A run drawing that sample stops on it, as `data` said.
    with_init(&exp, "random");
    let err = refused(&dir, &["run", "exp.toml"]);
    assert!(err.contains("gone.png"), "{err}");

    let err = refused(&dir, &["data", "exp.toml", "--dataset", "nope"]);
    assert!(
        err.contains("no dataset of that name") && err.contains("mixed, sft"),
        "{err}"
    );
}

/// docs/loaders.md's `lmmhost data` section: its commands run as shown
/// (from the repository root), the first prints every line of the excerpt
/// (paths relative to the root), and the JSON form reads every layout of
/// configs/layouts.toml without a problem.
#[test]
fn documented_commands_print_what_the_docs_show() {
    let root = std::fs::canonicalize(cli_support::experiments::repo()).unwrap();
    let doc = std::fs::read_to_string(root.join("docs/loaders.md")).unwrap();
    let start = doc
        .find("## What the loaders produce: `lmmhost data`")
        .unwrap();
    let section = &doc[start..];
    let section = &section[..section[3..].find("\n## ").unwrap() + 3];
    let block = |lang: &str| {
        let b = &section[section.find(&format!("```{lang}\n")).unwrap() + lang.len() + 4..];
        b[..b.find("```").unwrap()].to_string()
    };
    let commands: Vec<Vec<String>> = block("sh")
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert_eq!(commands.len(), 2);
    let t = tempfile::tempdir().unwrap();
    let run = |cmd: &[String]| {
        assert_eq!(cmd[0], "lmmhost");
        let args: Vec<String> = cmd[1..]
            .iter()
            .map(|a| match a.strip_prefix("configs/") {
                Some(_) => root.join(a).display().to_string(),
                None => a.clone(),
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = lmmhost(t.path(), &args);
        assert_eq!(o.code, 0, "{cmd:?}\n{}\n{}", o.stdout, o.stderr);
        o.stdout.replace(&format!("{}/", root.display()), "")
    };
    let text = run(&commands[0]);
    for line in block("text").lines() {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
    let r: Value = serde_json::from_str(&run(&commands[1])).unwrap();
    let names: Vec<&str> = r["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "easyr1",
            "llamafactory",
            "ms-swift",
            "openrlhf",
            "sokoban",
            "verl"
        ]
    );
    for d in r["datasets"].as_array().unwrap() {
        assert!(d["error"].is_null(), "{d}");
        assert!(d["samples"].as_u64().unwrap() > 0, "{d}");
        assert_eq!(d["refused"].as_array().unwrap().len(), 0, "{d}");
        assert_eq!(d["skipped"].as_array().unwrap().len(), 0, "{d}");
    }
    // verl's image is a Hugging Face struct of bytes, shown by its size.
    let verl = &r["datasets"][5]["shown"][0]["images"][0];
    assert_eq!(verl["source"], "73 bytes given inline");
    assert_eq!(verl["tokens"], 4);
}
