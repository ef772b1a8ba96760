//! Loader plugin for JSONL datasets: LMM-R1/OpenRLHF (`message` + `answer`),
//! EasyR1/R1-V (`problem`, `answer`, `images`) and chat SFT traces
//! (`messages`, `images`). Config keys and formats: `docs/loaders.md`.

//! Rows are parsed by the SDK's shared `lmmhost_sdk::rows` (also used by
//! loader-parquet); this crate finds, indexes and reads the JSONL lines.

pub mod dataset;
pub mod files;

#[cfg(test)]
mod tests;

pub use dataset::JsonlLoader;

// Only in the component: the export symbols' names (`lmmhost:plugin/loader@0.2.0#get`)
// are not valid in a native shared library's version script.
#[cfg(target_arch = "wasm32")]
lmmhost_sdk::export_loader!(crate::dataset::JsonlLoader);
