//! What a plugin instance can reach: WASI with no network, no environment,
//! no arguments, clocks that reveal nothing (fixed wall and monotonic time),
//! randomness only from a generator seeded by the host, read-only grants for
//! loaders, captured stdout/stderr, a memory cap, and a time budget per call.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use crate::runtime::{LogRecord, PluginSpec};

/// Bytes of guest stdout/stderr kept (the tail goes into trap errors).
const OUTPUT_CAPACITY: usize = 64 << 10;

/// Per-instance host state.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) plugin: String,
    pub(crate) log: crate::runtime::LogSink,
    stderr: MemoryOutputPipe,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl State {
    pub(crate) fn emit(&self, level: &'static str, message: String, fields: Vec<(String, String)>) {
        (self.log)(&LogRecord {
            plugin: self.plugin.clone(),
            level,
            message,
            fields,
        });
    }

    /// The last lines the guest wrote to stderr (a Rust panic message, say).
    pub(crate) fn stderr_tail(&self) -> String {
        let bytes = self.stderr.contents();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(6)..].join("\n")
    }
}

/// A wall clock stuck at the Unix epoch: plugins must not depend on time.
struct FixedWallClock;

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// A monotonic clock that never advances.
struct FixedMonotonicClock;

impl HostMonotonicClock for FixedMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The result of instantiating a plugin (any world, any contract version),
/// its error naming the plugin.
pub(crate) fn instantiated<T>(result: wasmtime::Result<T>, plugin: &str) -> Result<T> {
    result
        .map_err(anyhow::Error::from)
        .with_context(|| format!("plugin {plugin}: cannot instantiate"))
}

/// A fresh store for one instance of `spec`.
/// `preopens` are (host directory, guest path) pairs, mounted read-only.
pub(crate) fn new_store(
    engine: &Engine,
    spec: &PluginSpec,
    preopens: &[(PathBuf, String)],
) -> Result<Store<State>> {
    let stderr = MemoryOutputPipe::new(OUTPUT_CAPACITY);
    let mut b = WasiCtx::builder();
    b.stdout(stderr.clone())
        .stderr(stderr.clone())
        .wall_clock(FixedWallClock)
        .monotonic_clock(FixedMonotonicClock)
        .secure_random(StdRng::seed_from_u64(spec.seed))
        .insecure_random(StdRng::seed_from_u64(spec.seed ^ 0x9e37_79b9_7f4a_7c15))
        .insecure_random_seed(u128::from(spec.seed))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    for (host, guest) in preopens {
        b.preopened_dir(host, guest, FsPerms::ReadOnly)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "plugin {}: cannot grant {} (as {guest})",
                    spec.name,
                    host.display()
                )
            })?;
    }
    let limits = StoreLimitsBuilder::new()
        .memory_size(spec.limits.memory_bytes.try_into().unwrap_or(usize::MAX))
        .table_elements(1 << 20)
        .instances(64)
        .trap_on_grow_failure(true)
        .build();
    let state = State {
        wasi: b.build(),
        table: ResourceTable::new(),
        limits,
        plugin: spec.name.clone(),
        log: spec.log.clone(),
        stderr,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    // Instantiation runs start functions: they get the same budget as a call.
    store.set_epoch_deadline(crate::runtime::ticks(spec.limits.call_timeout));
    Ok(store)
}

/// Read-only mounts for granted paths, each visible in the guest at its own
/// absolute host path (so a loader's errors name the real file). A granted
/// directory is mounted as is; a granted file is hard-linked (or copied) into
/// a private staging directory that is mounted in place of its parent, so the
/// file's siblings stay invisible.
pub struct Grants {
    pub preopens: Vec<(PathBuf, String)>,
    /// The paths the plugin is told about, as it sees them.
    pub guest_paths: Vec<String>,
    _staging: Option<tempfile::TempDir>,
}

impl Grants {
    pub fn prepare(plugin: &str, paths: &[PathBuf]) -> Result<Grants> {
        let mut preopens: Vec<(PathBuf, String)> = Vec::new();
        let mut guest_paths = Vec::new();
        let mut staging: Option<tempfile::TempDir> = None;
        for (i, p) in paths.iter().enumerate() {
            let abs = std::fs::canonicalize(p).with_context(|| {
                format!(
                    "plugin {plugin}: granted path {} does not exist",
                    p.display()
                )
            })?;
            let guest = abs.to_string_lossy().into_owned();
            if abs.is_dir() {
                preopens.push((abs.clone(), guest.clone()));
            } else {
                let parent = abs
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from("/"));
                let name = abs.file_name().context("granted file has no name")?;
                let stage = match &staging {
                    Some(s) => s.path().to_path_buf(),
                    None => {
                        let t = tempfile::Builder::new()
                            .prefix("lmmhost-grant-")
                            .tempdir()
                            .with_context(|| {
                                format!("plugin {plugin}: cannot create a staging directory")
                            })?;
                        let path = t.path().to_path_buf();
                        staging = Some(t);
                        path
                    }
                };
                // One staging subdirectory per distinct parent.
                let guest_parent = parent.to_string_lossy().into_owned();
                let sub = match preopens
                    .iter()
                    .find(|(h, g)| g == &guest_parent && h.starts_with(&stage))
                {
                    Some((h, _)) => h.clone(),
                    None => {
                        let sub = stage.join(format!("g{i}"));
                        std::fs::create_dir_all(&sub)?;
                        preopens.push((sub.clone(), guest_parent));
                        sub
                    }
                };
                let dest = sub.join(name);
                if std::fs::hard_link(&abs, &dest).is_err() {
                    std::fs::copy(&abs, &dest).with_context(|| {
                        format!(
                            "plugin {plugin}: cannot stage granted file {}",
                            abs.display()
                        )
                    })?;
                }
            }
            guest_paths.push(guest);
        }
        Ok(Grants {
            preopens,
            guest_paths,
            _staging: staging,
        })
    }
}

/// Why a call into a plugin did not return normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The call ran past its time budget and was interrupted.
    Timeout,
    /// The instance tried to grow its memory past the cap.
    Memory,
    /// Any other trap (a Rust panic is `unreachable` executed).
    Trap,
}

/// A failed call, already described for a user.
#[derive(Debug, Clone)]
pub struct CallFailure {
    pub kind: FailureKind,
    pub message: String,
}

/// Runs `f` against `store` with a fresh time budget; classifies failures.
/// After a failure the instance must not be used again.
pub(crate) fn call_with_budget<R>(
    store: &mut Store<State>,
    timeout: Duration,
    memory_bytes: u64,
    f: impl FnOnce(&mut Store<State>) -> wasmtime::Result<R>,
) -> Result<R, CallFailure> {
    store.set_epoch_deadline(crate::runtime::ticks(timeout));
    f(store).map_err(|e| {
        let text = format!("{e:?}");
        let (kind, message) = if matches!(
            e.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ) {
            (
                FailureKind::Timeout,
                format!(
                    "timed out after {} ms (limit call_timeout_ms)",
                    timeout.as_millis()
                ),
            )
        } else if text.contains("growing memory") || text.contains("memory minimum size") {
            (
                FailureKind::Memory,
                format!(
                    "ran out of memory (limit memory_mb = {})",
                    memory_bytes >> 20
                ),
            )
        } else {
            let first = format!("{e}");
            let tail = store.data().stderr_tail();
            if tail.is_empty() {
                (FailureKind::Trap, format!("trapped: {first}"))
            } else {
                (
                    FailureKind::Trap,
                    format!("trapped: {first}; plugin stderr: {tail}"),
                )
            }
        };
        CallFailure { kind, message }
    })
}
