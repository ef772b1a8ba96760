//! Collect: rounds of generation until the step has its groups. A round
//! draws prompts, generates `group_size` completions of each, scores them
//! with the reward plugins (on the tokio runtime, while the old-policy and
//! reference log-probs are computed) and keeps the groups that dynamic
//! sampling lets through (all of them when it is off). Scoring happens here,
//! not after, because dynamic sampling needs the scores of each round.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use lmmhost_model::lm::CausalLm;
use lmmhost_model::sampling::{SamplingParams, SeededRng};
use lmmhost_sdk as sdk;
use tch::Device;

use super::logprobs::{rows_logprobs, LogprobPass};
use super::plan::StepPlan;
use crate::rl::dynamic_sampling::{informative_groups, DynamicSampling};
use crate::train::data::{derive_seed, prompt_conversation, sample_name};
use crate::train::experiment::StageSettings;
use crate::train::failures::{reward_failures, Failure};
use crate::train::plugins::{group_datasets, reward_groups, score_all, CombinedScore};
use crate::train::policy::Policy;
use crate::train::rollout::{prepare_prompts, roll_out, RolloutConfig, Row};
use crate::train::trainer::{LongInput, Trainer};

/// The rows the step trains on, whole groups in order, and what was
/// computed for each.
#[derive(Default)]
pub struct Batch {
    pub rows: Vec<Row>,
    pub scores: Vec<CombinedScore>,
    /// Per row when the plan needs them, else empty.
    pub old_logprobs: Vec<Vec<f32>>,
    pub ref_logprobs: Vec<Vec<f32>>,
    /// This rank's groups.
    pub groups: usize,
    /// Each of this rank's groups' place in the step's batch over all ranks
    /// (ascending): the order one process would hold them in.
    pub places: Vec<usize>,
    /// The groups of the step's batch over all ranks.
    pub total_groups: usize,
}

/// Everything generated in the step, kept or not: what the reward and
/// length metrics describe.
#[derive(Default)]
pub struct Generated {
    pub rows: usize,
    pub totals: Vec<f64>,
    /// Response tokens of each completion.
    pub lengths: Vec<f64>,
    /// Component name -> (sum, count).
    pub components: BTreeMap<String, (f64, usize)>,
    pub failures: usize,
    pub skipped_long_prompts: usize,
    /// Samples left out as bad under the loader's `on_error = "zero"`.
    pub dropped_samples: usize,
    pub rounds: u32,
}

/// Seconds spent generating, scoring and in the log-prob passes.
#[derive(Default)]
pub struct CollectTimes {
    pub rollout: f64,
    pub reward: f64,
    pub logprobs: f64,
}

#[derive(Default)]
pub struct Collected {
    pub batch: Batch,
    pub generated: Generated,
    pub time: CollectTimes,
}

/// One round's completions, grouped by prompt, with what they answer.
struct Round {
    rows: Vec<Row>,
    samples: Vec<sdk::Sample>,
    /// Indices into `samples` of the prompts that were generated for.
    kept: Vec<usize>,
    /// The dataset of each sample.
    datasets: Vec<String>,
    /// Each sample's place in the round's draw.
    places: Vec<usize>,
}

/// One round's completions scored, with their log-probs.
struct ScoredRound {
    rows: Vec<Row>,
    scores: Vec<CombinedScore>,
    /// Items a reward plugin failed on (scored 0 under `on_error = "zero"`).
    failures: Vec<Failure>,
    old_logprobs: Vec<Vec<f32>>,
    ref_logprobs: Vec<Vec<f32>>,
    /// Each group's place in the round's draw.
    places: Vec<usize>,
}

pub(crate) fn collect(
    t: &mut Trainer,
    plan: &sdk::Plan,
    s: &StageSettings,
    p: &StepPlan,
) -> Result<Collected> {
    let mut out = Collected::default();
    t.dropped_samples = 0;
    // Every rank runs the same rounds: the groups kept are counted over all
    // ranks, so a group filtered on one rank does not stall the others.
    while out.generated.rounds < p.max_rounds && out.batch.total_groups < p.prompts {
        let round = match generate(t, plan, s, p, &mut out)? {
            Some(round) => {
                let scored = score(t, round, s, p, &mut out.time)?;
                t.failures.report(&t.bar, &scored.failures)?;
                out.generated.add(&scored);
                Some(scored)
            }
            // Every prompt of this rank's share was left out.
            None => None,
        };
        let keep = match &round {
            Some(r) => keep_groups(r, &s.grpo.dynamic_sampling, p)?,
            None => Vec::new(),
        };
        let places = round.as_ref().map_or(&[][..], |r| &r.places[..]);
        let taken = take_groups(t, p, places, &keep, out.batch.total_groups)?;
        if let Some(round) = round {
            out.batch.append(round, &taken.mine, p);
        }
        out.batch.total_groups += taken.count;
    }
    out.generated.dropped_samples = t.dropped_samples;
    if out.batch.total_groups == 0 {
        bail!(
            "step {}: {}",
            t.state.global_step + 1,
            why_empty(t, s, &out)?
        );
    }
    Ok(out)
}

/// The groups of a round the batch takes.
struct Taken {
    /// Per group of this rank's round: its place in the step's batch, if taken.
    mine: Vec<Option<usize>>,
    /// Groups taken over all ranks.
    count: usize,
}

/// The groups of a round the step's batch takes, as one process would take
/// them: of the groups kept over all ranks (`keep` of this rank's groups at
/// `places` in the round's draw, summed), the first in draw order, up to the
/// batch's size; `before` groups were taken in earlier rounds.
fn take_groups(
    t: &Trainer,
    p: &StepPlan,
    places: &[usize],
    keep: &[bool],
    before: usize,
) -> Result<Taken> {
    let mut kept = vec![0.0; p.prompts];
    for (&place, &k) in places.iter().zip(keep) {
        if k {
            kept[place] = 1.0;
        }
    }
    let kept = t.dp.sum(&kept)?;
    let mut batch_place = vec![None; p.prompts];
    let mut count = 0;
    for (slot, k) in batch_place.iter_mut().zip(&kept) {
        if *k > 0.5 && before + count < p.prompts {
            *slot = Some(before + count);
            count += 1;
        }
    }
    let mine = places
        .iter()
        .zip(keep)
        .map(|(&place, &k)| if k { batch_place[place] } else { None })
        .collect();
    Ok(Taken { mine, count })
}

/// Why a step found no group to train on over all ranks, and what to do
/// about it (the counts are summed over ranks, which all call this).
fn why_empty(t: &Trainer, s: &StageSettings, out: &Collected) -> Result<String> {
    let g = &out.generated;
    let sums = t.dp.sum(&[
        g.rows as f64,
        g.skipped_long_prompts as f64,
        t.dropped_samples as f64,
    ])?;
    let (rows, skipped_long, dropped) = (sums[0] as usize, sums[1] as usize, sums[2] as usize);
    let where_logged = if t.dp.world_size() > 1 {
        format!(
            "{} and failures.rankR.jsonl beside it",
            t.failures.path().with_file_name("failures.jsonl").display()
        )
    } else {
        t.failures.path().display().to_string()
    };
    if rows > 0 {
        let groups = rows / s.rollout.group_size.max(1) as usize;
        return Ok(s.grpo.dynamic_sampling.all_uniform(groups, g.rounds));
    }
    if dropped > 0 && skipped_long == 0 {
        return Ok(format!(
            "every sample drawn was left out as bad ({dropped} under on_error = \"zero\"; see {where_logged})"
        ));
    }
    Ok(format!(
        "no usable group after {} round(s) of sampling: {skipped_long} prompts were over rollout.max_prompt_tokens = {}{}",
        g.rounds,
        s.rollout.max_prompt_tokens,
        if dropped > 0 {
            format!(" and {dropped} samples were left out as bad (see {where_logged})")
        } else {
            String::new()
        }
    ))
}

fn rollout_config(s: &StageSettings) -> RolloutConfig {
    RolloutConfig {
        samples_per_prompt: s.rollout.group_size as usize,
        sampling: SamplingParams {
            greedy: false,
            temperature: s.rollout.temperature,
            top_k: (s.rollout.top_k > 0).then_some(i64::from(s.rollout.top_k)),
            top_p: (s.rollout.top_p < 1.0).then_some(s.rollout.top_p),
        },
        max_new_tokens: s.rollout.max_response_tokens,
        min_new_tokens: s.rollout.min_new_tokens,
        blocked_token_ids: Vec::new(),
        kv_cache_tokens: s.rollout.kv_cache_budget,
    }
}

/// Draws the round's prompts and generates their completions; `None` when
/// every prompt was over `rollout.max_prompt_tokens`.
fn generate(
    t: &mut Trainer,
    plan: &sdk::Plan,
    s: &StageSettings,
    p: &StepPlan,
    out: &mut Collected,
) -> Result<Option<Round>> {
    let t0 = Instant::now();
    // Each rank loads and generates for its share of the round's prompts.
    let drawn = t.draw(plan, p.prompts, out.generated.rounds)?;
    let (samples, datasets, places) = (drawn.samples, drawn.datasets, drawn.places);
    let convs = samples
        .iter()
        .map(prompt_conversation)
        .collect::<Result<Vec<_>>>()?;
    let limit = s.rollout.max_prompt_tokens;
    let names: Vec<String> = samples.iter().map(sample_name).collect();
    let prepared = prepare_prompts(&t.policy.processor, &convs, &names, limit)?;
    for &(i, tokens) in &prepared.too_long {
        let long = LongInput {
            what: "prompt",
            sample_id: &samples[i].id,
            dataset: &datasets[i],
            tokens,
            key: "rollout.max_prompt_tokens",
            limit,
        };
        t.over_limit(&long, s.rollout.long_prompts)?;
    }
    out.generated.skipped_long_prompts += prepared.too_long.len();
    out.generated.rounds += 1;
    let kept = prepared.kept;
    let Some(batch) = prepared.batch else {
        return Ok(None);
    };
    let stream = t.state.global_step * 1000 + u64::from(out.generated.rounds);
    let mut rng = SeededRng::new(derive_seed(t.exp.seed, "rollout", stream));
    // A group's random streams are keyed by its prompt's place in the step's
    // draw: the same completions whichever rank generates them.
    let keys: Vec<u64> = kept.iter().map(|&i| places[i] as u64).collect();
    let rows = roll_out(
        &t.policy,
        &batch,
        &rollout_config(s),
        &mut rng,
        0,
        Some(&keys),
    )?;
    out.time.rollout += t0.elapsed().as_secs_f64();
    Ok(Some(Round {
        rows,
        samples,
        kept,
        datasets,
        places,
    }))
}

/// Scores a round on the tokio runtime while the log-prob passes the plan
/// needs run here.
fn score(
    t: &Trainer,
    round: Round,
    s: &StageSettings,
    p: &StepPlan,
    time: &mut CollectTimes,
) -> Result<ScoredRound> {
    let to_score = reward_groups(&round.rows, &round.samples, &round.kept);
    let datasets = group_datasets(&round.rows, &round.kept, &round.datasets);
    let rewards = Arc::clone(&t.plugins.rewards);
    let scoring = t.runtime.spawn_blocking(move || {
        let t = Instant::now();
        score_all(&rewards, &to_score, &datasets).map(|s| (s, t.elapsed().as_secs_f64()))
    });
    let t1 = Instant::now();
    let ref_logprobs = if p.need_ref {
        t.with_reference(|r| logprobs_under(r, &t.policy, &round.rows, s, p))?
    } else {
        Vec::new()
    };
    let old = p.need_old.then(|| (t.policy.lm(), t.policy.device));
    let old_logprobs = logprobs_under(old, &t.policy, &round.rows, s, p)?;
    time.logprobs += t1.elapsed().as_secs_f64();
    let (scores, secs) = t
        .runtime
        .block_on(scoring)
        .context("the reward task panicked")??;
    time.reward += secs;
    let failures = reward_failures(t.state.global_step + 1, &scores, |i| {
        round.samples[round.kept[round.rows[i].group]].id.clone()
    });
    Ok(ScoredRound {
        failures,
        places: round.kept.iter().map(|&i| round.places[i]).collect(),
        rows: round.rows,
        scores,
        old_logprobs,
        ref_logprobs,
    })
}

/// Each row's response log-probs under `lm` (on its device) at the plan's
/// temperature, in chunks of the micro-batch size or of
/// `grpo.logprob_chunk_tokens`; empty without a model.
fn logprobs_under(
    lm: Option<(&dyn CausalLm, Device)>,
    policy: &Policy,
    rows: &[Row],
    s: &StageSettings,
    p: &StepPlan,
) -> Result<Vec<Vec<f32>>> {
    let Some((lm, device)) = lm else {
        return Ok(Vec::new());
    };
    let pass = LogprobPass {
        device,
        chunk_tokens: s.grpo.logprob_chunk_tokens,
        ..LogprobPass::of(policy, s.optim.micro_batch_size, p.temperature)
    };
    rows_logprobs(lm, rows, &pass)
}

/// Which of the round's groups to keep: those whose scores differ under
/// dynamic sampling, else all. A metric no reward reports is an error.
fn keep_groups(round: &ScoredRound, ds: &DynamicSampling, p: &StepPlan) -> Result<Vec<bool>> {
    if !p.dynamic_sampling {
        return Ok(vec![true; round.rows.len() / p.group_size]);
    }
    ds.check_metric_reported(round.scores.iter().map(|c| &c.components))
        .map_err(anyhow::Error::msg)?;
    let metric: Vec<f64> = round
        .scores
        .iter()
        .map(|c| ds.metric_of(c.total, &c.components))
        .collect();
    Ok(informative_groups(&metric, p.group_size))
}

impl Generated {
    /// Counts a round's completions, kept or not.
    fn add(&mut self, round: &ScoredRound) {
        self.rows += round.rows.len();
        for (r, sc) in round.rows.iter().zip(&round.scores) {
            self.totals.push(sc.total);
            self.lengths.push(r.response.len() as f64);
            self.failures += sc.failures.len();
            for (k, v) in &sc.components {
                let e = self.components.entry(k.clone()).or_default();
                e.0 += v;
                e.1 += 1;
            }
        }
    }
}

impl Batch {
    /// Appends the groups of a round the batch takes (`taken`: each one's
    /// place in the batch), renumbering their `group` in this rank's order.
    fn append(&mut self, round: ScoredRound, taken: &[Option<usize>], p: &StepPlan) {
        let n = p.group_size;
        let mut rows = round.rows.into_iter();
        let mut scores = round.scores.into_iter();
        for (gi, taken) in taken.iter().enumerate() {
            let group_rows: Vec<Row> = rows.by_ref().take(n).collect();
            let group_scores: Vec<CombinedScore> = scores.by_ref().take(n).collect();
            let Some(place) = *taken else { continue };
            self.places.push(place);
            for (j, (mut row, sc)) in group_rows.into_iter().zip(group_scores).enumerate() {
                let i = gi * n + j;
                row.group = self.groups;
                if let Some(v) = round.ref_logprobs.get(i) {
                    self.ref_logprobs.push(v.clone());
                }
                if let Some(v) = round.old_logprobs.get(i) {
                    self.old_logprobs.push(v.clone());
                }
                self.rows.push(row);
                self.scores.push(sc);
            }
            self.groups += 1;
        }
    }
}
