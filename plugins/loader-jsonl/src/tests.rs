//! End-to-end tests of the loader on real files in a temporary directory.

use crate::JsonlLoader;
use lmmhost_sdk::{ContentPart, ImageSource, Loader, Sample};
use std::fs;
use std::path::Path;

/// Rows parsed only in `get` (the default parses them all at `open`).
const LAZY: &str = "validate_at_open = false";

fn write(dir: &Path, name: &str, lines: &[&str]) -> String {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&p, lines.join("\n") + "\n").unwrap();
    p.to_str().unwrap().to_owned()
}

fn s(dir: &Path) -> String {
    dir.to_str().unwrap().to_owned()
}

fn text(t: &str) -> ContentPart {
    ContentPart::Text(t.into())
}

fn img(p: &Path) -> ContentPart {
    ContentPart::Image(ImageSource::Path(p.to_str().unwrap().to_owned()))
}

fn all(l: &JsonlLoader, n: u64) -> Vec<Sample> {
    (0..n).map(|i| l.get(i).unwrap()).collect()
}

#[test]
fn lmm_r1_rows_with_file_images_and_string_content() {
    let d = tempfile::tempdir().unwrap();
    let abs = d.path().join("imgs/a.jpg");
    let msg = serde_json::json!([
        {"role": "user", "content": [
            {"type": "image", "image": format!("file://{}", abs.display())},
            {"type": "text", "text": "Find x."}]}
    ])
    .to_string();
    let row1 =
        serde_json::json!({"message": msg, "answer": "$\\boxed{60}$", "source": "geo"}).to_string();
    let row2 = serde_json::json!({
        "message": "[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"1+1?\"}]",
        "answer": 2, "difficulty": 3, "hard": false}).to_string();
    write(d.path(), "lmm.jsonl", &[&row1, &row2]);
    let (l, info) = JsonlLoader::open("format = \"lmm-r1\"", &[s(d.path())]).unwrap();
    assert_eq!(info.len, 2);
    let v = all(&l, 2);
    assert_eq!(v[0].id, "lmm.jsonl:1");
    assert_eq!(v[0].messages.len(), 1);
    assert_eq!(v[0].messages[0].role, "user");
    assert_eq!(v[0].messages[0].content, vec![img(&abs), text("Find x.")]);
    assert_eq!(v[0].answer.as_deref(), Some("$\\boxed{60}$"));
    assert_eq!(v[0].metadata, vec![("source".to_owned(), "geo".to_owned())]);
    assert_eq!(v[1].id, "lmm.jsonl:2");
    assert_eq!(v[1].messages[0].content, vec![text("Be brief.")]);
    assert_eq!(v[1].messages[1].content, vec![text("1+1?")]);
    assert_eq!(v[1].answer.as_deref(), Some("2"));
    assert_eq!(v[1].meta("difficulty"), Some("3"));
    assert_eq!(v[1].meta("hard"), Some("false"));
}

#[test]
fn easyr1_placeholders_become_image_parts_in_order() {
    let d = tempfile::tempdir().unwrap();
    let rows = [
        r#"{"problem": "Compare <image> and <image>. Which is larger?", "answer": "A", "images": ["a.png", "sub/b.png"]}"#,
        r#"{"problem": "What is shown?", "answer": "cat", "images": [{"path": "c.png"}, {"bytes": "iVBO"}, {"bytes": [1, 2, 255]}]}"#,
        r#"{"problem": "<image>Area?", "answer": "12", "images": [{"bytes": null, "path": "d.png"}]}"#,
    ];
    write(d.path(), "r1v.jsonl", &rows);
    let (l, info) = JsonlLoader::open("", &[s(d.path())]).unwrap();
    assert_eq!(info.len, 3);
    let v = all(&l, 3);
    let p = d.path();
    assert_eq!(
        v[0].messages[0].content,
        vec![
            text("Compare "),
            img(&p.join("a.png")),
            text(" and "),
            img(&p.join("sub/b.png")),
            text(". Which is larger?")
        ]
    );
    assert_eq!(v[0].answer.as_deref(), Some("A"));
    // No placeholders: images first, then the text.
    assert_eq!(
        v[1].messages[0].content,
        vec![
            img(&p.join("c.png")),
            ContentPart::Image(ImageSource::Bytes(vec![0x89, b'P', b'N'])),
            ContentPart::Image(ImageSource::Bytes(vec![1, 2, 255])),
            text("What is shown?")
        ]
    );
    assert_eq!(
        v[2].messages[0].content,
        vec![img(&p.join("d.png")), text("Area?")]
    );
}

#[test]
fn placeholder_count_mismatch_names_file_line_and_counts() {
    let d = tempfile::tempdir().unwrap();
    let f = write(
        d.path(),
        "bad.jsonl",
        &[
            r#"{"problem": "<image> ok", "answer": "1", "images": ["a.png"]}"#,
            "",
            r#"{"problem": "<image> vs <image>", "answer": "1", "images": ["a.png", "b.png", "c.png"]}"#,
        ],
    );
    let e = JsonlLoader::open("", &[s(d.path())]).err().unwrap();
    assert!(e.starts_with(&format!("{f}:3: ")), "refused at open: {e}");
    let (l, info) = JsonlLoader::open(LAZY, &[s(d.path())]).unwrap();
    assert_eq!(info.len, 2);
    let e = l.get(1).unwrap_err();
    assert!(e.starts_with(&format!("{f}:3: ")), "{e}");
    assert!(
        e.contains("2 `<image>` placeholders") && e.contains("3 entries"),
        "{e}"
    );
    // Chat format counts placeholders across turns.
    write(
        d.path(),
        "chat.jsonl",
        &[
            r#"{"messages": [{"role": "user", "content": "<image><image> hi"}, {"role": "assistant", "content": "x"}], "images": ["a.png"]}"#,
        ],
    );
    let (l, _) = JsonlLoader::open(LAZY, &[s(d.path()) + "/chat.jsonl", s(d.path())]).unwrap();
    let e = l.get(0).unwrap_err();
    assert!(
        e.contains("chat.jsonl:1: ")
            && e.contains("2 image placeholders")
            && e.contains("1 entries"),
        "{e}"
    );
}

#[test]
fn chat_sft_traces_keep_the_assistant_turn() {
    let d = tempfile::tempdir().unwrap();
    let rows = [
        r#"{"messages": [{"role": "user", "content": "<image>Describe then solve."}, {"role": "assistant", "content": "<think>a</think><answer>4</answer>"}], "images": ["x.png"], "id": 17}"#,
        r#"{"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}, {"role": "assistant", "content": "A"}], "images": ["y.png"], "answer": "A"}"#,
        r#"{"messages": [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}], "images": ["z.png"]}"#,
    ];
    write(d.path(), "sft.jsonl", &rows);
    let (l, _) = JsonlLoader::open("format = \"messages\"", &[s(d.path())]).unwrap();
    let v = all(&l, 3);
    let p = d.path();
    assert_eq!(v[0].id, "17");
    assert_eq!(
        v[0].messages[0].content,
        vec![img(&p.join("x.png")), text("Describe then solve.")]
    );
    assert_eq!(v[0].messages[1].role, "assistant");
    assert_eq!(
        v[0].text_of("assistant"),
        "<think>a</think><answer>4</answer>"
    );
    assert_eq!(v[0].answer, None);
    assert_eq!(
        v[1].messages[0].content,
        vec![img(&p.join("y.png")), text("Q")]
    );
    assert_eq!(v[1].answer.as_deref(), Some("A"));
    assert_eq!(
        v[2].messages[0].content,
        vec![img(&p.join("z.png")), text("Q2")]
    );
}

#[test]
fn auto_detects_per_row_and_forced_format_rejects_others() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "mix.jsonl",
        &[
            r#"{"message": "[{\"role\":\"user\",\"content\":\"m\"}]", "answer": "1"}"#,
            r#"{"problem": "p", "answer": "2"}"#,
            r#"{"messages": [{"role": "user", "content": "c"}]}"#,
            r#"{"question": "q", "answer": "3"}"#,
        ],
    );
    let (l, info) = JsonlLoader::open(LAZY, &[s(d.path())]).unwrap();
    assert_eq!(info.len, 4);
    assert_eq!(l.get(0).unwrap().text_of("user"), "m");
    assert_eq!(l.get(1).unwrap().text_of("user"), "p");
    assert_eq!(l.get(2).unwrap().text_of("user"), "c");
    let e = l.get(3).unwrap_err();
    assert!(e.contains("mix.jsonl:4: cannot detect the format"), "{e}");
    let (l, _) = JsonlLoader::open(
        "format = \"easyr1\"\nvalidate_at_open = false",
        &[s(d.path())],
    )
    .unwrap();
    assert!(l
        .get(0)
        .unwrap_err()
        .contains("mix.jsonl:1: missing field `problem`"));
    assert_eq!(l.get(1).unwrap().answer.as_deref(), Some("2"));
}

#[test]
fn bad_rows_are_errors_or_skipped_and_counted() {
    let d = tempfile::tempdir().unwrap();
    let f = write(
        d.path(),
        "b.jsonl",
        &[
            r#"{"problem": "ok1", "answer": "1"}"#,
            r#"{"problem": "no answer"}"#,
            r#"{"problem": "ok2", "answer": "2"}"#,
            r#"{not json"#,
            r#"{"problem": 5, "answer": "1"}"#,
            r#"[1, 2]"#,
            r#"{"problem": "x", "answer": "1", "images": 3}"#,
            r#"{"problem": "x", "answer": "1", "images": ["/etc/passwd"]}"#,
            r#"{"problem": "ok3", "answer": "3"}"#,
        ],
    );
    let e = JsonlLoader::open("", std::slice::from_ref(&f))
        .err()
        .unwrap();
    assert_eq!(
        e,
        format!("{f}:2: missing field `answer`"),
        "refused at open"
    );
    let (l, info) = JsonlLoader::open(LAZY, std::slice::from_ref(&f)).unwrap();
    assert_eq!((info.len, info.skipped_rows), (9, 0));
    assert_eq!(
        l.get(1).unwrap_err(),
        format!("{f}:2: missing field `answer`")
    );
    assert!(l
        .get(3)
        .unwrap_err()
        .starts_with(&format!("{f}:4: invalid JSON")));
    assert_eq!(
        l.get(4).unwrap_err(),
        format!("{f}:5: `problem` must be a string, got a number")
    );
    assert_eq!(
        l.get(5).unwrap_err(),
        format!("{f}:6: a row must be a JSON object, got a list")
    );
    assert!(l.get(6).unwrap_err().contains("`images` must be a list"));
    // Only the file itself was granted, so no image is reachable.
    assert!(l
        .get(7)
        .unwrap_err()
        .contains("outside the granted directories"));
    assert!(l.get(9).unwrap_err().contains("out of range (len 9)"));

    let (l, info) = JsonlLoader::open("skip_bad_rows = true", std::slice::from_ref(&f)).unwrap();
    assert_eq!((info.len, info.skipped_rows), (3, 6));
    // The first 5 reasons in full, then one count per reason (6 kinds).
    assert_eq!(info.notes.len(), 5 + 6, "{:#?}", info.notes);
    assert!(info.notes[5..]
        .iter()
        .all(|n| n.starts_with("1 row skipped: ")));
    assert_eq!(
        info.notes[0],
        format!("skipped {f}:2: missing field `answer`")
    );
    assert!(info.notes[1].starts_with(&format!("skipped {f}:4: invalid JSON")));
    let texts: Vec<_> = all(&l, 3).iter().map(|s| s.text_of("user")).collect();
    assert_eq!(texts, vec!["ok1", "ok2", "ok3"]);
    assert_eq!(l.get(2).unwrap().id, "b.jsonl:9");
}

#[test]
fn system_prompt_suffix_and_id_field() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "s.jsonl",
        &[
            r#"{"problem": "<image>What?", "answer": "1", "images": ["a.png"], "uid": "q-1"}"#,
            r#"{"message": "[{\"role\":\"system\",\"content\":\"own\"},{\"role\":\"user\",\"content\":\"Q\"}]", "answer": "1", "uid": 2}"#,
            r#"{"messages": [{"role": "user", "content": [{"type": "image", "path": "b.png"}]}], "uid": "x"}"#,
            r#"{"problem": "no uid", "answer": "1"}"#,
        ],
    );
    let cfg = "system_prompt = \"SYS\"\ninstruction_suffix = \" Think, then answer.\"\nid_field = \"uid\"\nvalidate_at_open = false";
    let (l, _) = JsonlLoader::open(cfg, &[s(d.path())]).unwrap();
    let a = l.get(0).unwrap();
    assert_eq!(a.id, "q-1");
    assert_eq!(a.messages[0].role, "system");
    assert_eq!(a.messages[0].content, vec![text("SYS")]);
    assert_eq!(
        a.messages[1].content,
        vec![
            img(&d.path().join("a.png")),
            text("What? Think, then answer.")
        ]
    );
    assert!(a.meta("uid").is_none());
    let b = l.get(1).unwrap();
    assert_eq!(b.id, "2");
    assert_eq!(
        b.messages.len(),
        2,
        "a row with its own system message keeps it"
    );
    assert_eq!(b.messages[0].content, vec![text("own")]);
    assert_eq!(b.messages[1].content, vec![text("Q Think, then answer.")]);
    let c = l.get(2).unwrap();
    // Only an image: the suffix becomes a text part after it.
    assert_eq!(
        c.messages[1].content,
        vec![img(&d.path().join("b.png")), text(" Think, then answer.")]
    );
    assert!(l
        .get(3)
        .unwrap_err()
        .contains("s.jsonl:4: missing id field `uid`"));
}

#[test]
fn multiple_grants_keep_their_order_and_directories_sort() {
    let d = tempfile::tempdir().unwrap();
    let single = write(
        d.path(),
        "z_first.jsonl",
        &[r#"{"problem": "z1", "answer": "1"}"#],
    );
    let sub = d.path().join("dir");
    write(
        &sub,
        "b.jsonl",
        &[
            r#"{"problem": "b1", "answer": "1"}"#,
            r#"{"problem": "b2", "answer": "1"}"#,
        ],
    );
    write(&sub, "a.jsonl", &[r#"{"problem": "a1", "answer": "1"}"#]);
    write(
        &sub,
        "ignored.txt",
        &[r#"{"problem": "no", "answer": "1"}"#],
    );
    let (l, info) = JsonlLoader::open("", &[single, s(&sub)]).unwrap();
    assert_eq!(info.len, 4);
    let texts: Vec<_> = all(&l, 4).iter().map(|s| s.text_of("user")).collect();
    assert_eq!(texts, vec!["z1", "a1", "b1", "b2"]);
    assert_eq!(l.get(3).unwrap().id, "b.jsonl:2");
}

#[test]
fn open_errors_are_clear() {
    let d = tempfile::tempdir().unwrap();
    let e = JsonlLoader::open("", &[]).err().unwrap();
    assert!(e.contains("no files granted"), "{e}");
    let e = JsonlLoader::open("", &[s(d.path())]).err().unwrap();
    assert!(e.contains("no *.jsonl or *.json files"), "{e}");
    let e = JsonlLoader::open("formt = \"auto\"", &[s(d.path())])
        .err()
        .unwrap();
    assert!(e.contains("formt"), "{e}");
    let missing = d.path().join("nope.jsonl");
    let e = JsonlLoader::open("", &[s(&missing)]).err().unwrap();
    assert!(e.contains("nope.jsonl"), "{e}");
    let f = write(d.path(), "bad.jsonl", &["{bad", "[]"]);
    let e = JsonlLoader::open("skip_bad_rows = true", &[f])
        .err()
        .unwrap();
    assert!(
        e.contains("no usable rows") && e.contains("2 skipped") && e.contains("bad.jsonl:1"),
        "{e}"
    );
}

/// Rough speed check, not run by default:
/// `cargo test --release -p loader-jsonl -- --ignored --nocapture`.
#[test]
#[ignore]
fn speed_of_open_and_get() {
    let d = tempfile::tempdir().unwrap();
    let n = 100_000;
    let rows: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"problem": "<image>Question {i}: what is the area of the shaded region, given the figure? {pad}", "answer": "{i}", "images": ["imgs/{i}.png"], "source": "geo"}}"#,
                pad = "x".repeat(200)
            )
        })
        .collect();
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    write(d.path(), "big.jsonl", &refs);
    for skip in [false, true] {
        let t = std::time::Instant::now();
        let cfg = format!("skip_bad_rows = {skip}");
        let (l, info) = JsonlLoader::open(&cfg, &[s(d.path())]).unwrap();
        let open = t.elapsed();
        assert_eq!(info.len, n);
        let t = std::time::Instant::now();
        for i in (0..n).step_by(7) {
            l.get(i).unwrap();
        }
        let per_get = t.elapsed() / (n as u32 / 7);
        println!("{n} rows, skip_bad_rows={skip}: open {open:?}, get {per_get:?} each");
    }
}
