//! Reward plugin: ReVisual-R1's length-budget term.
//! The rule and its config keys are documented in `lmmhost_sdk::rules::length`.

lmmhost_sdk::export_reward!(lmmhost_sdk::rules::length::LengthBudget);
