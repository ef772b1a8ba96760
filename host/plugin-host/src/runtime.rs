//! The process-wide plugin runtime: one engine with epoch interruption, the
//! compiled-component cache, and the ticker thread that drives time budgets.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lmmhost_bundle::{check_wit_compatible, inspect_component, ComponentFacts, WitVersion, World};
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine};

use crate::cache::ComponentCache;
use crate::sandbox::State;

/// How often the epoch advances; time budgets are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Settings of the runtime as a whole.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            cache_dir: default_cache_dir(),
        }
    }
}

/// `$XDG_CACHE_HOME/lmmhost/components`, or `~/.cache/lmmhost/components`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("lmmhost").join("components"))
}

/// Per-plugin resource limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall time one call may take before it is interrupted.
    pub call_timeout: Duration,
    /// Linear memory (and table) size cap per instance.
    pub memory_bytes: u64,
    /// Parallel instances for reward plugins (batches are split across them).
    pub instances: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: Duration::from_secs(10),
            memory_bytes: 512 << 20,
            instances: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

/// What the run does when a plugin fails on one item of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// The whole call fails with an error naming the plugin, the call and the item.
    #[default]
    Abort,
    /// The item scores zero; the failure is reported alongside the scores.
    Zero,
}

/// One structured log line from a plugin.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub plugin: String,
    pub level: &'static str,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

/// Where plugin log lines go.
pub type LogSink = Arc<dyn Fn(&LogRecord) + Send + Sync>;

/// Default sink: one line on stderr.
pub fn stderr_sink() -> LogSink {
    Arc::new(|r: &LogRecord| {
        let fields: String = r.fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
        eprintln!("[plugin {}] {}: {}{}", r.plugin, r.level, r.message, fields);
    })
}

/// Everything needed to start a plugin.
#[derive(Clone)]
pub struct PluginSpec {
    /// Shown in every error and log line.
    pub name: String,
    /// The component's bytes (from a .wasm file or a verified bundle).
    pub bytes: Arc<Vec<u8>>,
    /// The plugin's TOML table, as TOML text.
    pub config: String,
    pub limits: Limits,
    pub on_error: OnError,
    /// Seeds the plugin's only source of randomness.
    pub seed: u64,
    /// Read-only files and directories (loaders), as host paths.
    pub grants: Vec<PathBuf>,
    pub log: LogSink,
}

impl PluginSpec {
    /// A spec for the component file at `path`, with default limits.
    pub fn from_file(name: &str, path: &std::path::Path, config: &str) -> Result<PluginSpec> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("plugin {name}: cannot read {}", path.display()))?;
        Ok(PluginSpec {
            name: name.to_string(),
            bytes: Arc::new(bytes),
            config: config.to_string(),
            limits: Limits::default(),
            on_error: OnError::Abort,
            seed: 0,
            grants: Vec::new(),
            log: stderr_sink(),
        })
    }
}

/// The contract version a component was built against, among those this
/// host implements: each has its own thin host (`v0_1_0`, `v0_2_0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contract {
    V0_1,
    V0_2,
}

/// The shared engine, cache and epoch ticker.
pub struct PluginRuntime {
    pub(crate) engine: Engine,
    cache: Option<ComponentCache>,
    stop: Arc<AtomicBool>,
}

/// The engine settings plugins are compiled and run with: components,
/// epoch interruption (per-call time budgets), synchronous calls only. Public
/// so that measurements of code inside Wasm use the same code generation.
pub fn engine_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Synchronous calls only: the async machinery costs ~3x per call.
    config.concurrency_support(false);
    // Names compiled plugin code for `perf` (/tmp/perf-PID.map); a developer
    // knob for profiling the reward path, read from the host's environment.
    if std::env::var_os("LMMHOST_PERF_MAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

impl PluginRuntime {
    pub fn new(opts: RuntimeOptions) -> Result<PluginRuntime> {
        let engine = Engine::new(&engine_config())
            .map_err(anyhow::Error::from)
            .context("cannot create the wasmtime engine")?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let ticker_stop = stop.clone();
        std::thread::Builder::new()
            .name("lmmhost-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .context("cannot start the epoch ticker thread")?;
        let cache = opts.cache_dir.map(|dir| ComponentCache::new(dir, &engine));
        Ok(PluginRuntime {
            engine,
            cache,
            stop,
        })
    }

    /// Checks the component's WIT version and world, then compiles it (or
    /// loads it from the cache).
    pub(crate) fn prepare(
        &self,
        spec: &PluginSpec,
        world: World,
    ) -> Result<(Component, ComponentFacts, Contract)> {
        let facts =
            inspect_component(&spec.bytes).with_context(|| format!("plugin {}", spec.name))?;
        if let Err(msg) = check_wit_compatible(&facts) {
            bail!("plugin {} refused: {msg}", spec.name);
        }
        let version = WitVersion::parse(facts.wit_version.as_deref().unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("plugin {}: {e}", spec.name))?;
        // check_wit_compatible admitted one of HOST_WIT_VERSIONS; each needs
        // its host module here (a version added there without one is a bug).
        let contract = match (version.major, version.minor) {
            (0, 1) => Contract::V0_1,
            (0, 2) => Contract::V0_2,
            _ => bail!(
                "plugin {}: this host has no bindings for lmmhost:plugin@{version}",
                spec.name
            ),
        };
        match facts.world {
            Some(w) if w == world => {}
            Some(w) => bail!(
                "plugin {} is a {} but is used as a {}",
                spec.name,
                w.name(),
                world.name()
            ),
            None => bail!(
                "plugin {} exports no lmmhost:plugin interface (exports: {}); a {} must export {}",
                spec.name,
                facts.exports.join(", "),
                world.name(),
                world.interface()
            ),
        }
        let component = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, &spec.bytes, &facts.sha256),
            None => Component::from_binary(&self.engine, &spec.bytes).map_err(anyhow::Error::from),
        }
        .with_context(|| format!("plugin {}: cannot compile the component", spec.name))?;
        Ok((component, facts, contract))
    }

    /// Links WASI and a world's imports (`add_world`), then pre-instantiates
    /// `component`, so every instance of a plugin starts from the same checked linker.
    pub(crate) fn instance_pre(
        &self,
        spec: &PluginSpec,
        component: &Component,
        add_world: impl FnOnce(&mut Linker<State>) -> wasmtime::Result<()>,
    ) -> Result<InstancePre<State>> {
        let mut linker = Linker::<State>::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        add_world(&mut linker)?;
        linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "plugin {}: its imports cannot be satisfied by this host",
                    spec.name
                )
            })
    }

    pub fn cache(&self) -> Option<&ComponentCache> {
        self.cache.as_ref()
    }
}

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Epoch ticks for a time budget (at least one).
pub(crate) fn ticks(d: Duration) -> u64 {
    (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}
