//! The reward rules of the core plugins, as plain Rust implementing
//! [`crate::Reward`]: the plugins export them, and the host calls the same
//! code natively (benchmarks, offline scoring).
//!
//! Every rule reads its config once, in `Reward::new`, from the plugin's TOML
//! table: unknown keys are errors, and an empty table gives the defaults.

pub mod choice;
pub mod format;
pub mod length;
pub mod math;
pub mod sokoban;

use serde::de::DeserializeOwned;

/// Parses a rule's TOML config. Errors name the rule and the offending key
/// (toml reports unknown keys and type mismatches with the key and line).
pub fn parse_config<T: DeserializeOwned>(rule: &str, config: &str) -> Result<T, String> {
    toml::from_str(config).map_err(|e| format!("{rule} config: {}", e.to_string().trim_end()))
}

/// Which format check a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormatMode {
    /// No format check.
    None,
    /// LMM-R1: the whole response (trimmed) is `<think>..</think><answer>..</answer>`,
    /// nothing between the two blocks, one of each opening tag.
    R1,
    /// R1-V: `<think>..</think>`, optional whitespace, `<answer>..</answer>`, nothing around.
    R1Spaced,
    /// EasyR1: `<think>..</think>` followed by text containing `\boxed{..}`.
    Boxed,
}

impl FormatMode {
    /// Whether `response` has this format (`None` always passes).
    pub fn matches(self, response: &str) -> bool {
        match self {
            FormatMode::None => true,
            FormatMode::R1 => crate::answer::is_r1_format(response),
            FormatMode::R1Spaced => crate::answer::is_r1_spaced_format(response),
            FormatMode::Boxed => crate::answer::is_boxed_format(response),
        }
    }

    /// The customary reward for a matching format: 0.5 for R1 (LMM-R1, R1-V),
    /// 0.1 for boxed (EasyR1's format weight).
    pub fn default_value(self) -> f64 {
        match self {
            FormatMode::None => 0.0,
            FormatMode::R1 | FormatMode::R1Spaced => 0.5,
            FormatMode::Boxed => 0.1,
        }
    }
}
