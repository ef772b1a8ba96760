//! WIT package version compatibility between a plugin and this host.
//!
//! Rule (semver, as Cargo applies it to crates):
//! - `0.y.z`: compatible when the major (0) and minor (`y`) are equal; the patch may differ
//!   either way. While the contract is 0.x every minor bump may break plugins.
//! - `x.y.z` with `x >= 1`: compatible when the major is equal and the host's minor is at least
//!   the plugin's (a host only ever adds to a 1.x contract, so it serves older plugins).
//! - A pre-release (`0.2.0-draft`) is only compatible with exactly the same version.

use std::fmt;

use crate::{ComponentFacts, HOST_WIT_PACKAGE, HOST_WIT_VERSIONS};

/// A parsed `MAJOR.MINOR.PATCH[-pre][+build]` version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: Option<String>,
}

impl WitVersion {
    pub fn parse(s: &str) -> Result<WitVersion, String> {
        // Build metadata never affects compatibility.
        let core_and_pre = s.split_once('+').map_or(s, |(v, _)| v);
        let (core, pre) = match core_and_pre.split_once('-') {
            Some((c, p)) if !p.is_empty() => (c, Some(p.to_string())),
            Some(_) => return Err(format!("malformed version `{s}`: empty pre-release")),
            None => (core_and_pre, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        let [major, minor, patch] = parts.as_slice() else {
            return Err(format!(
                "malformed version `{s}`: expected MAJOR.MINOR.PATCH"
            ));
        };
        let num = |p: &str| {
            p.parse::<u64>()
                .map_err(|_| format!("malformed version `{s}`: `{p}` is not a number"))
        };
        Ok(WitVersion {
            major: num(major)?,
            minor: num(minor)?,
            patch: num(patch)?,
            pre,
        })
    }

    /// Whether a host speaking `self` can run a plugin built against `plugin`.
    pub fn serves(&self, plugin: &WitVersion) -> bool {
        if self.pre.is_some() || plugin.pre.is_some() {
            return self == plugin;
        }
        if self.major != plugin.major {
            return false;
        }
        if self.major == 0 {
            self.minor == plugin.minor
        } else {
            self.minor >= plugin.minor
        }
    }

    /// Human description of the plugin versions this host accepts, e.g. `0.1.x` or `1.0 to 1.3`.
    pub fn compatible_range(&self) -> String {
        if self.pre.is_some() {
            self.to_string()
        } else if self.major == 0 {
            format!("0.{}.x", self.minor)
        } else {
            format!("{}.0.x to {}.{}.x", self.major, self.major, self.minor)
        }
    }
}

impl fmt::Display for WitVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(pre) = &self.pre {
            write!(f, "-{pre}")?;
        }
        Ok(())
    }
}

/// Checks a plugin version string against a host version string (both `MAJOR.MINOR.PATCH`).
pub fn check_version_compatible(plugin: &str, host: &str) -> Result<(), String> {
    check_served_by(plugin, &[host])
}

/// Checks that one of `hosts` (host versions) serves a plugin built against `plugin`.
pub fn check_served_by(plugin: &str, hosts: &[&str]) -> Result<(), String> {
    let plugin_v = WitVersion::parse(plugin)
        .map_err(|e| format!("plugin's {HOST_WIT_PACKAGE} version: {e}"))?;
    let mut ranges = Vec::new();
    for host in hosts {
        let host_v = WitVersion::parse(host).map_err(|e| format!("host WIT version: {e}"))?;
        if host_v.serves(&plugin_v) {
            return Ok(());
        }
        ranges.push(host_v.compatible_range());
    }
    Err(format!(
        "plugin needs {HOST_WIT_PACKAGE}@{plugin}, this host speaks {} (compatible: {})",
        speaks(hosts),
        ranges.join(", ")
    ))
}

/// Checks that this host (one of `HOST_WIT_VERSIONS`) serves a plugin built against `plugin`.
pub fn check_host_serves(plugin: &str) -> Result<(), String> {
    check_served_by(plugin, HOST_WIT_VERSIONS)
}

/// The versions this host speaks, as messages print them: `@0.1.0 and @0.2.0`.
pub fn host_speaks() -> String {
    speaks(HOST_WIT_VERSIONS)
}

/// `@0.1.0 and @0.2.0`.
fn speaks(hosts: &[&str]) -> String {
    let v: Vec<String> = hosts.iter().map(|h| format!("@{h}")).collect();
    match v.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => v.join(""),
    }
}

/// Checks that this host can run the component.
pub fn check_wit_compatible(facts: &ComponentFacts) -> Result<(), String> {
    match &facts.wit_version {
        Some(v) => check_host_serves(v),
        None => Err(format!(
            "component does not use {HOST_WIT_PACKAGE} at all (unversioned or foreign interfaces); \
             this host speaks {HOST_WIT_PACKAGE} {}; exports: [{}]",
            speaks(HOST_WIT_VERSIONS),
            facts.exports.join(", ")
        )),
    }
}
