//! The lmmhost plugin SDK.
