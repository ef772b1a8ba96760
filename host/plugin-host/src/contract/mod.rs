//! The versions of `lmmhost:plugin` this host serves, one folder each.
//!
//! A version's folder owns its bindings (one `bindgen!` per world, from
//! `wit/vX.Y.Z/`), the conversions between its generated types and the SDK's
//! plain types, and one implementation of each world's interface
//! (`worlds.rs`). The plugin types (`RewardPlugin`, ...) see only those
//! interfaces, so serving another version is one new folder plus one entry
//! in [`for_version`].

use lmmhost_bundle::WitVersion;

mod shapes;
mod v0_1_0;
mod v0_2_0;
mod worlds;

pub(crate) use worlds::{Contract, LoaderInstance, Pre, RewardInstance, ScheduleInstance};

/// The host module serving plugins built against `version`, or `None` when
/// this host has none. Compatible versions share a module (0.y.z by minor,
/// as `WitVersion::serves` compares them).
pub(crate) fn for_version(version: &WitVersion) -> Option<&'static dyn Contract> {
    match (version.major, version.minor) {
        (0, 1) => Some(&v0_1_0::Host),
        (0, 2) => Some(&v0_2_0::Host),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lmmhost_bundle::HOST_WIT_VERSIONS;

    fn v(s: &str) -> WitVersion {
        WitVersion::parse(s).unwrap()
    }

    #[test]
    fn every_listed_version_has_a_module_and_no_other_does() {
        for listed in HOST_WIT_VERSIONS {
            assert!(for_version(&v(listed)).is_some(), "no module for {listed}");
        }
        for major in 0..3 {
            for minor in 0..10 {
                let probe = v(&format!("{major}.{minor}.7"));
                let listed = HOST_WIT_VERSIONS.iter().any(|h| v(h).serves(&probe));
                assert_eq!(
                    for_version(&probe).is_some(),
                    listed,
                    "{probe}: a module exactly for the versions HOST_WIT_VERSIONS serves"
                );
            }
        }
    }

    /// docs/wit-contract.md shows the table as it is in this file, and a
    /// folder for every version the table names.
    #[test]
    fn the_documented_table_is_the_code() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let doc = std::fs::read_to_string(root.join("../../docs/wit-contract.md")).unwrap();
        let code = std::fs::read_to_string(root.join("src/contract/mod.rs")).unwrap();
        let start = doc
            .find("pub(crate) fn for_version")
            .expect("the table in the doc");
        let end = start + doc[start..].find("\n}\n").expect("its end") + 2;
        assert!(
            code.contains(&doc[start..end]),
            "docs/wit-contract.md shows another table:\n{}",
            &doc[start..end]
        );
        for line in doc[start..end].lines().filter(|l| l.contains("::Host")) {
            let folder = line
                .split("&")
                .nth(1)
                .and_then(|r| r.split("::").next())
                .unwrap();
            assert!(
                root.join("src/contract")
                    .join(folder)
                    .join("mod.rs")
                    .is_file(),
                "{folder}"
            );
        }
    }
}
