//! The lmmhost plugin SDK: traits and export macros for the reward, loader and
//! schedule worlds, and the answer-checking helpers every reward rule needs.

pub mod answer;
pub mod math;
