//! Reward plugin: multiple-choice accuracy (letters or option text).
//! The rule and its config keys are documented in `lmmhost_sdk::rules::choice`.

lmmhost_sdk::export_reward!(lmmhost_sdk::rules::choice::ChoiceAccuracy);
