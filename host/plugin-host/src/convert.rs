//! Conversions between the SDK's plain types and each world's generated
//! types (each world's bindings, in each contract version, have their own
//! copy of the shared types, hence the macros).

use lmmhost_sdk as sdk;

/// Owned conversions of samples, for the loader world of contract `$v`.
macro_rules! sample_conversions {
    ($v:ident, $name:ident) => {
        // Loaders only bring samples out; `sample_to` serves tests.
        #[allow(dead_code)]
        pub mod $name {
            use super::*;
            use crate::$v::loader::lmmhost::plugin::types as t;

            pub fn sample_to(s: &sdk::Sample) -> t::Sample {
                t::Sample {
                    id: s.id.clone(),
                    messages: s
                        .messages
                        .iter()
                        .map(|m| t::Message {
                            role: m.role.clone(),
                            content: m
                                .content
                                .iter()
                                .map(|p| match p {
                                    sdk::ContentPart::Text(x) => t::ContentPart::Text(x.clone()),
                                    sdk::ContentPart::Image(sdk::ImageSource::Path(x)) => {
                                        t::ContentPart::Image(t::ImageSource::Path(x.clone()))
                                    }
                                    sdk::ContentPart::Image(sdk::ImageSource::Bytes(b)) => {
                                        t::ContentPart::Image(t::ImageSource::Bytes(b.clone()))
                                    }
                                })
                                .collect(),
                        })
                        .collect(),
                    answer: s.answer.clone(),
                    metadata: s.metadata.clone(),
                }
            }

            pub fn sample_from(s: t::Sample) -> sdk::Sample {
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
        }
    };
}

sample_conversions!(v0_1_0, loader_v0_1);
sample_conversions!(v0_2_0, loader_v0_2);

/// Borrowed views of SDK samples for lowering into a reward plugin of
/// contract `$v`: the strings are not copied, and a call costs four
/// allocations, not several per sample. Built in stages because each level
/// borrows the one below: `parts` -> `messages` -> `samples` (with `metadata`).
macro_rules! sample_views {
    ($v:ident, $name:ident) => {
        pub mod $name {
            use super::*;
            use crate::$v::reward::lmmhost::plugin::types as t;

            /// Every content part of every message of `samples`, in order.
            pub fn parts<'a>(samples: &[&'a sdk::Sample]) -> Vec<t::ContentPart<'a>> {
                super::view_parts(samples, |p| match p {
                    sdk::ContentPart::Text(x) => t::ContentPart::Text(x),
                    sdk::ContentPart::Image(sdk::ImageSource::Path(x)) => {
                        t::ContentPart::Image(t::ImageSource::Path(x))
                    }
                    sdk::ContentPart::Image(sdk::ImageSource::Bytes(b)) => {
                        t::ContentPart::Image(t::ImageSource::Bytes(b))
                    }
                })
            }

            /// Every message of `samples`, each with its slice of `parts`.
            pub fn messages<'a>(
                samples: &[&'a sdk::Sample],
                parts: &'a [t::ContentPart<'a>],
            ) -> Vec<t::Message<'a>> {
                let mut at = 0;
                samples
                    .iter()
                    .flat_map(|s| &s.messages)
                    .map(|m| {
                        let content = &parts[at..at + m.content.len()];
                        at += m.content.len();
                        t::Message {
                            role: &m.role,
                            content,
                        }
                    })
                    .collect()
            }

            /// One view per sample, each with its slices of `messages` and `metadata`.
            pub fn samples<'a>(
                samples: &[&'a sdk::Sample],
                messages: &'a [t::Message<'a>],
                metadata: &'a [(&'a str, &'a str)],
            ) -> Vec<t::Sample<'a>> {
                let (mut mi, mut ki) = (0, 0);
                samples
                    .iter()
                    .map(|s| {
                        let v = t::Sample {
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
        }
    };
}

sample_views!(v0_1_0, reward_v0_1);
sample_views!(v0_2_0, reward_v0_2);

fn view_parts<'a, P>(samples: &[&'a sdk::Sample], f: impl Fn(&'a sdk::ContentPart) -> P) -> Vec<P> {
    samples
        .iter()
        .flat_map(|s| &s.messages)
        .flat_map(|m| &m.content)
        .map(f)
        .collect()
}

/// Every metadata pair of `samples`, in order (the same for every version).
pub fn metadata<'a>(samples: &[&'a sdk::Sample]) -> Vec<(&'a str, &'a str)> {
    samples
        .iter()
        .flat_map(|s| &s.metadata)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

pub fn score_from_v0_1(s: crate::v0_1_0::reward::lmmhost::plugin::types::Score) -> sdk::Score {
    sdk::Score {
        total: s.total,
        components: s.components,
    }
}

/// The SDK's score table from 0.2.0's `scores` (moves every column; the
/// caller validates it against the number of items sent).
pub fn scores_from_v0_2(
    s: crate::v0_2_0::reward::exports::lmmhost::plugin::reward::Scores,
) -> sdk::ScoreTable {
    sdk::ScoreTable {
        names: s.names,
        totals: s.totals,
        components: s
            .components
            .into_iter()
            .map(|c| sdk::ComponentValue {
                name: c.name,
                value: c.value,
            })
            .collect(),
        component_ends: s.component_ends,
        failures: s.failures,
    }
}

/// Loader and schedule values, the same shapes in every contract version.
macro_rules! world_conversions {
    ($v:ident, $name:ident) => {
        pub mod $name {
            use super::*;

            pub fn info_from(
                i: crate::$v::loader::exports::lmmhost::plugin::loader::DatasetInfo,
            ) -> sdk::DatasetInfo {
                sdk::DatasetInfo {
                    len: i.len,
                    skipped_rows: i.skipped_rows,
                    notes: i.notes,
                }
            }

            pub fn state_to(
                s: &sdk::TrainState,
            ) -> crate::$v::schedule::exports::lmmhost::plugin::schedule::TrainState {
                crate::$v::schedule::exports::lmmhost::plugin::schedule::TrainState {
                    global_step: s.global_step,
                    stage: s.stage.clone(),
                    stage_step: s.stage_step,
                    metrics: s.metrics.clone(),
                }
            }

            pub fn plan_from(
                p: crate::$v::schedule::exports::lmmhost::plugin::schedule::Plan,
            ) -> sdk::Plan {
                use crate::$v::schedule::exports::lmmhost::plugin::schedule::StageKind;
                let o = p.overrides;
                sdk::Plan {
                    stage: p.stage,
                    kind: match p.kind {
                        StageKind::Sft => sdk::StageKind::Sft,
                        StageKind::Grpo => sdk::StageKind::Grpo,
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
        }
    };
}

world_conversions!(v0_1_0, worlds_v0_1);
world_conversions!(v0_2_0, worlds_v0_2);
