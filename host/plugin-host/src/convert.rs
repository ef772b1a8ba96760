//! Conversions between the SDK's plain types and each world's generated
//! types (each world's bindings have their own copy of the shared types).

use lmmhost_sdk as sdk;

use crate::v0_1_0::{loader as lw, reward as rw, schedule as sw};

macro_rules! sample_conversions {
    ($w:ident) => {
        // Rewards only send samples in, loaders only bring them out.
        #[allow(dead_code)]
        pub mod $w {
            use super::*;
            use crate::v0_1_0::$w::lmmhost::plugin::types as t;

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

sample_conversions!(loader);

/// Borrowed views of SDK completions for lowering into a reward plugin: the
/// strings are not copied, and a chunk costs four allocations, not several
/// per completion. Built in stages because each level borrows the one below:
/// `parts` -> `messages` -> `completions` (with `metadata`).
pub mod reward_in {
    use super::*;
    use crate::v0_1_0::reward::lmmhost::plugin::types as t;

    /// Every content part of every message of `batch`, in order.
    pub fn parts(batch: &[sdk::Completion]) -> Vec<t::ContentPart<'_>> {
        batch
            .iter()
            .flat_map(|c| &c.sample.messages)
            .flat_map(|m| &m.content)
            .map(|p| match p {
                sdk::ContentPart::Text(x) => t::ContentPart::Text(x),
                sdk::ContentPart::Image(sdk::ImageSource::Path(x)) => {
                    t::ContentPart::Image(t::ImageSource::Path(x))
                }
                sdk::ContentPart::Image(sdk::ImageSource::Bytes(b)) => {
                    t::ContentPart::Image(t::ImageSource::Bytes(b))
                }
            })
            .collect()
    }

    /// Every message of `batch`, each with its slice of `parts`.
    pub fn messages<'a>(
        batch: &'a [sdk::Completion],
        parts: &'a [t::ContentPart<'a>],
    ) -> Vec<t::Message<'a>> {
        let mut at = 0;
        batch
            .iter()
            .flat_map(|c| &c.sample.messages)
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

    /// Every metadata pair of `batch`, in order.
    pub fn metadata(batch: &[sdk::Completion]) -> Vec<(&str, &str)> {
        batch
            .iter()
            .flat_map(|c| &c.sample.metadata)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    pub fn completions<'a>(
        batch: &'a [sdk::Completion],
        messages: &'a [t::Message<'a>],
        metadata: &'a [(&'a str, &'a str)],
    ) -> Vec<t::Completion<'a>> {
        let (mut mi, mut ki) = (0, 0);
        batch
            .iter()
            .map(|c| {
                let s = &c.sample;
                let sample = t::Sample {
                    id: &s.id,
                    messages: &messages[mi..mi + s.messages.len()],
                    answer: s.answer.as_deref(),
                    metadata: &metadata[ki..ki + s.metadata.len()],
                };
                mi += s.messages.len();
                ki += s.metadata.len();
                t::Completion {
                    sample,
                    response: &c.response,
                    response_tokens: c.response_tokens,
                }
            })
            .collect()
    }
}

pub fn score_from(s: rw::lmmhost::plugin::types::Score) -> sdk::Score {
    sdk::Score {
        total: s.total,
        components: s.components,
    }
}

pub fn info_from(i: lw::exports::lmmhost::plugin::loader::DatasetInfo) -> sdk::DatasetInfo {
    sdk::DatasetInfo {
        len: i.len,
        skipped_rows: i.skipped_rows,
        notes: i.notes,
    }
}

pub fn state_to(s: &sdk::TrainState) -> sw::exports::lmmhost::plugin::schedule::TrainState {
    sw::exports::lmmhost::plugin::schedule::TrainState {
        global_step: s.global_step,
        stage: s.stage.clone(),
        stage_step: s.stage_step,
        metrics: s.metrics.clone(),
    }
}

pub fn plan_from(p: sw::exports::lmmhost::plugin::schedule::Plan) -> sdk::Plan {
    use sw::exports::lmmhost::plugin::schedule::StageKind;
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
