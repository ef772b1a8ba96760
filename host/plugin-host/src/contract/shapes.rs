//! What several contract versions share because their WIT has the same
//! shape there, written once: each version's folder instantiates the
//! macros that fit its WIT (a version that changes a world implements that
//! world itself, as 0.2.0 does for rewards). The macros expand where they
//! are invoked, against that version's generated types.

use lmmhost_sdk as sdk;

/// Links the version's three worlds and serves their `log` import. Expects
/// the bindings modules `reward`, `loader` and `schedule` where it is
/// invoked, and defines `Host`, the version's entry in `contract::for_version`.
macro_rules! serve_worlds {
    () => {
        $crate::contract::shapes::log_import!(reward);
        $crate::contract::shapes::log_import!(loader);
        $crate::contract::shapes::log_import!(schedule);
        // The shared types interface has no functions to provide.
        impl reward::lmmhost::plugin::types::Host for $crate::sandbox::State {}
        impl loader::lmmhost::plugin::types::Host for $crate::sandbox::State {}

        pub(crate) struct Host;

        const _: () = {
            use wasmtime::component::{Component, HasSelf};
            use wasmtime::{Engine, Store};
            use $crate::contract::worlds::{
                link, Contract, LoaderInstance, Pre, RewardInstance, ScheduleInstance,
            };
            use $crate::sandbox::State;

            impl Contract for Host {
                fn reward(
                    &self,
                    engine: &Engine,
                    component: &Component,
                    plugin: &str,
                ) -> anyhow::Result<Box<dyn Pre<dyn RewardInstance>>> {
                    let pre = link(engine, component, plugin, |l| {
                        reward::RewardPlugin::add_to_linker::<State, HasSelf<State>>(l, |s| s)
                    })?;
                    Ok(Box::new(reward::RewardPluginPre::new(pre)?))
                }

                fn loader(
                    &self,
                    engine: &Engine,
                    component: &Component,
                    plugin: &str,
                ) -> anyhow::Result<Box<dyn Pre<dyn LoaderInstance>>> {
                    let pre = link(engine, component, plugin, |l| {
                        loader::LoaderPlugin::add_to_linker::<State, HasSelf<State>>(l, |s| s)
                    })?;
                    Ok(Box::new(loader::LoaderPluginPre::new(pre)?))
                }

                fn schedule(
                    &self,
                    engine: &Engine,
                    component: &Component,
                    plugin: &str,
                ) -> anyhow::Result<Box<dyn Pre<dyn ScheduleInstance>>> {
                    let pre = link(engine, component, plugin, |l| {
                        schedule::SchedulePlugin::add_to_linker::<State, HasSelf<State>>(l, |s| s)
                    })?;
                    Ok(Box::new(schedule::SchedulePluginPre::new(pre)?))
                }
            }

            impl Pre<dyn RewardInstance> for reward::RewardPluginPre<State> {
                fn new_instance(
                    &self,
                    store: &mut Store<State>,
                ) -> wasmtime::Result<Box<dyn RewardInstance>> {
                    Ok(Box::new(self.instantiate(store)?))
                }
            }

            impl Pre<dyn LoaderInstance> for loader::LoaderPluginPre<State> {
                fn new_instance(
                    &self,
                    store: &mut Store<State>,
                ) -> wasmtime::Result<Box<dyn LoaderInstance>> {
                    Ok(Box::new(self.instantiate(store)?))
                }
            }

            impl Pre<dyn ScheduleInstance> for schedule::SchedulePluginPre<State> {
                fn new_instance(
                    &self,
                    store: &mut Store<State>,
                ) -> wasmtime::Result<Box<dyn ScheduleInstance>> {
                    Ok(Box::new(self.instantiate(store)?))
                }
            }
        };
    };
}
pub(crate) use serve_worlds;

/// Serves a world's `log` import: each record goes to the plugin's log sink.
macro_rules! log_import {
    ($world:ident) => {
        impl $world::lmmhost::plugin::log::Host for $crate::sandbox::State {
            fn log(
                &mut self,
                level: $world::lmmhost::plugin::log::Level,
                message: String,
                fields: Vec<(String, String)>,
            ) {
                use $world::lmmhost::plugin::log::Level;
                let level = match level {
                    Level::Trace => "trace",
                    Level::Debug => "debug",
                    Level::Info => "info",
                    Level::Warn => "warn",
                    Level::Error => "error",
                };
                self.emit(level, message, fields);
            }
        }
    };
}
pub(crate) use log_import;

/// Implements `LoaderInstance` for the loader world of bindings module
/// `$b` (`open`, `get-many` and `sample` as in 0.1.0), samples copied out.
macro_rules! loader_world {
    ($b:ident) => {
        const _: () = {
            use lmmhost_sdk as sdk;
            use wasmtime::Store;
            use $b::lmmhost::plugin::types as t;
            use $crate::sandbox::State;

            impl $crate::contract::worlds::LoaderInstance for $b::LoaderPlugin {
                fn open(
                    &self,
                    store: &mut Store<State>,
                    config: &str,
                    files: &[String],
                ) -> wasmtime::Result<Result<sdk::DatasetInfo, String>> {
                    let info = self
                        .lmmhost_plugin_loader()
                        .call_open(store, config, files)?;
                    Ok(info.map(|i| sdk::DatasetInfo {
                        len: i.len,
                        skipped_rows: i.skipped_rows,
                        notes: i.notes,
                    }))
                }

                fn get_many(
                    &self,
                    store: &mut Store<State>,
                    indices: &[u64],
                ) -> wasmtime::Result<Vec<Result<sdk::Sample, String>>> {
                    let list = self.lmmhost_plugin_loader().call_get_many(store, indices)?;
                    Ok(list.into_iter().map(|r| r.map(sample_from)).collect())
                }
            }

            fn sample_from(s: t::Sample) -> sdk::Sample {
                sdk::Sample {
                    id: s.id,
                    messages: s
                        .messages
                        .into_iter()
                        .map(|m| sdk::Message {
                            role: m.role,
                            content: m
                                .content
                                .into_iter()
                                .map(|p| match p {
                                    t::ContentPart::Text(x) => sdk::ContentPart::Text(x),
                                    t::ContentPart::Image(t::ImageSource::Path(x)) => {
                                        sdk::ContentPart::Image(sdk::ImageSource::Path(x))
                                    }
                                    t::ContentPart::Image(t::ImageSource::Bytes(b)) => {
                                        sdk::ContentPart::Image(sdk::ImageSource::Bytes(b))
                                    }
                                })
                                .collect(),
                        })
                        .collect(),
                    answer: s.answer,
                    metadata: s.metadata,
                }
            }
        };
    };
}
pub(crate) use loader_world;

/// Implements `ScheduleInstance` for the schedule world of bindings module
/// `$b` (`train-state`, `plan` and `overrides` as in 0.1.0).
macro_rules! schedule_world {
    ($b:ident) => {
        const _: () = {
            use lmmhost_sdk as sdk;
            use wasmtime::Store;
            use $b::exports::lmmhost::plugin::schedule as s;
            use $crate::sandbox::State;

            impl $crate::contract::worlds::ScheduleInstance for $b::SchedulePlugin {
                fn init(
                    &self,
                    store: &mut Store<State>,
                    config: &str,
                ) -> wasmtime::Result<Result<(), String>> {
                    self.lmmhost_plugin_schedule().call_init(store, config)
                }

                fn next_plan(
                    &self,
                    store: &mut Store<State>,
                    state: &sdk::TrainState,
                ) -> wasmtime::Result<Result<Option<sdk::Plan>, String>> {
                    let state = s::TrainState {
                        global_step: state.global_step,
                        stage: state.stage.clone(),
                        stage_step: state.stage_step,
                        metrics: state.metrics.clone(),
                    };
                    let plan = self
                        .lmmhost_plugin_schedule()
                        .call_next_plan(store, &state)?;
                    Ok(plan.map(|p| p.map(plan_from)))
                }

                fn save_state(&self, store: &mut Store<State>) -> wasmtime::Result<Vec<u8>> {
                    self.lmmhost_plugin_schedule().call_save_state(store)
                }

                fn load_state(
                    &self,
                    store: &mut Store<State>,
                    state: &[u8],
                ) -> wasmtime::Result<Result<(), String>> {
                    self.lmmhost_plugin_schedule().call_load_state(store, state)
                }
            }

            fn plan_from(p: s::Plan) -> sdk::Plan {
                let o = p.overrides;
                sdk::Plan {
                    stage: p.stage,
                    kind: match p.kind {
                        s::StageKind::Sft => sdk::StageKind::Sft,
                        s::StageKind::Grpo => sdk::StageKind::Grpo,
                    },
                    datasets: p.datasets,
                    overrides: sdk::Overrides {
                        learning_rate: o.learning_rate,
                        kl_coef: o.kl_coef,
                        temperature: o.temperature,
                        top_p: o.top_p,
                        group_size: o.group_size,
                        entropy_coef: o.entropy_coef,
                        entropy_warmup_steps: o.entropy_warmup_steps,
                        entropy_decay: o.entropy_decay,
                        freeze_vision: o.freeze_vision,
                        freeze_language: o.freeze_language,
                        dynamic_sampling: o.dynamic_sampling,
                        pad: sdk::PadOverrides {
                            enabled: o.pad.enabled,
                            t_low: o.pad.t_low,
                            t_high: o.pad.t_high,
                            ratio: o.pad.ratio,
                            tau_start: o.pad.tau_start,
                            tau_end: o.pad.tau_end,
                        },
                        extra: o.extra,
                    },
                }
            }
        };
    };
}
pub(crate) use schedule_world;

/// Borrowed views of SDK samples for lowering into a reward world whose
/// types module is `$t` (`sample`, `message`, `content-part` as in 0.1.0):
/// no string is copied, and a call costs four allocations, not several per
/// sample. Built in stages because each level borrows the one below:
/// `view_parts` -> `view_messages` -> `view_samples` (with [`metadata`]);
/// `with_sample_views` builds them all for the samples of some groups.
macro_rules! sample_views {
    ($t:ident) => {
        /// Calls `f` with a view of each group's sample, in order.
        fn with_sample_views<R>(
            groups: &[lmmhost_sdk::Group],
            f: impl FnOnce(Vec<$t::Sample<'_>>) -> R,
        ) -> R {
            let samples: Vec<&lmmhost_sdk::Sample> = groups.iter().map(|g| &g.sample).collect();
            let metadata = $crate::contract::shapes::metadata(&samples);
            let parts = view_parts(&samples);
            let messages = view_messages(&samples, &parts);
            f(view_samples(&samples, &messages, &metadata))
        }

        /// Every content part of every message of `samples`, in order.
        fn view_parts<'a>(samples: &[&'a lmmhost_sdk::Sample]) -> Vec<$t::ContentPart<'a>> {
            use lmmhost_sdk::{ContentPart, ImageSource};
            samples
                .iter()
                .flat_map(|s| &s.messages)
                .flat_map(|m| &m.content)
                .map(|p| match p {
                    ContentPart::Text(x) => $t::ContentPart::Text(x),
                    ContentPart::Image(ImageSource::Path(x)) => {
                        $t::ContentPart::Image($t::ImageSource::Path(x))
                    }
                    ContentPart::Image(ImageSource::Bytes(b)) => {
                        $t::ContentPart::Image($t::ImageSource::Bytes(b))
                    }
                })
                .collect()
        }

        /// Every message of `samples`, each with its slice of `parts`.
        fn view_messages<'a>(
            samples: &[&'a lmmhost_sdk::Sample],
            parts: &'a [$t::ContentPart<'a>],
        ) -> Vec<$t::Message<'a>> {
            let mut at = 0;
            samples
                .iter()
                .flat_map(|s| &s.messages)
                .map(|m| {
                    let content = &parts[at..at + m.content.len()];
                    at += m.content.len();
                    $t::Message {
                        role: &m.role,
                        content,
                    }
                })
                .collect()
        }

        /// One view per sample, each with its slices of `messages` and `metadata`.
        fn view_samples<'a>(
            samples: &[&'a lmmhost_sdk::Sample],
            messages: &'a [$t::Message<'a>],
            metadata: &'a [(&'a str, &'a str)],
        ) -> Vec<$t::Sample<'a>> {
            let (mut mi, mut ki) = (0, 0);
            samples
                .iter()
                .map(|s| {
                    let v = $t::Sample {
                        id: &s.id,
                        messages: &messages[mi..mi + s.messages.len()],
                        answer: s.answer.as_deref(),
                        metadata: &metadata[ki..ki + s.metadata.len()],
                    };
                    mi += s.messages.len();
                    ki += s.metadata.len();
                    v
                })
                .collect()
        }
    };
}
pub(crate) use sample_views;

/// Every metadata pair of `samples`, in order (a plain tuple list in every version).
pub(crate) fn metadata<'a>(samples: &[&'a sdk::Sample]) -> Vec<(&'a str, &'a str)> {
    samples
        .iter()
        .flat_map(|s| &s.metadata)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}
