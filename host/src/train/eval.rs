//! Evaluation: the first `limit` samples of a dataset, one or more completions
//! each (greedy or sampled), scored by the reward plugins; accuracy, pass@k and
//! every answer kept for inspection. With several ranks each evaluates its
//! share of the samples and the ranks' answers are gathered, so every rank
//! ends with the result one process would compute.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use lmmhost_model::sampling::{SamplingParams, SeededRng};
use lmmhost_plugin_host::LoaderPlugin;
use serde::{Deserialize, Serialize};

use super::data::{check_sample, derive_seed, prompt_conversation, sample_name};
use super::data_parallel::DataParallel;
use super::experiment::SpecialTokens;
use super::plugins::{reward_groups, score_all, CombinedScore, Reward};
use super::policy::Policy;
use super::rollout::{prepare_prompts, roll_out, RolloutConfig};
use crate::rl::passk::mean_pass_at_k;

#[derive(Debug, Clone)]
pub struct EvalSettings {
    pub samples: usize,
    pub greedy: bool,
    pub temperature: f64,
    pub max_response_tokens: usize,
    pub max_prompt_tokens: usize,
    pub limit: Option<usize>,
    pub pass_k: Vec<usize>,
    /// Prompts generated together.
    pub batch_prompts: usize,
    pub seed: u64,
    /// What a sample whose text holds a special token does.
    pub special_tokens: SpecialTokens,
    /// The setting that tokenises them instead (named when one is refused).
    pub allow_special_tokens_with: String,
}

/// One evaluated completion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRecord {
    pub dataset: String,
    pub index: u64,
    pub id: String,
    pub answer: Option<String>,
    pub sample: usize,
    pub response: String,
    pub response_tokens: usize,
    pub total: f64,
    pub components: BTreeMap<String, f64>,
    pub correct: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalResult {
    pub dataset: String,
    pub prompts: usize,
    /// Prompts skipped for exceeding the prompt-token limit.
    pub skipped: usize,
    /// Mean correctness over all completions.
    pub accuracy: f64,
    pub pass_at_k: Vec<(usize, f64)>,
    pub reward_mean: f64,
    pub components: BTreeMap<String, f64>,
    pub response_tokens_mean: f64,
    #[serde(skip)]
    pub records: Vec<EvalRecord>,
    /// Prompts each rank evaluated (one entry for a single process).
    #[serde(skip)]
    pub per_rank: Vec<usize>,
}

/// A completion is correct when its `accuracy` component is at least 0.5
/// (reward plugins report 1 or 0); without such a component, when the total
/// reward is positive.
pub fn is_correct(s: &CombinedScore) -> bool {
    match s.components.get("accuracy") {
        Some(a) => *a >= 0.5,
        None => s.total > 0.0,
    }
}

/// What one rank evaluated: its answers, each prompt's (completions,
/// correct ones) and the prompts over the token limit.
#[derive(Default, Serialize, Deserialize)]
struct Share {
    records: Vec<EvalRecord>,
    counts: Vec<(usize, usize)>,
    skipped: usize,
}

/// Evaluates `dataset`, this rank's share of it (`dp`: a world of one for a
/// single process); every rank returns the whole dataset's result.
pub fn evaluate(
    dp: &DataParallel,
    policy: &Policy,
    dataset: &str,
    loader: &LoaderPlugin,
    rewards: &[Reward],
    set: &EvalSettings,
) -> Result<EvalResult> {
    let n = set
        .limit
        .map_or(loader.len(), |l| (l as u64).min(loader.len()));
    let mine = dp.share(n as usize);
    let indices: Vec<u64> = (mine.start as u64..mine.end as u64).collect();
    let share = evaluate_share(policy, dataset, loader, rewards, set, &indices)?;
    // The ranks' shares in rank order: the single process's order.
    let mut all = Share::default();
    let mut per_rank = Vec::new();
    for part in dp.gather(&format!("eval/{dataset}"), share)? {
        per_rank.push(part.counts.len());
        all.records.extend(part.records);
        all.counts.extend(part.counts);
        all.skipped += part.skipped;
    }
    let Share {
        records,
        counts,
        skipped,
    } = all;
    let m = records.len().max(1) as f64;
    let mut components: BTreeMap<String, f64> = BTreeMap::new();
    for r in &records {
        for (k, v) in &r.components {
            *components.entry(k.clone()).or_default() += v / m;
        }
    }
    Ok(EvalResult {
        dataset: dataset.to_string(),
        prompts: counts.len(),
        skipped,
        accuracy: records.iter().filter(|r| r.correct).count() as f64 / m,
        pass_at_k: set
            .pass_k
            .iter()
            .map(|&k| (k, mean_pass_at_k(&counts, k)))
            .collect(),
        reward_mean: records.iter().map(|r| r.total).sum::<f64>() / m,
        response_tokens_mean: records
            .iter()
            .map(|r| r.response_tokens as f64)
            .sum::<f64>()
            / m,
        components,
        records,
        per_rank,
    })
}

/// Generates and scores the samples at `indices`. A prompt's completions
/// are keyed by its index in the dataset, so they do not depend on which
/// rank or which other prompts generate with it.
fn evaluate_share(
    policy: &Policy,
    dataset: &str,
    loader: &LoaderPlugin,
    rewards: &[Reward],
    set: &EvalSettings,
    indices: &[u64],
) -> Result<Share> {
    let sampling = if set.greedy {
        SamplingParams::greedy()
    } else {
        SamplingParams {
            temperature: set.temperature,
            ..SamplingParams::default()
        }
    };
    let cfg = RolloutConfig {
        samples_per_prompt: set.samples,
        sampling,
        max_new_tokens: set.max_response_tokens,
        min_new_tokens: 0,
        blocked_token_ids: Vec::new(),
        kv_cache_tokens: None,
    };
    let mut out = Share::default();
    for chunk in indices.chunks(set.batch_prompts.max(1)) {
        let samples = loader
            .get_many(chunk)
            .with_context(|| format!("eval dataset {dataset}"))?;
        for s in &samples {
            check_sample(
                s,
                dataset,
                &policy.processor,
                set.special_tokens,
                &set.allow_special_tokens_with,
            )?;
        }
        let convs = samples
            .iter()
            .map(prompt_conversation)
            .collect::<Result<Vec<_>>>()?;
        let names: Vec<String> = samples.iter().map(sample_name).collect();
        let prepared = prepare_prompts(&policy.processor, &convs, &names, set.max_prompt_tokens)
            .with_context(|| format!("eval dataset {dataset}"))?;
        let kept = prepared.kept;
        out.skipped += convs.len() - kept.len();
        let Some(batch) = prepared.batch else {
            continue;
        };
        let mut rng = SeededRng::new(derive_seed(set.seed, "eval", 0));
        let keys: Vec<u64> = kept.iter().map(|&k| chunk[k]).collect();
        let rows = roll_out(policy, &batch, &cfg, &mut rng, 0, Some(&keys))?;
        let groups = reward_groups(&rows, &samples, &kept);
        let datasets = vec![dataset.to_string(); groups.len()];
        let scores = score_all(rewards, &groups, &datasets)?;
        for (g, &k) in kept.iter().enumerate() {
            let mut correct = 0;
            for (j, (row, score)) in rows
                .iter()
                .zip(&scores)
                .filter(|(r, _)| r.group == g)
                .enumerate()
            {
                let ok = is_correct(score);
                correct += usize::from(ok);
                out.records.push(EvalRecord {
                    dataset: dataset.to_string(),
                    index: chunk[k],
                    id: samples[k].id.clone(),
                    answer: samples[k].answer.clone(),
                    sample: j,
                    response: row.text.clone(),
                    response_tokens: row.response.len(),
                    total: score.total,
                    components: score.components.clone(),
                    correct: ok,
                });
            }
            out.counts.push((set.samples, correct));
        }
    }
    Ok(out)
}

/// Appends the records as JSON lines to `path`.
pub fn write_records(path: &Path, records: &[EvalRecord]) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    for r in records {
        serde_json::to_writer(&mut f, r)?;
        writeln!(f)?;
    }
    Ok(())
}

/// A fixed-width table of results, one row per dataset.
pub fn table(results: &[(String, EvalResult)]) -> String {
    let mut ks: Vec<usize> = results
        .iter()
        .flat_map(|(_, r)| r.pass_at_k.iter().map(|p| p.0))
        .collect();
    ks.sort();
    ks.dedup();
    // Columns as wide as their longest entry, so long stage names stay aligned.
    let w_when = results
        .iter()
        .map(|(w, _)| w.chars().count())
        .fold(24, usize::max);
    let w_ds = results
        .iter()
        .map(|(_, r)| r.dataset.chars().count())
        .fold(16, usize::max);
    let mut out = format!(
        "{:<w_when$} {:<w_ds$} {:>7} {:>9}",
        "when", "dataset", "prompts", "accuracy"
    );
    for k in &ks {
        out.push_str(&format!(" {:>8}", format!("pass@{k}")));
    }
    out.push_str(&format!(" {:>8} {:>8}\n", "reward", "length"));
    for (when, r) in results {
        out.push_str(&format!(
            "{:<w_when$} {:<w_ds$} {:>7} {:>9.3}",
            when, r.dataset, r.prompts, r.accuracy
        ));
        for k in &ks {
            match r.pass_at_k.iter().find(|p| p.0 == *k) {
                Some((_, v)) => out.push_str(&format!(" {v:>8.3}")),
                None => out.push_str(&format!(" {:>8}", "-")),
            }
        }
        out.push_str(&format!(
            " {:>8.3} {:>8.1}\n",
            r.reward_mean, r.response_tokens_mean
        ));
    }
    out
}
