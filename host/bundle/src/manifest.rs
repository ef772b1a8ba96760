//! The bundle manifest (`manifest.toml` inside a bundle) and the pack input (`bundle.toml`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bundle container/manifest format version written by this crate.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    pub wit_package: String,
    /// Highest `lmmhost:plugin` version any component needs.
    pub wit_version: String,
    pub created_by: String,
    #[serde(rename = "component")]
    pub components: Vec<ManifestComponent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestComponent {
    /// Name used by experiments (`component = "..."`) and as the record name in the file.
    pub name: String,
    /// File name the component had when packed.
    pub file: String,
    pub world: String,
    pub wit_version: String,
    pub sha256: String,
    pub size: u64,
    /// Default configuration as TOML text (may be empty).
    #[serde(default)]
    pub default_config: String,
}

/// `bundle.toml`, the input to `pack`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackSpec {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "component", default)]
    pub components: Vec<PackComponent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackComponent {
    /// Path of the .wasm file, relative to the bundle directory.
    pub file: String,
    /// Defaults to the file stem.
    pub name: Option<String>,
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
}

/// Component names must be safe as identifiers in configs and listings.
pub fn valid_component_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}
