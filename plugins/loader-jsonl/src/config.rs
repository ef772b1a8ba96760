//! The loader's TOML configuration (keys documented in docs/loaders.md).

use serde::Deserialize;

/// Which row layout to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Detected per row from its keys (`message`, `messages`, `problem`).
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
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub format: Format,
    /// Prepended as a system message to rows that have none.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Appended verbatim to the text of the last user message.
    #[serde(default)]
    pub instruction_suffix: Option<String>,
    /// Skip (and count) malformed rows instead of failing on them.
    #[serde(default)]
    pub skip_bad_rows: bool,
    /// Top-level field holding the sample id (default: `id` if present, else `<file>:<line>`).
    #[serde(default)]
    pub id_field: Option<String>,
}

impl Config {
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| format!("loader-jsonl config: {}", e.message()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_keys_and_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.format, Format::Auto);
        assert!(!c.skip_bad_rows);
        let c = Config::parse(
            "format = \"easyr1\"\nsystem_prompt = \"S\"\ninstruction_suffix = \" T\"\nskip_bad_rows = true\nid_field = \"uid\"",
        )
        .unwrap();
        assert_eq!(c.format, Format::EasyR1);
        assert_eq!(c.system_prompt.as_deref(), Some("S"));
        assert_eq!(c.instruction_suffix.as_deref(), Some(" T"));
        assert!(c.skip_bad_rows);
        assert_eq!(c.id_field.as_deref(), Some("uid"));
        assert_eq!(
            Config::parse("format = \"lmm-r1\"").unwrap().format,
            Format::LmmR1
        );
        assert_eq!(
            Config::parse("format = \"messages\"").unwrap().format,
            Format::Messages
        );
    }

    #[test]
    fn rejects_unknown_keys_and_formats() {
        let e = Config::parse("skip_bad_row = true").unwrap_err();
        assert!(e.contains("skip_bad_row"), "{e}");
        let e = Config::parse("format = \"verl\"").unwrap_err();
        assert!(e.contains("verl"), "{e}");
    }
}
