//! Reward plugin: R1 tag format or EasyR1 boxed format.
//! The rule and its config keys are documented in `lmmhost_sdk::rules::format`.

lmmhost_sdk::export_reward!(lmmhost_sdk::rules::format::FormatRule);
