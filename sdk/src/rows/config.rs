//! The row-parsing keys of a loader's TOML config, shared by loader-jsonl and
//! loader-parquet (documented in docs/loaders.md).

use serde::Deserialize;

/// Which row layout to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Decided per row from its keys (`message`, `messages`, `problem`, `prompt`).
    #[default]
    Auto,
    /// LMM-R1 / OpenRLHF: `message` (stringified OpenAI message list) + `answer`.
    #[serde(rename = "lmm-r1")]
    LmmR1,
    /// EasyR1 / R1-V: `problem` with `<image>` placeholders, `answer`, `images`.
    #[serde(rename = "easyr1")]
    EasyR1,
    /// Chat SFT traces: `messages` (assistant turn as target) + `images`.
    Messages,
    /// verl: `prompt` (chat list with `<image>` placeholders),
    /// `reward_model.ground_truth` (a string, number or list), `images`.
    Verl,
    /// ShareGPT (LLaMA-Factory): `conversations` of `{"from", "value"}` turns,
    /// optional `system`, `images`.
    #[serde(rename = "sharegpt")]
    ShareGpt,
    /// ms-swift: `query`, `response`, optional `history` (`[[q, r], ...]`),
    /// `system`, `images`.
    QueryResponse,
    /// LLaMA-Factory's Alpaca layout: `instruction`, `input`, `output`,
    /// optional `system`, `history`, `images`.
    Alpaca,
    /// LMM-R1's Sokoban rows: the LMM-R1 `message` layout without a
    /// reference answer; the level is read from the `.npy` file at `env_path`.
    Sokoban,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::LmmR1 => "lmm-r1",
            Format::EasyR1 => "easyr1",
            Format::Messages => "messages",
            Format::Verl => "verl",
            Format::ShareGpt => "sharegpt",
            Format::QueryResponse => "query-response",
            Format::Alpaca => "alpaca",
            Format::Sokoban => "sokoban",
        }
    }
}

/// A loader's config: how rows become samples, plus `skip_bad_rows`/`max_notes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub format: Format,
    /// Skip (and count) malformed rows instead of failing on them.
    pub skip_bad_rows: bool,
    /// Parse every row once at `open`, so a malformed row is reported before
    /// training starts (always on with `skip_bad_rows`).
    pub validate_at_open: bool,
    /// Directories holding images (or Sokoban levels), granted read-only
    /// apart from the data files. The host fills this from the dataset's
    /// `images` list; a root the sandbox does not show is an error at `open`.
    pub image_roots: Vec<String>,
    /// Relative image names are resolved against this directory (EasyR1's
    /// `image_dir`); itself absolute or relative to the data file's directory.
    pub image_dir: Option<String>,
    /// How many skip reasons go into `DatasetInfo::notes`.
    pub max_notes: usize,
    /// Added as the first message when the row has no system message.
    pub system_prompt: Option<String>,
    /// Replace a system message the row already has with `system_prompt`.
    pub replace_system: bool,
    /// Put before the first / after the last text of the last user message
    /// (e.g. R1's "think, then answer in <answer></answer>" instruction).
    pub instruction_prefix: String,
    pub instruction_suffix: String,
    /// Strip a `$...$` and `\boxed{...}` wrapper from the reference answer.
    pub unwrap_answer: bool,
    /// Field used as the sample id when present (else `<file name>:<line>`).
    pub id_key: String,
    /// Field that must hold the sample id (a row without it is bad); overrides `id_key`.
    pub id_field: Option<String>,
    pub answer_key: String,
    pub message_key: String,
    pub messages_key: String,
    pub problem_key: String,
    pub images_key: String,
    /// verl's chat-list prompt column.
    pub prompt_key: String,
    /// verl's reference answer, a dotted path into nested objects.
    pub ground_truth_key: String,
    pub image_placeholder: String,
    pub conversations_key: String,
    pub query_key: String,
    pub response_key: String,
    pub history_key: String,
    pub system_key: String,
    pub instruction_key: String,
    pub input_key: String,
    pub output_key: String,
    /// Sokoban rows: the field holding the level file (`.npy`).
    pub level_file_key: String,
    /// Sokoban rows: the metadata key the level is written to, as text rows.
    pub level_key: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            format: Format::Auto,
            skip_bad_rows: false,
            validate_at_open: true,
            image_roots: Vec::new(),
            image_dir: None,
            max_notes: 5,
            system_prompt: None,
            replace_system: false,
            instruction_prefix: String::new(),
            instruction_suffix: String::new(),
            unwrap_answer: false,
            id_key: "id".into(),
            id_field: None,
            answer_key: "answer".into(),
            message_key: "message".into(),
            messages_key: "messages".into(),
            problem_key: "problem".into(),
            images_key: "images".into(),
            prompt_key: "prompt".into(),
            ground_truth_key: "reward_model.ground_truth".into(),
            image_placeholder: "<image>".into(),
            conversations_key: "conversations".into(),
            query_key: "query".into(),
            response_key: "response".into(),
            history_key: "history".into(),
            system_key: "system".into(),
            instruction_key: "instruction".into(),
            input_key: "input".into(),
            output_key: "output".into(),
            level_file_key: "env_path".into(),
            level_key: "level".into(),
        }
    }
}

impl Config {
    /// Parses the plugin's TOML table; errors start with `<plugin> config:` and name the key.
    pub fn parse(plugin: &str, text: &str) -> Result<Self, String> {
        let c: Config =
            toml::from_str(text).map_err(|e| format!("{plugin} config: {}", e.message()))?;
        if c.image_placeholder.is_empty() {
            return Err(format!("{plugin} config: `image_placeholder` is empty"));
        }
        if let Some(r) = c.image_roots.iter().find(|r| !r.starts_with('/')) {
            return Err(format!(
                "{plugin} config: `image_roots` entry `{r}` must be an absolute path"
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_keys_and_defaults() {
        let c = Config::parse("l", "").unwrap();
        assert_eq!(c.format, Format::Auto);
        assert!(!c.skip_bad_rows);
        assert_eq!(c.max_notes, 5);
        let c = Config::parse(
            "l",
            "format = \"easyr1\"\nsystem_prompt = \"S\"\ninstruction_suffix = \" T\"\nskip_bad_rows = true\nid_field = \"uid\"",
        )
        .unwrap();
        assert_eq!(c.format, Format::EasyR1);
        assert_eq!(c.system_prompt.as_deref(), Some("S"));
        assert_eq!(c.instruction_suffix, " T");
        assert!(c.skip_bad_rows);
        assert_eq!(c.id_field.as_deref(), Some("uid"));
        for (text, f) in [
            ("lmm-r1", Format::LmmR1),
            ("messages", Format::Messages),
            ("verl", Format::Verl),
            ("sharegpt", Format::ShareGpt),
            ("query-response", Format::QueryResponse),
            ("alpaca", Format::Alpaca),
            ("sokoban", Format::Sokoban),
        ] {
            let c = Config::parse("l", &format!("format = \"{text}\"")).unwrap();
            assert_eq!(c.format, f);
        }
    }

    #[test]
    fn rejects_unknown_keys_formats_and_empty_placeholder() {
        let e = Config::parse("loader-x", "skip_bad_row = true").unwrap_err();
        assert!(
            e.starts_with("loader-x config") && e.contains("skip_bad_row"),
            "{e}"
        );
        let e = Config::parse("l", "format = \"csv\"").unwrap_err();
        assert!(e.contains("csv"), "{e}");
        let e = Config::parse("l", "image_placeholder = \"\"").unwrap_err();
        assert!(e.contains("image_placeholder"), "{e}");
    }
}
