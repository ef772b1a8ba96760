//! Plain Rust mirrors of the WIT types of `lmmhost:plugin@0.2.0` (and of
//! 0.1.0's `completion` and `score`, which rules still take and return).
//!
//! The structs have exactly the shape wit-bindgen generates for the WIT (field
//! names, `Option`, `Vec`, tuples), so the export macros hand them to the
//! bindings with no conversion at all (wit-bindgen's `with` option). The same
//! types are used natively by the host, and read/written as JSON, e.g. the
//! `samples.jsonl` of `lmmhost plugin score`.
//!
//! # JSON shape
//!
//! A sample, one per line in a `.jsonl` file:
//!
//! ```json
//! {"id": "q1",
//!  "messages": [
//!    {"role": "system", "content": "Think, then answer."},
//!    {"role": "user", "content": [
//!        {"type": "image", "path": "images/q1.png"},
//!        {"type": "text", "text": "What is the area?"}]}],
//!  "answer": "12",
//!  "metadata": {"source": "geoqa", "options": ["10", "12", "14"]}}
//! ```
//!
//! - `content` is a list of parts, or a plain string as shorthand for one text part.
//! - a part is `{"type": "text", "text": ...}`, `{"type": "image", "path": ...}`
//!   (relative to a granted directory) or `{"type": "image", "bytes_base64": ...}`
//!   (standard base64 of the encoded PNG/JPEG); images are written back the same way.
//! - `id` defaults to `""`, `answer` to none (`null` or absent), `metadata` to `{}`.
//!   Metadata values are strings; any other JSON value (list, number, object) is
//!   kept as its compact JSON text, so `"options": ["10", "12"]` arrives in the
//!   plugin as the string `["10","12"]`.
//!
//! A completion is `{"sample": {...}, "response": "...", "response_tokens": 57}`
//! (`response_tokens` defaults to 0). A score is
//! `{"total": 1.1, "components": {"format": 0.1, "accuracy": 1.0}}`.
//!
//! Unknown keys are errors (a typo such as `"anwser"` must not silently drop
//! the reference answer).

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// Absolute host path of an image file inside a directory the experiment
    /// granted; the host (not the plugin) opens it. Loaders resolve a row's
    /// relative or `file://` reference against the data file's directory.
    Path(String),
    /// The encoded image (PNG, JPEG, ...).
    Bytes(Vec<u8>),
}

/// One part of a chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentPart {
    Text(String),
    Image(ImageSource),
}

/// The roles a chat turn may have (those the chat templates render); the
/// host refuses a sample with any other.
pub const CHAT_ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// One chat turn. `role` is one of [`CHAT_ROLES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: String,
    #[serde(deserialize_with = "de_content")]
    pub content: Vec<ContentPart>,
}

/// One dataset item: prompt messages, reference answer, free-form metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    #[serde(default)]
    pub id: String,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub answer: Option<String>,
    #[serde(
        default,
        serialize_with = "ser_str_map",
        deserialize_with = "de_str_map"
    )]
    pub metadata: Vec<(String, String)>,
}

/// A model response to score, with the sample it answers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Completion {
    pub sample: Sample,
    pub response: String,
    #[serde(default)]
    pub response_tokens: u32,
}

/// A reward: the total used for training plus named components logged one by one.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Score {
    pub total: f64,
    #[serde(
        default,
        serialize_with = "ser_f64_map",
        deserialize_with = "de_f64_map"
    )]
    pub components: Vec<(String, f64)>,
}

/// What a loader reports when it opens a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetInfo {
    /// Number of samples: valid indices are `0 .. len`.
    pub len: u64,
    /// Rows skipped as malformed (only when the loader's config allows it).
    #[serde(default)]
    pub skipped_rows: u64,
    /// Human-readable notes, e.g. the first skipped rows and why.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// The kind of training a stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    Sft,
    Grpo,
}

/// Where training stands when a schedule is asked for the next plan.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    pub global_step: u64,
    /// The stage of the last plan ("" before the first one).
    #[serde(default)]
    pub stage: String,
    pub stage_step: u64,
    /// Metrics of the last step by name, e.g. "reward/mean", "reward/accuracy/mean".
    #[serde(
        default,
        serialize_with = "ser_f64_map",
        deserialize_with = "de_f64_map"
    )]
    pub metrics: Vec<(String, f64)>,
}

/// PAD knobs; `None` keeps the experiment's value.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PadOverrides {
    pub enabled: Option<bool>,
    pub t_low: Option<f64>,
    pub t_high: Option<f64>,
    pub ratio: Option<f64>,
    pub tau_start: Option<f64>,
    pub tau_end: Option<f64>,
}

/// Settings a stage changes; `None` keeps the experiment's value. The
/// experiment key each field sets: docs/experiment.md, "Stage overrides".
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Overrides {
    pub learning_rate: Option<f64>,
    pub kl_coef: Option<f64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub group_size: Option<u32>,
    pub entropy_coef: Option<f64>,
    pub entropy_warmup_steps: Option<u64>,
    pub entropy_decay: Option<f64>,
    pub freeze_vision: Option<bool>,
    pub freeze_language: Option<bool>,
    pub dynamic_sampling: Option<bool>,
    pub pad: PadOverrides,
    /// Further settings by dotted experiment-file key, value as TOML text.
    #[serde(serialize_with = "ser_str_map", deserialize_with = "de_str_map")]
    pub extra: Vec<(String, String)>,
}

/// The plan for one training step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub stage: String,
    pub kind: StageKind,
    /// Dataset name (as in the experiment file) and its sampling weight.
    #[serde(serialize_with = "ser_f64_map", deserialize_with = "de_f64_map")]
    pub datasets: Vec<(String, f64)>,
    #[serde(default)]
    pub overrides: Overrides,
}

impl Sample {
    /// The value of metadata key `key`, if present (first occurrence).
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All text parts of all messages with role `role`, joined by newlines.
    pub fn text_of(&self, role: &str) -> String {
        let mut out = String::new();
        for m in self.messages.iter().filter(|m| m.role == role) {
            for part in &m.content {
                if let ContentPart::Text(t) = part {
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(t);
                }
            }
        }
        out
    }
}

impl Score {
    /// A score whose total is the sum of its components.
    pub fn from_components(components: Vec<(String, f64)>) -> Self {
        let total = components.iter().map(|(_, v)| v).sum();
        Score { total, components }
    }

    /// The value of component `name`, if present.
    pub fn component(&self, name: &str) -> Option<f64> {
        self.components
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }
}

// ---- content parts: {"type": "text", "text": ...} / {"type": "image", ...} ----

/// The JSON form of a content part (internally tagged by `type`).
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum PartRepr {
    Text {
        text: String,
    },
    Image {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bytes_base64: Option<String>,
    },
}

impl Serialize for ContentPart {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let repr = match self {
            ContentPart::Text(t) => PartRepr::Text { text: t.clone() },
            ContentPart::Image(ImageSource::Path(p)) => PartRepr::Image {
                path: Some(p.clone()),
                bytes_base64: None,
            },
            ContentPart::Image(ImageSource::Bytes(b)) => PartRepr::Image {
                path: None,
                bytes_base64: Some(base64_encode(b)),
            },
        };
        repr.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ContentPart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match PartRepr::deserialize(d)? {
            PartRepr::Text { text } => Ok(ContentPart::Text(text)),
            PartRepr::Image {
                path: Some(p),
                bytes_base64: None,
            } => Ok(ContentPart::Image(ImageSource::Path(p))),
            PartRepr::Image {
                path: None,
                bytes_base64: Some(b),
            } => base64_decode(&b)
                .map(|bytes| ContentPart::Image(ImageSource::Bytes(bytes)))
                .map_err(|e| de::Error::custom(format!("image `bytes_base64`: {e}"))),
            PartRepr::Image { .. } => Err(de::Error::custom(
                "an image part needs exactly one of `path` or `bytes_base64`",
            )),
        }
    }
}

/// `content`: a list of parts, or a plain string meaning one text part.
fn de_content<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ContentPart>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<ContentPart>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or a list of content parts")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![ContentPart::Text(v.to_owned())])
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(vec![ContentPart::Text(v)])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(p) = seq.next_element()? {
                out.push(p);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

// ---- key/value lists as JSON objects (order kept) ----

fn ser_str_map<S: Serializer>(v: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(v.len()))?;
    for (k, x) in v {
        m.serialize_entry(k, x)?;
    }
    m.end()
}

fn ser_f64_map<S: Serializer>(v: &[(String, f64)], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(v.len()))?;
    for (k, x) in v {
        m.serialize_entry(k, x)?;
    }
    m.end()
}

/// A map whose values are strings; other JSON values are kept as their JSON text.
fn de_str_map<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of key/value pairs")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
            while let Some(k) = map.next_key::<String>()? {
                let v = match map.next_value::<serde_json::Value>()? {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                out.push((k, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(V)
}

fn de_f64_map<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, f64)>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<(String, f64)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of names to numbers")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
            while let Some((k, v)) = map.next_entry::<String, f64>()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(V)
}

// ---- base64 (standard alphabet, padded), small enough not to need a crate ----

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard, padded base64.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; padding optional, ASCII whitespace ignored.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0u32;
    let mut padding = 0usize;
    for (i, c) in text.bytes().enumerate() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            padding += 1;
            continue;
        }
        if padding > 0 {
            return Err(format!("data after `=` padding at byte {i}"));
        }
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => {
                return Err(format!(
                    "invalid base64 character {:?} at byte {i}",
                    c as char
                ))
            }
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 {
        return Err("truncated base64 (length is 1 mod 4)".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_known_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_decode("Zm9vYmE=").unwrap(), b"fooba");
        assert_eq!(base64_decode("Zm9vYg").unwrap(), b"foob");
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        assert!(base64_decode("Zm9v!").is_err());
        assert!(base64_decode("Z").is_err());
    }

    #[test]
    fn sample_from_hand_written_json() {
        let line = r#"{"id":"q1","messages":[{"role":"system","content":"Think."},
            {"role":"user","content":[{"type":"image","path":"img/1.png"},
            {"type":"image","bytes_base64":"iVBO"},{"type":"text","text":"Area?"}]}],
            "answer":"12","metadata":{"source":"geo","options":["10","12"],"n":3}}"#;
        let s: Sample = serde_json::from_str(line).unwrap();
        assert_eq!(s.id, "q1");
        assert_eq!(
            s.messages[0].content,
            vec![ContentPart::Text("Think.".into())]
        );
        assert_eq!(
            s.messages[1].content,
            vec![
                ContentPart::Image(ImageSource::Path("img/1.png".into())),
                ContentPart::Image(ImageSource::Bytes(vec![0x89, b'P', b'N'])),
                ContentPart::Text("Area?".into()),
            ]
        );
        assert_eq!(s.answer.as_deref(), Some("12"));
        assert_eq!(s.meta("source"), Some("geo"));
        assert_eq!(s.meta("options"), Some(r#"["10","12"]"#));
        assert_eq!(s.meta("n"), Some("3"));
        assert_eq!(s.text_of("user"), "Area?");
        // Round trip through our own output.
        let back: Sample = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn json_errors_name_the_problem() {
        let e = serde_json::from_str::<Sample>(r#"{"messages":[],"anwser":"1"}"#).unwrap_err();
        assert!(e.to_string().contains("anwser"), "{e}");
        let e = serde_json::from_str::<ContentPart>(r#"{"type":"image"}"#).unwrap_err();
        assert!(e.to_string().contains("exactly one of"), "{e}");
        let e = serde_json::from_str::<ContentPart>(r#"{"type":"video","url":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("video"), "{e}");
    }

    #[test]
    fn completion_score_and_plan_json() {
        let c: Completion =
            serde_json::from_str(r#"{"sample":{"messages":[]},"response":"<answer>1</answer>"}"#)
                .unwrap();
        assert_eq!(c.response_tokens, 0);
        let s = Score::from_components(vec![("format".into(), 0.5), ("accuracy".into(), 1.0)]);
        assert_eq!(s.total, 1.5);
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"total":1.5,"components":{"format":0.5,"accuracy":1.0}}"#
        );
        let p: Plan = serde_json::from_str(
            r#"{"stage":"mgt","kind":"grpo","datasets":{"geo":0.7,"soko":0.3},
                "overrides":{"kl_coef":0.0,"pad":{"enabled":true}}}"#,
        )
        .unwrap();
        assert_eq!(p.kind, StageKind::Grpo);
        assert_eq!(p.datasets, vec![("geo".into(), 0.7), ("soko".into(), 0.3)]);
        assert_eq!(p.overrides.kl_coef, Some(0.0));
        assert_eq!(p.overrides.pad.enabled, Some(true));
        assert_eq!(p.overrides.learning_rate, None);
    }
}
