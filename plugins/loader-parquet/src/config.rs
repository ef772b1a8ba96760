//! The loader's TOML configuration (keys documented in README.md).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Decided per row from the columns present.
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
    /// `reward_model.ground_truth`, `images`.
    Verl,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub format: Format,
    pub skip_bad_rows: bool,
    /// How many skip reasons go into `notes`.
    pub max_notes: usize,
    /// Added as the first message when the row has no system message.
    pub system_prompt: Option<String>,
    /// Replace a system message the row already has with `system_prompt`.
    pub replace_system: bool,
    /// Text put before / after the last user message's text (e.g. R1's
    /// "think, then answer in <answer></answer>" instruction).
    pub instruction_prefix: String,
    pub instruction_suffix: String,
    /// Strip a `$...$` and `\boxed{...}` wrapper from the reference answer.
    pub unwrap_answer: bool,
    pub id_key: String,
    pub answer_key: String,
    pub message_key: String,
    pub messages_key: String,
    pub problem_key: String,
    pub images_key: String,
    /// verl's chat-list prompt column.
    pub prompt_key: String,
    /// verl's reference answer, a dotted path into nested structs.
    pub ground_truth_key: String,
    pub image_placeholder: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            format: Format::Auto,
            skip_bad_rows: false,
            max_notes: 10,
            system_prompt: None,
            replace_system: false,
            instruction_prefix: String::new(),
            instruction_suffix: String::new(),
            unwrap_answer: false,
            id_key: "id".into(),
            answer_key: "answer".into(),
            message_key: "message".into(),
            messages_key: "messages".into(),
            problem_key: "problem".into(),
            images_key: "images".into(),
            prompt_key: "prompt".into(),
            ground_truth_key: "reward_model.ground_truth".into(),
            image_placeholder: "<image>".into(),
        }
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Self, String> {
        let c: Config =
            toml::from_str(text).map_err(|e| format!("loader-parquet config: {}", e.message()))?;
        if c.image_placeholder.is_empty() {
            return Err("loader-parquet config: `image_placeholder` is empty".into());
        }
        Ok(c)
    }
}
