//! Reward plugin: math accuracy against the reference answer, with an optional format term.
//! The rule and its config keys are documented in `lmmhost_sdk::rules::math`.

lmmhost_sdk::export_reward!(lmmhost_sdk::rules::math::MathAccuracy);
