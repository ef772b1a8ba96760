//! Reads a component's language-independent facts (world, WIT version, imports, exports, hash)
//! straight from its binary, without instantiating it.

use std::fmt;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use wasmparser::{Encoding, Parser, Payload};

use crate::HOST_WIT_PACKAGE;

/// The three plugin worlds of `lmmhost:plugin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    Reward,
    Loader,
    Schedule,
}

impl World {
    pub const ALL: [World; 3] = [World::Reward, World::Loader, World::Schedule];

    /// The interface a component of this world exports (`lmmhost:plugin/<iface>@X`).
    pub fn interface(self) -> &'static str {
        match self {
            World::Reward => "reward",
            World::Loader => "loader",
            World::Schedule => "schedule",
        }
    }

    /// The WIT world name, as written in `wit/` and in bundle manifests.
    pub fn name(self) -> &'static str {
        match self {
            World::Reward => "reward-plugin",
            World::Loader => "loader-plugin",
            World::Schedule => "schedule-plugin",
        }
    }

    /// Parses a world name as written in manifests (`reward-plugin`); the bare interface
    /// name (`reward`) is accepted too.
    pub fn parse(s: &str) -> Option<World> {
        World::ALL
            .into_iter()
            .find(|w| w.name() == s || w.interface() == s)
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What `inspect_component` learns about a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentFacts {
    /// Inferred from the exported `lmmhost:plugin/{reward,loader,schedule}` interface; `None`
    /// when the component exports none of them, or more than one.
    pub world: Option<World>,
    /// Version of the `lmmhost:plugin` package the component was built against.
    pub wit_version: Option<String>,
    /// Full names of the top-level exports, e.g. `lmmhost:plugin/reward@0.1.0`.
    pub exports: Vec<String>,
    /// Full names of the top-level imports, e.g. `wasi:io/streams@0.2.6`.
    pub imports: Vec<String>,
    pub size_bytes: u64,
    /// Lower-case hex SHA-256 of the whole component binary.
    pub sha256: String,
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Splits `ns:pkg/iface@ver` into (`ns:pkg`, `iface`, `ver`); `None` for names without
/// an interface path (plain function or instance names).
pub(crate) fn split_interface_name(name: &str) -> Option<(&str, &str, Option<&str>)> {
    let (path, version) = match name.split_once('@') {
        Some((p, v)) => (p, Some(v)),
        None => (name, None),
    };
    let (package, iface) = path.split_once('/')?;
    package.contains(':').then_some((package, iface, version))
}

/// Parses a WebAssembly component and returns its facts. A core module, a truncated file or
/// anything that is not WebAssembly is an error that says so.
pub fn inspect_component(bytes: &[u8]) -> Result<ComponentFacts> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        bail!(
            "not a WebAssembly file (expected the `\\0asm` header, found {} bytes starting with {:02x?})",
            bytes.len(),
            &bytes[..bytes.len().min(8)]
        );
    }
    let mut exports = Vec::new();
    let mut imports = Vec::new();
    // Nested core modules and components are emitted inline by `parse_all`; only the outermost
    // component's imports and exports describe what the host sees.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload =
            payload.context("malformed WebAssembly component (the binary does not parse)")?;
        match payload {
            Payload::Version {
                encoding: Encoding::Module,
                ..
            } if depth == 0 => {
                bail!(
                    "this is a core WebAssembly module, not a component: build the plugin for \
                     `wasm32-wasip2` (or wrap it with `wasm-tools component new`)"
                );
            }
            Payload::ModuleSection {
                unchecked_range, ..
            }
            | Payload::ComponentSection {
                unchecked_range, ..
            } => {
                // The nested parser would otherwise accept a nested module cut short by EOF.
                if unchecked_range.end > bytes.len() {
                    bail!(
                        "malformed WebAssembly component: truncated (a nested module or component \
                         declares {} bytes but the file ends at byte {})",
                        unchecked_range.end - unchecked_range.start,
                        bytes.len()
                    );
                }
                depth += 1
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.context("malformed component import section")?;
                    imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.context("malformed component export section")?;
                    exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }

    let ours = |name: &String| {
        split_interface_name(name)
            .filter(|(pkg, _, _)| *pkg == HOST_WIT_PACKAGE)
            .map(|(_, iface, ver)| (iface.to_string(), ver.map(str::to_string)))
    };
    let world_exports: Vec<(World, Option<String>)> = exports
        .iter()
        .filter_map(ours)
        .filter_map(|(iface, ver)| {
            World::ALL
                .into_iter()
                .find(|w| w.interface() == iface)
                .map(|w| (w, ver))
        })
        .collect();
    let world = match world_exports.as_slice() {
        [(w, _)] => Some(*w),
        _ => None,
    };
    // The exported world interface carries the version the plugin was built against; a
    // component that exports none still reveals it through imported `types`/`log`.
    let wit_version = world_exports
        .first()
        .and_then(|(_, v)| v.clone())
        .or_else(|| {
            exports
                .iter()
                .chain(&imports)
                .filter_map(ours)
                .find_map(|(_, v)| v)
        });

    Ok(ComponentFacts {
        world,
        wit_version,
        exports,
        imports,
        size_bytes: bytes.len() as u64,
        sha256: sha256_hex(bytes),
    })
}
