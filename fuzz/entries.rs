//! The fuzzed entry points: every parser that reads outside input, each
//! taking arbitrary bytes. The cargo-fuzz targets (fuzz_targets/) call them
//! under libFuzzer; host/tests/fuzz_corpus.rs replays the kept corpus
//! (fuzz/corpus/<target>/) through the same functions on stable, so these
//! paths run in every test run. A panic is a finding; an `Err` is the
//! expected answer to bad input.

use std::path::{Path, PathBuf};

use lmmhost_sdk::rows::{self, Config, Format, RowCtx};

/// A fuzzed entry point: arbitrary bytes in, a panic is a finding.
pub type Entry = fn(&[u8]);

/// The targets, as named in fuzz/Cargo.toml and fuzz/corpus/.
pub const TARGETS: [(&str, Entry); 5] = [
    ("rows", rows),
    ("math_answer", math_answer),
    ("chat_template", chat_template),
    ("bundle", bundle),
    ("experiment", experiment),
];

const FORMATS: [Format; 10] = [
    Format::Auto,
    Format::LmmR1,
    Format::EasyR1,
    Format::Messages,
    Format::Verl,
    Format::ShareGpt,
    Format::QueryResponse,
    Format::Alpaca,
    Format::Sokoban,
    Format::Auto,
];

/// A dataset row in every loader layout: the first byte picks the layout
/// (low four bits) and config switches (high four), the rest is the row's
/// JSON text. Also the Sokoban level reader (`.npy` bytes).
pub fn rows(data: &[u8]) {
    if let Some(Ok(sample)) = row(data) {
        assert!(!sample.id.is_empty(), "a parsed row has an id");
    }
    if let Some(rest) = data.get(1..) {
        let _ = rows::unwrap_answer(&String::from_utf8_lossy(rest));
        let _ = rows::level_from_npy(rest);
    }
}

/// The row of a `rows` input, parsed as a loader would parse a line of
/// `/fuzz-data/ds/rows.jsonl` with `/fuzz-data` granted.
pub fn row(data: &[u8]) -> Option<Result<lmmhost_sdk::Sample, String>> {
    let (&head, rest) = data.split_first()?;
    let config = Config {
        format: FORMATS[usize::from(head & 0x0f) % FORMATS.len()],
        unwrap_answer: head & 0x10 != 0,
        replace_system: head & 0x20 != 0,
        system_prompt: (head & 0x40 != 0).then(|| "Be brief.".to_string()),
        instruction_suffix: if head & 0x80 != 0 {
            " Think.".into()
        } else {
            String::new()
        },
        ..Config::default()
    };
    let granted = [PathBuf::from("/fuzz-data")];
    let ctx = RowCtx {
        config: &config,
        base: Path::new("/fuzz-data/ds"),
        granted: &granted,
        default_id: "rows.jsonl:1".to_string(),
    };
    Some(rows::parse_json_row(&String::from_utf8_lossy(rest), &ctx))
}

/// The math-answer parser: a completion's answer extracted every way, and
/// compared with a reference (the bytes after the first NUL, or the text
/// itself).
pub fn math_answer(data: &[u8]) {
    use lmmhost_sdk::answer::{extract_answer, last_boxed, Extractor};
    use lmmhost_sdk::math;
    let text = String::from_utf8_lossy(data);
    let (prediction, reference) = text.split_once('\0').unwrap_or((&text, &text));
    let _ = math::normalize(prediction);
    let _ = math::number_from_words(prediction);
    let _ = last_boxed(prediction);
    for order in [
        &[Extractor::Boxed][..],
        &[Extractor::AnswerTag, Extractor::LastNumber][..],
        &[Extractor::Whole][..],
    ] {
        if let Some(answer) = extract_answer(prediction, order) {
            let _ = math::equivalent(answer, reference);
        }
    }
    let same = math::equivalent(prediction, reference);
    if prediction.trim() == reference.trim() && !prediction.trim().is_empty() {
        assert!(same, "an answer equals itself: {prediction:?}");
    }
}

/// The chat template renderer: messages cut from the text at `\u{1}`, the
/// first character of each picking its role and whether an image precedes
/// its text; then the image pads expanded to per-image token counts taken
/// from the bytes.
pub fn chat_template(data: &[u8]) {
    use lmmhost_model::processor::chat_template::{
        expand_image_pads, render, ImageInput, Message, Part,
    };
    let text = String::from_utf8_lossy(data);
    let messages: Vec<Message> = text
        .split('\u{1}')
        .map(|chunk| {
            let pick = chunk.bytes().next().unwrap_or(0);
            let role = ["system", "user", "assistant", "tool", "narrator"][usize::from(pick % 5)];
            let mut parts = Vec::new();
            if pick & 0x8 != 0 {
                parts.push(Part::Image(ImageInput::Bytes(vec![pick])));
            }
            parts.push(Part::Text(chunk.get(1..).unwrap_or("").to_string()));
            Message {
                role: role.to_string(),
                parts,
            }
        })
        .collect();
    let generation = data.first().is_some_and(|b| b & 1 == 1);
    let chat = render(&messages, generation);
    for span in &chat.assistant_spans {
        assert!(
            span.start <= span.end && chat.text.get(span.clone()).is_some(),
            "assistant span {span:?} is not a slice of the text"
        );
    }
    let tokens: Vec<usize> = data
        .iter()
        .take(chat.images.len() + usize::from(data.len().is_multiple_of(2)))
        .map(|b| usize::from(b % 8))
        .collect();
    if let Ok(expanded) = expand_image_pads(&chat, &tokens) {
        for span in &expanded.assistant_spans {
            assert!(
                expanded.text.get(span.clone()).is_some(),
                "span {span:?} after expansion"
            );
        }
    }
}

/// The bundle container and its manifest: decoded, and a container that
/// decodes re-encodes to bytes that decode the same.
pub fn bundle(data: &[u8]) {
    use lmmhost_bundle::container::RawBundle;
    if let Ok(raw) = RawBundle::decode(data) {
        let again = RawBundle::decode(&raw.encode()).expect("a re-encoded bundle decodes");
        assert_eq!(
            (&again.manifest, &again.signature, &again.components),
            (&raw.manifest, &raw.signature, &raw.components)
        );
    }
    let _ = lmmhost_bundle::open_bundle_bytes(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = toml::from_str::<lmmhost_bundle::Manifest>(text);
    }
}

/// An experiment file, read and checked as `lmmhost run` and `check` do
/// (written to a scratch directory first: relative paths resolve there).
pub fn experiment(data: &[u8]) {
    thread_local! {
        static DIR: tempfile::TempDir = tempfile::tempdir().expect("a scratch directory");
    }
    DIR.with(|dir| {
        let path = dir.path().join("exp.toml");
        std::fs::write(&path, data).expect("the scratch file is writable");
        let _ = lmmhost::train::experiment::Experiment::load(&path);
    });
}
