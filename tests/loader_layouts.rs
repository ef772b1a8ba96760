//! Every dataset layout of docs/loaders.md, read by the loader components
//! through the plugin host from fixtures in each project's exact format
//! (tests/fixtures/datasets/, written by its make_fixtures.py), plus image
//! roots granted apart from the data files, open-time errors and
//! `skip_bad_rows` reasons.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lmmhost_plugin_host::{LoaderPlugin, PluginRuntime, PluginSpec, RuntimeOptions};
use lmmhost_sdk::{ContentPart, ImageSource, Sample};
use lmmhost_tests::{plugin_wasm, repo_root};

fn open(name: &str, config: &str, grants: &[&Path]) -> anyhow::Result<LoaderPlugin> {
    let rt = PluginRuntime::new(RuntimeOptions { cache_dir: None }).unwrap();
    let mut s = PluginSpec::from_file(name, &plugin_wasm(name), config).unwrap();
    s.grants = grants.iter().map(|p| p.to_path_buf()).collect();
    s.log = Arc::new(|_| {});
    LoaderPlugin::new(&rt, s)
}

fn err(r: anyhow::Result<LoaderPlugin>) -> String {
    format!("{:#}", r.err().expect("open should fail"))
}

/// The fixtures directory, canonical (the host hands plugins canonical paths).
fn fx() -> PathBuf {
    std::fs::canonicalize(repo_root().join("tests/fixtures/datasets")).unwrap()
}

fn text(t: &str) -> ContentPart {
    ContentPart::Text(t.into())
}

fn image(p: &Path) -> ContentPart {
    ContentPart::Image(ImageSource::Path(p.to_string_lossy().into_owned()))
}

fn all(l: &LoaderPlugin) -> Vec<Sample> {
    (0..l.len()).map(|i| l.get(i).unwrap()).collect()
}

/// `image_roots = [...]` for the config, as the host writes it.
fn roots(dirs: &[&Path]) -> String {
    let list: Vec<String> = dirs
        .iter()
        .map(|d| format!("{:?}", d.to_string_lossy()))
        .collect();
    format!("image_roots = [{}]", list.join(", "))
}

#[test]
fn lmm_r1_images_in_another_folder_through_an_image_root() {
    // LMM-R1's own sample layout (examples/data/test_message.jsonl): the
    // message list is a JSON string, images are absolute paths into a
    // folder that is not the data file's.
    let t = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(t.path()).unwrap();
    let (data_dir, img_dir) = (dir.join("data"), dir.join("images"));
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::create_dir_all(&img_dir).unwrap();
    std::fs::copy(fx().join("images/red.png"), img_dir.join("1.jpg")).unwrap();
    let img = img_dir.join("1.jpg");
    let message = serde_json::json!([
        {"role": "system", "content": "Solve the question. ... <answer> The answer is $\\boxed{2}$ </answer>"},
        {"role": "user", "content": [
            {"type": "text", "text": "Which number should be written in place of the question mark?\n"},
            {"type": "image", "image": format!("{}/images//1.jpg", dir.display())}
        ]}
    ]);
    let row = serde_json::json!({
        "question": "Which number should be written in place of the question mark?\n",
        "answer": "$\\boxed{60}$",
        "message": message.to_string(),
    });
    let file = data_dir.join("test_message.jsonl");
    std::fs::write(&file, format!("{row}\n")).unwrap();

    // Only the file granted: the image is refused at open, with the fix named.
    let e = err(open("loader-jsonl", "", &[&file]));
    assert!(
        e.contains("test_message.jsonl:1:")
            && e.contains("outside the granted directories")
            && e.contains("`images`"),
        "{e}"
    );
    // The image folder as an image root (granted read-only; not a data directory).
    let l = open("loader-jsonl", &roots(&[&img_dir]), &[&file, &img_dir]).unwrap();
    let s = l.get(0).unwrap();
    assert_eq!(s.messages[1].content[1], image(&img));
    assert_eq!(s.answer.as_deref(), Some("$\\boxed{60}$"));
    // A root the host did not grant is an error naming the root and the key.
    let other = dir.join("elsewhere");
    std::fs::create_dir_all(&other).unwrap();
    let e = err(open("loader-jsonl", &roots(&[&other]), &[&file]));
    assert!(e.contains("elsewhere") && e.contains("`images`"), "{e}");
}

#[test]
fn easyr1_image_dir_and_prompt_column() {
    let f = fx();
    let imgs = f.join("images");
    let cfg = format!(
        "image_dir = {:?}\n{}",
        imgs.to_string_lossy(),
        roots(&[&imgs])
    );
    let l = open(
        "loader-jsonl",
        &cfg,
        &[&f.join("easyr1/train.jsonl"), &imgs],
    )
    .unwrap();
    let s = all(&l);
    assert_eq!(s.len(), 3);
    assert_eq!(
        s[1].messages[0].content,
        vec![
            text("Compare "),
            image(&imgs.join("red.png")),
            text(" and "),
            image(&imgs.join("blue.png")),
            text(". Which is blue? Answer A or B."),
        ]
    );
    assert_eq!(s[2].answer.as_deref(), Some("42"));
    // `image_dir` relative to the data file's directory; EasyR1's `prompt` column.
    let cfg = format!("image_dir = \"../images\"\n{}", roots(&[&imgs]));
    let l = open(
        "loader-jsonl",
        &cfg,
        &[&f.join("easyr1/prompt_key.jsonl"), &imgs],
    )
    .unwrap();
    let s = l.get(0).unwrap();
    assert_eq!(
        s.messages[0].content,
        vec![image(&imgs.join("red.png")), text("Colour?")]
    );
    assert_eq!(s.answer.as_deref(), Some("red"));
}

#[test]
fn json_array_files_llamafactory_sharegpt_alpaca_openrlhf() {
    let f = fx();
    let imgs = f.join("images");
    let cfg = format!("image_dir = \"..\"\n{}", roots(&[&imgs]));
    // A directory grant: alpaca.json, mllm_demo.json, sharegpt.json, sorted.
    let l = open("loader-jsonl", &cfg, &[&f.join("llamafactory"), &imgs]).unwrap();
    let s = all(&l);
    assert_eq!(s.len(), 1 + 2 + 2);
    // Alpaca: instruction + "\n" + input, output as the assistant turn.
    assert_eq!(s[0].messages[0].content, vec![text("Compute.\n3*4")]);
    assert_eq!(s[0].messages[1].role, "assistant");
    // LLaMA-Factory messages, the element's line is in its id.
    assert_eq!(s[1].id, "mllm_demo.json:2");
    assert_eq!(
        s[1].messages[0].content,
        vec![
            image(&imgs.join("red.png")),
            text("Which colour is the square?")
        ]
    );
    assert_eq!(s[2].id, "mllm_demo.json:17");
    // ShareGPT: system field, human/gpt turns, images at placeholders.
    let roles: Vec<&str> = s[3].messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant"]);
    assert_eq!(
        s[3].messages[0].content,
        vec![text("You are a careful annotator.")]
    );
    assert_eq!(s[3].messages[1].content[0], image(&imgs.join("blue.png")));
    assert_eq!(s[4].messages.len(), 4);
    assert_eq!(s[4].messages[3].content, vec![text("42")]);
    // OpenRLHF prompts saved as one JSON array.
    let l = open("loader-jsonl", "", &[&f.join("openrlhf/prompts.json")]).unwrap();
    assert_eq!(l.get(0).unwrap().answer.as_deref(), Some("$\\boxed{81}$"));
    // A truncated array is refused at open, naming where the open element starts.
    let e = err(open(
        "loader-jsonl",
        &cfg,
        &[&f.join("broken/truncated.json"), &imgs],
    ));
    assert!(
        e.contains(
            "truncated.json:17: the JSON array is not closed: the file ends inside element 2"
        ),
        "{e}"
    );
}

#[test]
fn ms_swift_query_response_with_history() {
    let f = fx();
    let imgs = f.join("images");
    let l = open(
        "loader-jsonl",
        &roots(&[&imgs]),
        &[&f.join("ms-swift"), &imgs],
    )
    .unwrap();
    let s = all(&l);
    let roles: Vec<&str> = s[0].messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user", "assistant"]);
    assert_eq!(
        s[0].messages[3].content,
        vec![image(&imgs.join("red.png")), text("What colour is it?")]
    );
    assert_eq!(s[0].messages[4].content, vec![text("It is red.")]);
    assert_eq!(s[1].messages.len(), 2);
    assert_eq!(s[1].answer, None, "SFT rows carry no reference answer");
}

#[test]
fn verl_parquet_with_a_list_ground_truth() {
    let l = open("loader-parquet", "", &[&fx().join("verl/train.parquet")]).unwrap();
    let s = all(&l);
    assert_eq!(s[0].answer.as_deref(), Some("3"));
    assert!(matches!(
        s[0].messages[0].content[0],
        ContentPart::Image(ImageSource::Bytes(_))
    ));
    assert_eq!(s[1].answer.as_deref(), Some("2"));
    let answers = s[1]
        .metadata
        .iter()
        .find(|(k, _)| k == "answers")
        .map(|(_, v)| v.as_str());
    assert_eq!(answers, Some("[\"2\",\"-2\"]"));
    assert!(s[0].metadata.iter().all(|(k, _)| k != "answers"));
}

#[test]
fn parquet_in_zstd_snappy_gzip_and_lz4() {
    let dir = fx().join("codecs");
    let l = open("loader-parquet", "", &[&dir]).unwrap();
    // polars' default (zstd) and pyarrow's gzip, lz4, snappy, zstd: 5 files x 3 rows.
    assert_eq!(l.len(), 15);
    for (i, s) in all(&l).iter().enumerate() {
        let want = ["2", "5", "42"][i % 3];
        assert_eq!(s.answer.as_deref(), Some(want), "{}", s.id);
    }
}

#[test]
fn lmm_r1_sokoban_rows_read_their_level() {
    let f = fx();
    let imgs = f.join("images");
    let l = open(
        "loader-jsonl",
        &roots(&[&imgs]),
        &[&f.join("sokoban"), &imgs],
    )
    .unwrap();
    let s = l.get(0).unwrap();
    assert_eq!(s.answer, None);
    let meta = |k: &str| {
        s.metadata
            .iter()
            .find(|(m, _)| m == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(meta("level").as_deref(), Some("#####\n#@$.#\n#####"));
    assert_eq!(
        meta("question").as_deref(),
        Some("Sokoban-small-v0-level_0")
    );
    assert_eq!(s.messages[1].content[0], image(&imgs.join("red.png")));
}

#[test]
fn malformed_rows_at_open_and_skip_reasons_per_class() {
    let t = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(t.path()).unwrap();
    let file = dir.join("train.jsonl");
    let rows = [
        r#"{"problem": "1+1?", "answer": "2"}"#,
        r#"{"problem": "2+2?"}"#,
        r#"{"problem": 5, "answer": "3"}"#,
        r#"{"problem": "3+3?"}"#,
        r#"{"problem": "<image>x", "answer": "1", "images": ["a.png", "b.png"]}"#,
        r#"{"problem": "4+4?""#,
    ];
    std::fs::write(&file, rows.join("\n")).unwrap();
    // Without skipping: the first bad row, at open, by file, line, field and expectation.
    let e = err(open("loader-jsonl", "", &[&file]));
    assert!(e.contains("train.jsonl:2: missing field `answer`"), "{e}");
    let e = err(open(
        "loader-jsonl",
        "format = \"easyr1\"\nskip_bad_rows = false",
        &[&dir.join("nope.jsonl")],
    ));
    assert!(e.contains("nope.jsonl"), "{e}");
    // Lazy mode keeps the error for `get`.
    let l = open("loader-jsonl", "validate_at_open = false", &[&file]).unwrap();
    assert_eq!(l.len(), 6);
    let e = format!("{:#}", l.get(2).unwrap_err());
    assert!(
        e.contains("train.jsonl:3: `problem` must be a string, got a number"),
        "{e}"
    );
    // Skipping: the first reasons in full, then a count per reason.
    let l = open(
        "loader-jsonl",
        "skip_bad_rows = true\nmax_notes = 2",
        &[&file],
    )
    .unwrap();
    let info = l.info();
    assert_eq!((info.len, info.skipped_rows), (1, 5));
    assert_eq!(info.notes.len(), 2 + 4, "{:#?}", info.notes);
    assert!(
        info.notes[0].ends_with("train.jsonl:2: missing field `answer`"),
        "{:?}",
        info.notes
    );
    assert_eq!(info.notes[2], "2 rows skipped: missing field `answer`");
    assert!(info.notes[3..]
        .iter()
        .any(|n| n == "1 row skipped: `problem` must be a string, got a number"));
    assert!(info.notes[3..]
        .iter()
        .any(|n| n.starts_with("1 row skipped: invalid JSON: EOF while parsing")));
    assert!(info.notes[3..]
        .iter()
        .any(|n| n.contains("placeholders but `images` has N entries")));
}

/// The host's `images = [...]`: image folders granted through the spec's
/// `image_roots`, apart from the data. The loader is opened on the data
/// file alone and finds the roots in its config.
#[test]
fn image_roots_are_granted_apart_from_the_data() {
    let t = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(t.path()).unwrap();
    let (data_dir, img_dir) = (dir.join("data"), dir.join("images"));
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::create_dir_all(img_dir.join("sub")).unwrap();
    std::fs::copy(fx().join("images/red.png"), img_dir.join("sub/1.png")).unwrap();
    // A data file inside the image folder is still not data.
    std::fs::write(img_dir.join("stray.jsonl"), "not json\n").unwrap();
    let row = |img: &Path| {
        serde_json::json!({"problem": "<image>Colour?", "answer": "red",
                           "images": [img.to_string_lossy()]})
    };
    let file = data_dir.join("train.jsonl");
    std::fs::write(&file, format!("{}\n", row(&img_dir.join("sub/1.png")))).unwrap();
    let open_with_roots = |config: &str, grants: &[&Path], roots: &[&Path]| {
        let rt = PluginRuntime::new(RuntimeOptions { cache_dir: None }).unwrap();
        let mut s =
            PluginSpec::from_file("loader-jsonl", &plugin_wasm("loader-jsonl"), config).unwrap();
        s.grants = grants.iter().map(|p| p.to_path_buf()).collect();
        s.image_roots = roots.iter().map(|p| p.to_path_buf()).collect();
        s.log = Arc::new(|_| {});
        LoaderPlugin::new(&rt, s)
    };
    let l = open_with_roots("", &[&file], &[&img_dir]).unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(
        l.get(0).unwrap().messages[0].content,
        vec![image(&img_dir.join("sub/1.png")), text("Colour?")]
    );
    // A data file inside a root: visible through the root, with its siblings
    // (no staging directory hides them).
    let inside = img_dir.join("sub/train.jsonl");
    std::fs::copy(&file, &inside).unwrap();
    let l = open_with_roots("", &[&inside], &[&img_dir]).unwrap();
    assert_eq!(l.get(0).unwrap().answer.as_deref(), Some("red"));
    // Roots named in the config as well: refused, the host's list is the one.
    let e = err(open_with_roots(&roots(&[&img_dir]), &[&file], &[&img_dir]));
    assert!(e.contains("image_roots") && e.contains("`images`"), "{e}");
    // A root that is missing or a file is named.
    let e = err(open_with_roots("", &[&file], &[&dir.join("nope")]));
    assert!(
        e.contains("image root") && e.contains("nope") && e.contains("does not exist"),
        "{e}"
    );
    let e = err(open_with_roots("", &[&file], &[&file]));
    assert!(e.contains("is not a directory"), "{e}");
}
