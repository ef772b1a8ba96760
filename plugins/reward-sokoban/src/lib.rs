//! Reward plugin: LMM-R1's Sokoban game reward.
//! The rule and its config keys are documented in `lmmhost_sdk::rules::sokoban`.

lmmhost_sdk::export_reward!(lmmhost_sdk::rules::sokoban::SokobanReward);
