//! The process-wide plugin runtime: one engine with epoch interruption, the
//! compiled-component cache, the ticker thread that drives time budgets,
//! and the checks a component passes before it is compiled.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use lmmhost_bundle::{check_wit_compatible, inspect_component, ComponentFacts, WitVersion, World};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use crate::cache::ComponentCache;
use crate::contract::{self, Contract};
use crate::sandbox::EPOCH_TICK;
use crate::spec::PluginSpec;

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
    /// loads it from the cache); returns it with the host module of its
    /// contract version.
    pub(crate) fn prepare(
        &self,
        spec: &PluginSpec,
        world: World,
    ) -> Result<(Component, ComponentFacts, &'static dyn Contract)> {
        let facts =
            inspect_component(&spec.bytes).with_context(|| format!("plugin {}", spec.name))?;
        if let Err(msg) = check_wit_compatible(&facts) {
            bail!("plugin {} refused: {msg}", spec.name);
        }
        let version = WitVersion::parse(facts.wit_version.as_deref().unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("plugin {}: {e}", spec.name))?;
        // check_wit_compatible admitted one of HOST_WIT_VERSIONS; each has a
        // module (contract::tests checks it), so this is a bug if it fails.
        let Some(contract) = contract::for_version(&version) else {
            bail!(
                "plugin {}: this host has no bindings for lmmhost:plugin@{version}",
                spec.name
            )
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

    pub fn cache(&self) -> Option<&ComponentCache> {
        self.cache.as_ref()
    }
}

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
