use crate::rows::{image_path, unwrap_answer};
use crate::JsonlLoader;
use lmmhost_sdk::{ContentPart, ImageSource, Loader, Message};
use std::path::Path;

fn write(dir: &Path, name: &str, lines: &[&str]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p.to_string_lossy().into_owned()
}

fn text(t: &str) -> ContentPart {
    ContentPart::Text(t.to_owned())
}
fn img(p: &str) -> ContentPart {
    ContentPart::Image(ImageSource::Path(p.to_owned()))
}

#[test]
fn lmm_r1_rows_with_file_images_and_answers() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_string_lossy().into_owned();
    let row1 = serde_json::json!({
        "message": serde_json::to_string(&serde_json::json!([
            {"role": "user", "content": [
                {"type": "image", "image": "file:///data/geo/1.jpg"},
                {"type": "text", "text": "Find x."}]}
        ])).unwrap(),
        "answer": "$\\boxed{60}$",
        "source": "geoqa", "difficulty": 3, "level": ["#####", "#@$.#"]
    })
    .to_string();
    let row2 = r#"{"message": "[{\"role\": \"user\", \"content\": [{\"type\": \"image\", \"image\": \"imgs/../imgs/2.png\"}, {\"type\": \"text\", \"text\": \"Count.\"}]}]", "answer": 7}"#;
    let f = write(d.path(), "train.jsonl", &[&row1, "", row2]);
    let (l, info) = JsonlLoader::open("", &[f]).unwrap();
    assert_eq!(info.len, 2);
    assert_eq!(info.skipped_rows, 0);
    let s = l.get(0).unwrap();
    assert_eq!(s.id, "train.jsonl:1");
    assert_eq!(
        s.answer.as_deref(),
        Some("$\\boxed{60}$"),
        "kept as is by default"
    );
    assert_eq!(
        s.messages,
        vec![Message {
            role: "user".into(),
            content: vec![img("/data/geo/1.jpg"), text("Find x.")]
        }]
    );
    assert_eq!(
        s.metadata,
        vec![
            ("difficulty".to_string(), "3".to_string()),
            ("level".to_string(), r##"["#####","#@$.#"]"##.to_string()),
            ("source".to_string(), "geoqa".to_string()),
        ]
    );
    let s = l.get(1).unwrap();
    assert_eq!(s.id, "train.jsonl:3", "line numbers count blank lines");
    assert_eq!(s.answer.as_deref(), Some("7"));
    assert_eq!(s.messages[0].content[0], img(&format!("{dir}/imgs/2.png")));

    let (l, _) = JsonlLoader::open(
        "unwrap_answer = true",
        &[write(d.path(), "t.jsonl", &[&row1])],
    )
    .unwrap();
    assert_eq!(l.get(0).unwrap().answer.as_deref(), Some("60"));
    assert!(l.get(1).unwrap_err().contains("out of range"));
}

#[test]
fn easyr1_placeholders_become_image_parts_in_order() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_string_lossy().into_owned();
    let row = r#"{"problem": "<image>Compare with <image> and answer.", "answer": "B", "images": ["a.png", {"bytes": "iVBORw0K"}], "id": 17}"#;
    let row2 = r#"{"problem": "<image>What?", "answer": "1", "images": [{"bytes": [137, 80, 78, 71], "path": null}]}"#;
    let (l, info) = JsonlLoader::open(
        "format = \"easyr1\"",
        &[write(d.path(), "r1v.jsonl", &[row, row2])],
    )
    .unwrap();
    assert_eq!(info.len, 2);
    let s = l.get(0).unwrap();
    assert_eq!(s.id, "17");
    assert_eq!(
        s.messages[0].content,
        vec![
            img(&format!("{dir}/a.png")),
            text("Compare with "),
            ContentPart::Image(ImageSource::Bytes(vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a])),
            text(" and answer."),
        ]
    );
    assert_eq!(s.messages[0].role, "user");
    assert_eq!(
        l.get(1).unwrap().messages[0].content[0],
        ContentPart::Image(ImageSource::Bytes(vec![137, 80, 78, 71]))
    );
}

#[test]
fn placeholder_mismatch_names_file_line_and_counts() {
    let d = tempfile::tempdir().unwrap();
    let good = r#"{"problem": "<image> x", "answer": "1", "images": ["a.png"]}"#;
    let bad = r#"{"problem": "<image> and <image>", "answer": "1", "images": ["a.png"]}"#;
    let f = write(d.path(), "mm.jsonl", &[good, good, bad]);
    let err = JsonlLoader::open("", std::slice::from_ref(&f))
        .err()
        .unwrap();
    assert!(err.contains("mm.jsonl:3:"), "{err}");
    assert!(
        err.contains("2 `<image>` placeholder(s) but 1 image(s)"),
        "{err}"
    );
}

#[test]
fn chat_sft_traces_with_placeholders_and_parts() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_string_lossy().into_owned();
    let a = r#"{"messages": [{"role": "user", "content": "<image>Describe."}, {"role": "assistant", "content": "<think>a cat</think>A cat."}], "images": ["c.jpg"]}"#;
    let b = r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Sum?"}]}, {"role": "assistant", "content": [{"type": "text", "text": "4"}]}], "images": ["/abs/x.png"], "answer": "4"}"#;
    let no_target = r#"{"messages": [{"role": "user", "content": "hi"}]}"#;
    let (l, _) = JsonlLoader::open("", &[write(d.path(), "sft.jsonl", &[a, b])]).unwrap();
    let s = l.get(0).unwrap();
    assert_eq!(s.answer, None);
    assert_eq!(s.messages.len(), 2);
    assert_eq!(
        s.messages[0].content,
        vec![img(&format!("{dir}/c.jpg")), text("Describe.")]
    );
    assert_eq!(
        s.messages[1],
        Message {
            role: "assistant".into(),
            content: vec![text("<think>a cat</think>A cat.")]
        }
    );
    let s = l.get(1).unwrap();
    assert_eq!(s.answer.as_deref(), Some("4"));
    assert_eq!(s.messages[1].content, vec![img("/abs/x.png"), text("Sum?")]);
    let err = JsonlLoader::open("", &[write(d.path(), "n.jsonl", &[no_target])])
        .err()
        .unwrap();
    assert!(
        err.contains("n.jsonl:1:") && err.contains("assistant"),
        "{err}"
    );
}

#[test]
fn bad_rows_are_errors_naming_file_line_and_problem() {
    let d = tempfile::tempdir().unwrap();
    let good = r#"{"problem": "1+1?", "answer": "2"}"#;
    let cases: &[(&str, &str)] = &[
        ("{\"problem\": \"x\", ", "invalid JSON"),
        (r#"{"problem": "x"}"#, "missing field `answer`"),
        (
            r#"{"problem": 3, "answer": "1"}"#,
            "field `problem` must be a string, found a number",
        ),
        (
            r#"{"question": "x", "answer": "1"}"#,
            "cannot tell the row's format",
        ),
        (r#"[1, 2]"#, "expected a JSON object, found a list"),
        (
            r#"{"message": "not json", "answer": "1"}"#,
            "not a valid JSON message list",
        ),
        (
            r#"{"problem": "x", "answer": "1", "images": [{"bytes": "***"}]}"#,
            "not valid base64",
        ),
        (
            r#"{"problem": "x", "answer": [1]}"#,
            "field `answer` must be a string or number, found a list",
        ),
    ];
    for (i, (bad, want)) in cases.iter().enumerate() {
        let f = write(d.path(), &format!("bad{i}.jsonl"), &[good, bad]);
        let err = JsonlLoader::open("", &[f]).err().unwrap();
        assert!(
            err.contains(&format!("bad{i}.jsonl:2: ")),
            "case {i}: {err}"
        );
        assert!(err.contains(want), "case {i}: want {want:?} in {err}");
    }
}

#[test]
fn skip_bad_rows_counts_and_notes() {
    let d = tempfile::tempdir().unwrap();
    let good = r#"{"problem": "1+1?", "answer": "2"}"#;
    let lines = [
        good,
        "{oops",
        good,
        r#"{"problem": "x"}"#,
        good,
        "{",
        "{",
        "{",
    ];
    let f = write(d.path(), "mixed.jsonl", &lines);
    let (l, info) = JsonlLoader::open("skip_bad_rows = true\nmax_notes = 3", &[f]).unwrap();
    assert_eq!(info.len, 3);
    assert_eq!(info.skipped_rows, 5);
    assert_eq!(info.notes.len(), 3);
    assert!(info.notes[0].contains("mixed.jsonl:2:"), "{:?}", info.notes);
    assert!(
        info.notes[1].contains("mixed.jsonl:4:")
            && info.notes[1].contains("missing field `answer`")
    );
    assert_eq!(
        l.get(2).unwrap().id,
        "mixed.jsonl:5",
        "indices skip the bad rows"
    );
}

#[test]
fn directory_grant_reads_sorted_jsonl_files() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "b.jsonl",
        &[r#"{"problem": "b1", "answer": "1"}"#],
    );
    write(
        d.path(),
        "a.jsonl",
        &[
            r#"{"problem": "a1", "answer": "1"}"#,
            r#"{"problem": "a2", "answer": "2"}"#,
        ],
    );
    write(d.path(), "notes.txt", &["not data"]);
    let (l, info) = JsonlLoader::open("", &[d.path().to_string_lossy().into_owned()]).unwrap();
    assert_eq!(info.len, 3);
    let firsts: Vec<String> = (0..3).map(|i| l.get(i).unwrap().id).collect();
    assert_eq!(firsts, ["a.jsonl:1", "a.jsonl:2", "b.jsonl:1"]);
    let err = JsonlLoader::open("", &["/no/such/file.jsonl".into()])
        .err()
        .unwrap();
    assert!(err.contains("/no/such/file.jsonl"), "{err}");
}

#[test]
fn prompt_template_system_prompt_and_instruction() {
    let d = tempfile::tempdir().unwrap();
    let row = r#"{"problem": "<image>What is x?", "answer": "3", "images": ["g.png"]}"#;
    let cfg = r#"
system_prompt = "You are a helpful assistant."
instruction_suffix = " Think first in <think></think>, then answer in <answer></answer>."
"#;
    let (l, _) = JsonlLoader::open(cfg, &[write(d.path(), "p.jsonl", &[row])]).unwrap();
    let s = l.get(0).unwrap();
    assert_eq!(
        s.messages[0],
        Message {
            role: "system".into(),
            content: vec![text("You are a helpful assistant.")]
        }
    );
    assert_eq!(
        s.messages[1].content[1],
        text("What is x? Think first in <think></think>, then answer in <answer></answer>.")
    );
    let err = JsonlLoader::open("formt = 'auto'", &[write(d.path(), "q.jsonl", &[row])])
        .err()
        .unwrap();
    assert!(err.contains("formt"), "{err}");
}

#[test]
fn helpers() {
    assert_eq!(unwrap_answer("$\\boxed{\\frac{1}{2}}$"), "\\frac{1}{2}");
    assert_eq!(unwrap_answer(" $x^2$ "), "x^2");
    assert_eq!(unwrap_answer("12 apples"), "12 apples");
    assert_eq!(
        image_path(Path::new("/d/sub"), "file://../img/a.png"),
        "/d/img/a.png"
    );
    assert_eq!(image_path(Path::new("/d"), "./a.png"), "/d/a.png");
    // `..` past the root is kept, so the host sees (and refuses) the escape.
    assert_eq!(
        image_path(Path::new("/"), "../../etc/passwd"),
        "/../../etc/passwd"
    );
}
