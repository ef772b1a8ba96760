//! loader-jsonl and loader-parquet loaded as components through the plugin
//! host, reading datasets the test writes into a temporary directory that is
//! the only thing granted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lmmhost_plugin_host::{LoaderPlugin, PluginRuntime, PluginSpec, RuntimeOptions};
use lmmhost_sdk::{ContentPart, ImageSource, Sample};
use lmmhost_tests::{plugin_wasm, repo_root};

fn runtime() -> PluginRuntime {
    PluginRuntime::new(RuntimeOptions { cache_dir: None }).unwrap()
}

fn open(name: &str, config: &str, grants: &[&Path]) -> anyhow::Result<LoaderPlugin> {
    let mut s = PluginSpec::from_file(name, &plugin_wasm(name), config).unwrap();
    s.grants = grants.iter().map(|p| p.to_path_buf()).collect();
    s.log = Arc::new(|_| {});
    LoaderPlugin::new(&runtime(), s)
}

fn text(t: &str) -> ContentPart {
    ContentPart::Text(t.into())
}

fn path_image(p: &Path) -> ContentPart {
    ContentPart::Image(ImageSource::Path(p.to_string_lossy().into_owned()))
}

fn bytes_image(b: &[u8]) -> ContentPart {
    ContentPart::Image(ImageSource::Bytes(b.to_vec()))
}

/// A temporary dataset directory, canonical (the host hands plugins canonical paths).
fn dataset_dir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(t.path()).unwrap();
    (t, dir)
}

const JSONL: &str = r####"{"message": "[{\"role\": \"user\", \"content\": [{\"type\": \"image\", \"image\": \"imgs/1.png\"}, {\"type\": \"text\", \"text\": \"Find x.\"}]}]", "answer": "$\\boxed{60}$", "source": "geoqa"}
{"id": "e-2", "problem": "<image>What is the area?", "answer": 12, "images": ["file://IMGDIR/1.png"]}

{"messages": [{"role": "user", "content": "<image>Describe."}, {"role": "assistant", "content": "<think>a</think><answer>4</answer>"}], "images": [{"bytes": "iVBORw=="}]}
{"problem": "2+2?"}
{"problem": "Push the box.", "answer": "R", "level": ["###", "#@#"], "note": null}
"####;

fn write_jsonl(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("imgs")).unwrap();
    std::fs::write(dir.join("imgs/1.png"), [0x89, b'P', b'N', b'G']).unwrap();
    let data = dir.join("data.jsonl");
    let imgdir = dir.join("imgs");
    std::fs::write(&data, JSONL.replace("IMGDIR", &imgdir.to_string_lossy())).unwrap();
    data
}

#[test]
fn loader_jsonl_reads_the_three_layouts_and_names_bad_rows() {
    let (_t, dir) = dataset_dir();
    let data = write_jsonl(&dir);
    // By default a bad row fails `open`, naming its file and line.
    let e = format!("{:#}", open("loader-jsonl", "", &[&dir]).err().unwrap());
    assert!(
        e.contains(&format!("{}:5: missing field `answer`", data.display())),
        "{e}"
    );
    let l = open("loader-jsonl", "validate_at_open = false", &[&dir]).unwrap();
    // Blank lines do not count; with `validate_at_open = false` bad rows are found lazily.
    assert_eq!(l.info().len, 5);
    assert_eq!(l.info().skipped_rows, 0);
    let img = dir.join("imgs/1.png");

    let s0 = l.get(0).unwrap();
    assert_eq!(s0.id, "data.jsonl:1");
    assert_eq!(s0.messages.len(), 1);
    assert_eq!(s0.messages[0].role, "user");
    assert_eq!(
        s0.messages[0].content,
        vec![path_image(&img), text("Find x.")]
    );
    assert_eq!(s0.answer.as_deref(), Some("$\\boxed{60}$"));
    assert_eq!(s0.metadata, vec![("source".to_owned(), "geoqa".to_owned())]);

    let s1 = l.get(1).unwrap();
    assert_eq!(s1.id, "e-2");
    assert_eq!(s1.answer.as_deref(), Some("12"));
    assert_eq!(
        s1.messages[0].content,
        vec![path_image(&img), text("What is the area?")]
    );

    let s2 = l.get(2).unwrap();
    assert_eq!(s2.id, "data.jsonl:4");
    assert_eq!(s2.answer, None);
    assert_eq!(
        s2.messages
            .iter()
            .map(|m| m.role.as_str())
            .collect::<Vec<_>>(),
        ["user", "assistant"]
    );
    assert_eq!(
        s2.messages[0].content,
        vec![bytes_image(&[0x89, b'P', b'N', b'G']), text("Describe.")]
    );
    assert_eq!(
        s2.messages[1].content,
        vec![text("<think>a</think><answer>4</answer>")]
    );

    // Line 5 has no answer: the error names the file and line, through the host.
    let e = format!("{:#}", l.get(3).unwrap_err());
    assert!(
        e.contains("loader-jsonl")
            && e.contains(&format!("{}:5", data.display()))
            && e.contains("`answer`"),
        "{e}"
    );

    // Lists in unused fields travel as compact JSON; nulls are dropped.
    let s4 = l.get(4).unwrap();
    assert_eq!(
        s4.metadata,
        vec![("level".to_owned(), r####"["###","#@#"]"####.to_owned())]
    );
    // One call for several samples, in the order asked.
    let many: Vec<Sample> = l.get_many(&[4, 0, 1]).unwrap();
    assert_eq!(
        many.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["data.jsonl:6", "data.jsonl:1", "e-2"]
    );
    let e = format!("{:#}", l.get(5).unwrap_err());
    assert!(e.contains("out of range"), "{e}");
}

#[test]
fn loader_jsonl_skips_and_counts_bad_rows_and_applies_the_template() {
    let (_t, dir) = dataset_dir();
    let data = write_jsonl(&dir);
    let cfg = "skip_bad_rows = true\nsystem_prompt = \"Be brief.\"\ninstruction_suffix = \" Answer in <answer></answer>.\"";
    let l = open("loader-jsonl", cfg, &[&dir]).unwrap();
    assert_eq!((l.info().len, l.info().skipped_rows), (4, 1));
    assert!(
        l.info().notes[0].contains(&format!("{}:5", data.display())),
        "{:?}",
        l.info().notes
    );
    let s = l.get(1).unwrap();
    assert_eq!(s.messages[0].role, "system");
    assert_eq!(s.messages[0].content, vec![text("Be brief.")]);
    assert_eq!(
        s.messages[1].content.last(),
        Some(&text("What is the area? Answer in <answer></answer>."))
    );
    // Index 3 is now the row after the skipped one.
    assert_eq!(l.get(3).unwrap().answer.as_deref(), Some("R"));
}

#[test]
fn loader_jsonl_refuses_images_outside_the_grant_and_bad_configs() {
    let (_t, dir) = dataset_dir();
    std::fs::write(
        dir.join("esc.jsonl"),
        "{\"problem\": \"<image>x\", \"answer\": \"1\", \"images\": [\"../../../../../../etc/passwd\"]}\n",
    )
    .unwrap();
    let e = format!("{:#}", open("loader-jsonl", "", &[&dir]).err().unwrap());
    assert!(
        e.contains("esc.jsonl:1") && e.contains("/etc/passwd") && e.contains("outside"),
        "{e}"
    );
    let e = format!(
        "{:#}",
        open("loader-jsonl", "skip_bad_row = true", &[&dir])
            .err()
            .unwrap()
    );
    assert!(
        e.contains("loader-jsonl") && e.contains("skip_bad_row"),
        "{e}"
    );
    // A directory without data files.
    let (_t2, empty) = dataset_dir();
    let e = format!("{:#}", open("loader-jsonl", "", &[&empty]).err().unwrap());
    assert!(e.contains("*.jsonl"), "{e}");
}

const PNG: [u8; 11] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 1, 2, 3];

/// Copies loader-parquet's committed fixtures (written by its
/// tests/make_fixtures.py with pyarrow) into `dir` under `names`.
fn copy_fixtures(dir: &Path, files: &[(&str, &str)]) {
    let src = repo_root().join("plugins/loader-parquet/tests/fixtures");
    for (from, to) in files {
        std::fs::copy(src.join(from), dir.join(to)).unwrap();
    }
}

#[test]
fn loader_parquet_reads_easyr1_and_verl_files_in_a_granted_directory() {
    let (_t, dir) = dataset_dir();
    copy_fixtures(
        &dir,
        &[
            ("easyr1.parquet", "a-easyr1.parquet"),
            ("verl.parquet", "b-verl.parquet"),
        ],
    );
    std::fs::write(dir.join("README.txt"), "not data").unwrap();
    let l = open("loader-parquet", "", &[&dir]).unwrap();
    // 4 EasyR1 rows (two row groups) + 3 verl rows, files in name order.
    assert_eq!((l.info().len, l.info().skipped_rows), (7, 0));
    let s = l.get_many(&[3, 0, 2, 4, 5]).unwrap();
    assert_eq!(s[0].answer.as_deref(), Some("12"));
    assert_eq!(s[1].id, "a-easyr1.parquet:1");
    assert_eq!(
        s[1].messages[0].content,
        vec![bytes_image(&PNG), text("What is x?")]
    );
    assert_eq!(s[1].answer.as_deref(), Some("3"));
    assert_eq!(
        s[1].metadata,
        vec![("difficulty".to_owned(), "1".to_owned())]
    );
    assert_eq!(
        s[2].messages[0].content,
        vec![
            path_image(&dir.join("imgs/a.png")),
            text(" vs "),
            bytes_image(&PNG[..4]),
            text(": which is larger?"),
        ]
    );
    // verl: system + user turns from `prompt`, answer from reward_model.ground_truth.
    assert_eq!(s[3].id, "b-verl.parquet:1");
    assert_eq!(
        s[3].messages
            .iter()
            .map(|m| m.role.as_str())
            .collect::<Vec<_>>(),
        ["system", "user"]
    );
    assert_eq!(
        s[3].messages[1].content,
        vec![bytes_image(&PNG), text("Find the angle.")]
    );
    assert_eq!(s[3].answer.as_deref(), Some("60"));
    assert_eq!(
        s[3].metadata,
        vec![("data_source".to_owned(), "geo3k".to_owned())]
    );
    assert_eq!(s[4].answer.as_deref(), Some("42"));
}

#[test]
fn loader_parquet_bad_rows_are_named_or_skipped() {
    let (_t, dir) = dataset_dir();
    // Its second row has two <image> placeholders and one image.
    copy_fixtures(&dir, &[("verl-bad.ignored", "bad.parquet")]);
    let file = dir.join("bad.parquet");
    let e = format!("{:#}", open("loader-parquet", "", &[&file]).err().unwrap());
    assert!(
        e.contains("loader-parquet")
            && e.contains(&format!("{}: row 2 (row group 0, row 2)", file.display()))
            && e.contains("placeholder"),
        "{e}"
    );
    let l = open("loader-parquet", "skip_bad_rows = true", &[&file]).unwrap();
    assert_eq!((l.info().len, l.info().skipped_rows), (1, 1));
    assert!(
        l.info().notes[0].contains("bad.parquet: row 2"),
        "{:?}",
        l.info().notes
    );
    assert_eq!(l.get(0).unwrap().answer.as_deref(), Some("42"));
    // Not Parquet at all.
    std::fs::write(dir.join("x.parquet"), "PAR? no").unwrap();
    let e = format!(
        "{:#}",
        open("loader-parquet", "", &[&dir.join("x.parquet")])
            .err()
            .unwrap()
    );
    assert!(e.contains("x.parquet") && e.contains("Parquet"), "{e}");
}
