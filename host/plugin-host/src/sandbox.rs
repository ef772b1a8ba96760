//! What a plugin instance can reach and spend: WASI with no network, no
//! environment, no arguments, clocks that reveal nothing (fixed wall and
//! monotonic time), randomness only from a generator seeded by the host,
//! read-only grants for loaders, captured stdout/stderr; and its limits
//! (a time budget per call, a memory cap per instance, the size of a reward
//! pool), their defaults, how they are enforced, and what a failed item
//! costs a batch (`OnError`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Deserialize;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use crate::log::{LogRecord, LogSink};

/// How often the engine's epoch advances; time budgets are counted in these ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of guest stdout/stderr kept (the tail goes into trap errors).
const OUTPUT_CAPACITY: usize = 64 << 10;

/// The limits of one plugin, spelled as the experiment file's
/// `[plugins.NAME.limits]` table, which deserialises straight into it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wall time one call (including `init` and instantiation) may take
    /// before it is interrupted.
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// Linear memory per instance, in MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Parallel instances of a reward plugin (a batch is split across them);
    /// `None`: one per core.
    #[serde(default)]
    pub instances: Option<usize>,
}

fn default_call_timeout_ms() -> u64 {
    10_000
}

fn default_memory_mb() -> u64 {
    512
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout_ms: default_call_timeout_ms(),
            memory_mb: default_memory_mb(),
            instances: None,
        }
    }
}

impl Limits {
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    pub fn memory_bytes(&self) -> u64 {
        self.memory_mb.saturating_mul(1 << 20)
    }

    /// The size of a reward plugin's instance pool: at least one.
    pub fn instances(&self) -> usize {
        self.instances
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1)
    }
}

/// What the run does when a reward plugin fails on one item of a batch
/// (`on_error` in the experiment file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// The whole call fails with an error naming the plugin, the call and the item.
    #[default]
    Abort,
    /// The item scores zero; the failure is reported alongside the scores.
    Zero,
}

/// Epoch ticks for a time budget (at least one, plus the tick in progress).
pub(crate) fn ticks(d: Duration) -> u64 {
    (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}

/// Per-instance host state.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    plugin: String,
    log: LogSink,
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
    /// Hands one record of the guest's `log` import to the plugin's sink.
    pub(crate) fn emit(&self, level: &'static str, message: String, fields: Vec<(String, String)>) {
        (self.log)(&LogRecord {
            plugin: self.plugin.clone(),
            level,
            message,
            fields,
        });
    }

    /// The last lines the guest wrote to stderr (a Rust panic message, say).
    fn stderr_tail(&self) -> String {
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

/// A fresh store for one instance of `plugin`, with its memory cap and, for
/// instantiation, its time budget. `preopens` are (host directory, guest
/// path) pairs, mounted read-only.
pub(crate) fn new_store(
    engine: &Engine,
    plugin: &str,
    seed: u64,
    limits: &Limits,
    log: &LogSink,
    preopens: &[(PathBuf, String)],
) -> Result<Store<State>> {
    let stderr = MemoryOutputPipe::new(OUTPUT_CAPACITY);
    let mut b = WasiCtx::builder();
    b.stdout(stderr.clone())
        .stderr(stderr.clone())
        .wall_clock(FixedWallClock)
        .monotonic_clock(FixedMonotonicClock)
        .secure_random(StdRng::seed_from_u64(seed))
        .insecure_random(StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15))
        .insecure_random_seed(u128::from(seed))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    for (host, guest) in preopens {
        b.preopened_dir(host, guest, FsPerms::ReadOnly)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "plugin {plugin}: cannot grant {} (as {guest})",
                    host.display()
                )
            })?;
    }
    let store_limits = StoreLimitsBuilder::new()
        .memory_size(limits.memory_bytes().try_into().unwrap_or(usize::MAX))
        .table_elements(1 << 20)
        .instances(64)
        .trap_on_grow_failure(true)
        .build();
    let state = State {
        wasi: b.build(),
        table: ResourceTable::new(),
        limits: store_limits,
        plugin: plugin.to_string(),
        log: log.clone(),
        stderr,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    // Instantiation runs start functions: they get the same budget as a call.
    store.set_epoch_deadline(ticks(limits.call_timeout()));
    Ok(store)
}

/// Read-only mounts for granted paths, each visible in the guest at its own
/// absolute host path (so a loader's errors name the real file). A granted
/// directory is mounted as is; a granted file is hard-linked (or copied) into
/// a private staging directory that is mounted in place of its parent, so the
/// file's siblings stay invisible. Image roots are directories mounted as
/// is, but not data: they are not among `guest_paths`.
pub(crate) struct Grants {
    pub preopens: Vec<(PathBuf, String)>,
    /// The data paths the plugin is opened on, as it sees them.
    pub guest_paths: Vec<String>,
    /// The image roots, as the plugin sees them.
    pub guest_roots: Vec<String>,
    _staging: Option<tempfile::TempDir>,
}

impl Grants {
    pub fn prepare(plugin: &str, paths: &[PathBuf], image_roots: &[PathBuf]) -> Result<Grants> {
        let mut preopens: Vec<(PathBuf, String)> = Vec::new();
        let mut guest_roots = Vec::new();
        for r in image_roots {
            let abs = std::fs::canonicalize(r).with_context(|| {
                format!("plugin {plugin}: image root {} does not exist", r.display())
            })?;
            if !abs.is_dir() {
                bail!(
                    "plugin {plugin}: image root {} is not a directory",
                    r.display()
                );
            }
            let guest = abs.to_string_lossy().into_owned();
            preopens.push((abs, guest.clone()));
            guest_roots.push(guest);
        }
        let roots = preopens.len();
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
            // A file inside an image root is visible through it already; a
            // staged parent would hide the root's other files below it.
            let in_root = preopens[..roots].iter().any(|(h, _)| abs.starts_with(h));
            if abs.is_dir() {
                preopens.push((abs.clone(), guest.clone()));
            } else if !in_root {
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
            guest_roots,
            _staging: staging,
        })
    }
}

/// A call that did not return normally (timeout, memory cap, trap), already
/// described for a user. The instance must not be used again.
#[derive(Debug, Clone)]
pub(crate) struct CallFailure {
    pub message: String,
}

/// Runs `f` against `store` with a fresh time budget and describes a failure
/// by the limit it hit, naming the setting to raise.
pub(crate) fn call_with_budget<R>(
    store: &mut Store<State>,
    limits: &Limits,
    f: impl FnOnce(&mut Store<State>) -> wasmtime::Result<R>,
) -> Result<R, CallFailure> {
    store.set_epoch_deadline(ticks(limits.call_timeout()));
    f(store).map_err(|e| {
        let text = format!("{e:?}");
        let message = if matches!(
            e.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ) {
            format!(
                "timed out after {} ms (limit call_timeout_ms)",
                limits.call_timeout_ms
            )
        } else if text.contains("growing memory") || text.contains("memory minimum size") {
            format!("ran out of memory (limit memory_mb = {})", limits.memory_mb)
        } else {
            let first = format!("{e}");
            let tail = store.data().stderr_tail();
            if tail.is_empty() {
                format!("trapped: {first}")
            } else {
                format!("trapped: {first}; plugin stderr: {tail}")
            }
        };
        CallFailure { message }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plugin's entry in an experiment file, as far as the sandbox reads it.
    #[derive(Debug, Deserialize)]
    struct Entry {
        #[serde(default)]
        limits: Limits,
        #[serde(default)]
        on_error: OnError,
    }

    fn entry(text: &str) -> Result<Entry, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let d = Limits::default();
        assert_eq!(
            (d.call_timeout_ms, d.memory_mb, d.instances),
            (10_000, 512, None)
        );
        assert_eq!(d.call_timeout(), Duration::from_secs(10));
        assert_eq!(d.memory_bytes(), 512 << 20);
        assert!(d.instances() >= 1, "one per core");
        assert_eq!(OnError::default(), OnError::Abort);
        let e = entry("").unwrap();
        assert_eq!((e.limits, e.on_error), (d, OnError::Abort));
        let e = entry("[limits]\n").unwrap();
        assert_eq!(
            e.limits,
            Limits::default(),
            "an empty table keeps every default"
        );
    }

    #[test]
    fn the_experiment_file_forms_parse() {
        let e = entry(
            "on_error = \"abort\"\n\
             [limits]\n\
             call_timeout_ms = 10000     # per call\n\
             memory_mb = 512             # per instance\n",
        )
        .unwrap();
        assert_eq!(e.limits, Limits::default());
        assert_eq!(e.on_error, OnError::Abort);
        let e = entry("on_error = \"zero\"\n[limits]\ninstances = 2\nmemory_mb = 64\n").unwrap();
        assert_eq!(
            e.limits,
            Limits {
                call_timeout_ms: 10_000,
                memory_mb: 64,
                instances: Some(2),
            }
        );
        assert_eq!(e.limits.instances(), 2);
        assert_eq!(e.limits.memory_bytes(), 64 << 20);
        assert_eq!(e.on_error, OnError::Zero);
        let zero = Limits {
            instances: Some(0),
            ..Limits::default()
        };
        assert_eq!(zero.instances(), 1, "a pool has at least one instance");
    }

    #[test]
    fn unknown_keys_and_values_are_refused_by_name() {
        let err = entry("[limits]\ncall_timeout = 5\n").unwrap_err();
        assert!(err.contains("call_timeout"), "{err}");
        let err = entry("on_error = \"skip\"\n").unwrap_err();
        assert!(err.contains("skip") && err.contains("zero"), "{err}");
        let err = entry("[limits]\nmemory_mb = \"lots\"\n").unwrap_err();
        assert!(err.contains("memory_mb"), "{err}");
    }

    /// Every `[plugins.NAME.limits]` table in the docs' TOML examples is one
    /// the host accepts.
    #[test]
    fn documented_limits_tables_parse() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        let mut found = 0;
        for file in std::fs::read_dir(&docs).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_none_or(|e| e != "md") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for table in limits_tables(&text) {
                let limits: Limits = toml::from_str(&table)
                    .unwrap_or_else(|e| panic!("{}: {table}\n{e}", path.display()));
                assert!(limits.call_timeout_ms > 0 && limits.memory_mb > 0);
                found += 1;
            }
        }
        assert!(found >= 2, "only {found} limits tables in docs/");
    }

    /// The bodies of the `[plugins.NAME.limits]` tables inside ```toml blocks.
    fn limits_tables(markdown: &str) -> Vec<String> {
        let (mut out, mut in_toml, mut current): (Vec<String>, bool, Option<String>) =
            (Vec::new(), false, None);
        for line in markdown.lines() {
            let t = line.trim();
            if t.starts_with("```") {
                in_toml = !in_toml && t == "```toml";
                out.extend(current.take());
            } else if in_toml && t.starts_with('[') {
                out.extend(current.take());
                if t.starts_with("[plugins.") && t.contains(".limits]") {
                    current = Some(String::new());
                }
            } else if let Some(body) = current.as_mut() {
                body.push_str(line);
                body.push('\n');
            }
        }
        out
    }
}
