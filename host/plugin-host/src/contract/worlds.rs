//! What every contract version implements, in the SDK's types: linking a
//! component against each world ([`Contract`]) and each world's calls.

use anyhow::{Context, Result};
use lmmhost_sdk as sdk;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Engine, Store};

use crate::sandbox::State;

/// One contract version: links a component against one of its worlds.
pub(crate) trait Contract: Sync {
    fn reward(
        &self,
        engine: &Engine,
        component: &Component,
        plugin: &str,
    ) -> Result<Box<dyn Pre<dyn RewardInstance>>>;

    fn loader(
        &self,
        engine: &Engine,
        component: &Component,
        plugin: &str,
    ) -> Result<Box<dyn Pre<dyn LoaderInstance>>>;

    fn schedule(
        &self,
        engine: &Engine,
        component: &Component,
        plugin: &str,
    ) -> Result<Box<dyn Pre<dyn ScheduleInstance>>>;
}

/// A component linked against one world, from which every instance of a
/// plugin is made (the first one, and a fresh one after each trap).
pub(crate) trait Pre<I: ?Sized>: Send + Sync {
    fn new_instance(&self, store: &mut Store<State>) -> wasmtime::Result<Box<I>>;
}

// Every call below returns wasmtime's error for a trap, a timeout or an
// exhausted memory (the caller's budget describes it, and the instance is
// then dropped); the inner `Err` is the plugin's own answer, or a result
// that does not fit the call.

/// A reward instance of any contract version, in the SDK's types.
pub(crate) trait RewardInstance: Send + Sync {
    /// The export that scores, as error messages name it.
    fn score_call(&self) -> &'static str;

    fn init(&self, store: &mut Store<State>, config: &str) -> wasmtime::Result<Result<(), String>>;

    /// Scores every response of `groups` in one call: one item per response,
    /// in order, checked against the number of responses sent.
    fn score(
        &self,
        store: &mut Store<State>,
        groups: &[sdk::Group],
    ) -> wasmtime::Result<Result<sdk::ScoreTable, String>>;
}

/// A loader instance of any contract version, in the SDK's types.
pub(crate) trait LoaderInstance: Send + Sync {
    fn open(
        &self,
        store: &mut Store<State>,
        config: &str,
        files: &[String],
    ) -> wasmtime::Result<Result<sdk::DatasetInfo, String>>;

    fn get_many(
        &self,
        store: &mut Store<State>,
        indices: &[u64],
    ) -> wasmtime::Result<Vec<Result<sdk::Sample, String>>>;
}

/// A schedule instance of any contract version, in the SDK's types.
pub(crate) trait ScheduleInstance: Send + Sync {
    fn init(&self, store: &mut Store<State>, config: &str) -> wasmtime::Result<Result<(), String>>;

    fn next_plan(
        &self,
        store: &mut Store<State>,
        state: &sdk::TrainState,
    ) -> wasmtime::Result<Result<Option<sdk::Plan>, String>>;

    fn save_state(&self, store: &mut Store<State>) -> wasmtime::Result<Vec<u8>>;

    fn load_state(
        &self,
        store: &mut Store<State>,
        state: &[u8],
    ) -> wasmtime::Result<Result<(), String>>;
}

/// Links WASI and a world's imports (`add_world`), then pre-instantiates
/// `component`, so every instance of a plugin starts from the same checked linker.
pub(crate) fn link(
    engine: &Engine,
    component: &Component,
    plugin: &str,
    add_world: impl FnOnce(&mut Linker<State>) -> wasmtime::Result<()>,
) -> Result<InstancePre<State>> {
    let mut linker = Linker::<State>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    add_world(&mut linker)?;
    linker
        .instantiate_pre(component)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("plugin {plugin}: its imports cannot be satisfied by this host"))
}
