//! Format reward: R1 tag format (LMM-R1) or EasyR1's boxed format.
//!
//! ```toml
//! mode = "r1"           # "r1" (<think>..</think><answer>..</answer>) or "boxed" (<think>..</think> .. \boxed{..})
//! value = 0.5           # reward when the format matches; default 0.5 for r1 (LMM-R1), 0.1 for boxed (EasyR1)
//! mismatch = 0.0        # reward when it does not
//! component = "format"  # name of the score component
//! ```

use super::{parse_config, FormatMode};
use crate::types::{Completion, Score};
use crate::Reward;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_mode")]
    mode: FormatMode,
    value: Option<f64>,
    #[serde(default)]
    mismatch: f64,
    #[serde(default = "default_component")]
    component: String,
}

fn default_mode() -> FormatMode {
    FormatMode::R1
}

fn default_component() -> String {
    "format".to_owned()
}

/// The format rule, configured.
#[derive(Debug, Clone)]
pub struct FormatRule {
    pub mode: FormatMode,
    pub value: f64,
    pub mismatch: f64,
    pub component: String,
}

impl Reward for FormatRule {
    fn new(config: &str) -> Result<Self, String> {
        let c: Config = parse_config("reward-format", config)?;
        if c.mode == FormatMode::None {
            return Err("reward-format config: `mode` must be \"r1\" or \"boxed\"".into());
        }
        Ok(FormatRule {
            mode: c.mode,
            value: c.value.unwrap_or(c.mode.default_value()),
            mismatch: c.mismatch,
            component: c.component,
        })
    }

    fn score(&self, completion: &Completion) -> Result<Score, String> {
        let v = if self.mode.matches(&completion.response) {
            self.value
        } else {
            self.mismatch
        };
        Ok(Score {
            total: v,
            components: vec![(self.component.clone(), v)],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(response: &str) -> Completion {
        Completion {
            response: response.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn r1_mode_gives_lmm_r1_half_point() {
        let r = FormatRule::new("").unwrap();
        let good = r
            .score(&completion("<think>2+2=4</think><answer>4</answer>"))
            .unwrap();
        assert_eq!(good.total, 0.5);
        assert_eq!(good.components, vec![("format".to_owned(), 0.5)]);
        // Two answer tags, missing think, trailing text: all 0.
        for bad in [
            "<think>a</think><answer>1</answer><answer>2</answer>",
            "<answer>4</answer>",
            "<think>a</think><answer>4</answer> and more",
        ] {
            assert_eq!(r.score(&completion(bad)).unwrap().total, 0.0, "{bad}");
        }
    }

    #[test]
    fn boxed_mode_and_custom_values() {
        let r = FormatRule::new("mode = \"boxed\"").unwrap();
        assert_eq!(r.value, 0.1);
        let s = r
            .score(&completion("<think>x</think> so \\boxed{3}"))
            .unwrap();
        assert_eq!(s.total, 0.1);
        let r =
            FormatRule::new("mode = \"boxed\"\nvalue = 1.0\nmismatch = -1.0\ncomponent = \"fmt\"")
                .unwrap();
        let s = r.score(&completion("just \\boxed{3}")).unwrap();
        assert_eq!(s.total, -1.0);
        assert_eq!(s.components, vec![("fmt".to_owned(), -1.0)]);
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = FormatRule::new("mdoe = \"r1\"").unwrap_err();
        assert!(e.contains("mdoe"), "{e}");
        let e = FormatRule::new("mode = \"xml\"").unwrap_err();
        assert!(e.contains("xml") && e.contains("mode"), "{e}");
        let e = FormatRule::new("value = \"high\"").unwrap_err();
        assert!(e.contains("value"), "{e}");
    }
}
