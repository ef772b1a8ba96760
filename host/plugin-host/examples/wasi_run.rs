//! Runs a `wasm32-wasip2` command (a program with `main`, not a plugin) on an
//! engine configured as the plugin runtime's (epoch interruption on, no async
//! support), with stdout, stderr and the monotonic clock of the host. Used to
//! time code inside Wasm with no boundary crossed, e.g. the SDK's
//! `rule_ceiling` example:
//!
//! ```sh
//! cargo run --release -p lmmhost-plugin-host --example wasi_run -- PROGRAM.wasm
//! ```

use anyhow::{Context, Result};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn main() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .context("usage: wasi_run PROGRAM.wasm")?;
    // The same code generation as `PluginRuntime`: loops carry epoch checks.
    // `LMMHOST_NO_EPOCH=1` leaves the checks out, to measure what they cost.
    let mut config = lmmhost_plugin_host::runtime::engine_config();
    if std::env::var_os("LMMHOST_NO_EPOCH").is_some() {
        config.epoch_interruption(false);
    }
    let engine = Engine::new(&config)?;
    let component = Component::from_file(&engine, &path)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot compile {path}"))?;
    let mut linker = Linker::<Host>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    let wasi = WasiCtx::builder().inherit_stdout().inherit_stderr().build();
    let mut store = Store::new(
        &engine,
        Host {
            wasi,
            table: ResourceTable::new(),
        },
    );
    // No ticker runs here, so the deadline is never reached.
    store.set_epoch_deadline(1 << 40);
    let command = Command::instantiate(&mut store, &component, &linker)?;
    command
        .wasi_cli_run()
        .call_run(&mut store)?
        .map_err(|()| anyhow::anyhow!("{path} exited with an error"))
}
