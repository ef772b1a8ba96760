//! The rollout engine: continuous batching under a KV budget.
//!
//! Rows (sample j of prompt i) are admitted in prompt-major order into row
//! slots; a prompt is prefilled into a prompt slot when its first row is
//! admitted and stays until its last row finishes. Each iteration admits
//! rows into free slots (prefilling their prompts together), samples one
//! token for every running row, retires the rows that stopped (their slots
//! go to waiting rows at the next iteration), and runs one decode step over
//! the live slots. Once no row waits and half the live slots are empty, the
//! running rows move to the front so that the tail decodes a smaller batch.
//!
//! Every row draws its uniforms from its own stream, keyed by the
//! generation's seed, its prompt's key and its sample index, so a row's
//! tokens do not depend on which rows run beside it, on the budget or on
//! the worker count. The host waits for the device once per iteration, to
//! read the sampled tokens.

use std::collections::{HashMap, VecDeque};

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::capacity::SlotPlan;
use super::config::{EngineStats, GenerateConfig};
use super::kv_pools::{KvPools, StepIndex};
use super::prompts::PromptSet;
use crate::lm::CausalLm;
use crate::sampling::{check_ids_in_vocab, choose_rows, id_tensor, SeededRng, Uniforms};

/// Prompt tokens per prefill forward at most (more prompts wait for the next).
const PREFILL_TOKENS: usize = 32_768;

/// What one engine needs besides the model and its prompts.
pub struct EngineSettings<'a> {
    pub cfg: &'a GenerateConfig,
    pub stop_ids: &'a [i64],
    pub device: Device,
    /// Seed of every row's stream.
    pub seed: u64,
    /// This engine's share of the budget, in tokens.
    pub kv_cache_tokens: Option<usize>,
}

/// A finished row.
pub struct RowOutput {
    /// Index of its prompt in the [`PromptSet`].
    pub prompt: usize,
    pub sample: usize,
    pub tokens: Vec<i64>,
    pub logprobs: Vec<f32>,
}

/// A running row.
struct Row {
    /// Its prompt's index in the engine's prompts, and its slot.
    prompt: usize,
    prompt_slot: usize,
    sample: usize,
    stream: SeededRng,
    tokens: Vec<i64>,
    logprobs: Vec<f32>,
}

/// A resident prompt.
struct PromptSlot {
    prompt: usize,
    /// Rotary position of its first generated token.
    next_position: i64,
    /// Its rows not finished yet (running or waiting).
    unfinished: usize,
}

/// The uniforms of one sampling call: each live slot's row's own stream, a
/// constant for an empty slot (its token is never used).
struct SlotUniforms<'a> {
    slots: &'a mut [Option<Row>],
    next: usize,
}

impl Uniforms for SlotUniforms<'_> {
    fn next_f64(&mut self) -> f64 {
        let i = self.next;
        self.next += 1;
        match self.slots.get_mut(i) {
            Some(Some(row)) => row.stream.next_f64(),
            _ => 0.5,
        }
    }
}

/// Generates every sample of prompts `mine` (indices into `prompts`).
pub fn run_engine(
    model: &dyn CausalLm,
    prompts: &PromptSet,
    mine: &[usize],
    s: &EngineSettings,
) -> Result<(Vec<RowOutput>, EngineStats)> {
    tch::no_grad(|| Engine::new(prompts, mine, s).and_then(|e| e.run(model)))
}

struct Engine<'a> {
    prompts: &'a PromptSet<'a>,
    mine: &'a [usize],
    s: &'a EngineSettings<'a>,
    plan: SlotPlan,
    slots: Vec<Option<Row>>,
    prompt_slots: Vec<Option<PromptSlot>>,
    /// Engine prompt index -> its prompt slot while resident.
    resident: HashMap<usize, usize>,
    /// Prompts with rows not admitted yet, and the next sample of the first.
    waiting: VecDeque<usize>,
    next_sample: usize,
    /// Live slots: every slot until the tail compacts them.
    live_rows: usize,
    live_prompts: usize,
    pools: Option<KvPools>,
    /// `[live_rows, V]`: the next-token logits of each slot's row.
    logits: Option<Tensor>,
    /// `[prompt_slots, V]`: each resident prompt's last logits.
    prompt_logits: Option<Tensor>,
    done: Vec<RowOutput>,
    stats: EngineStats,
}

impl<'a> Engine<'a> {
    fn new(
        prompts: &'a PromptSet<'a>,
        mine: &'a [usize],
        s: &'a EngineSettings<'a>,
    ) -> Result<Self> {
        let longest = mine.iter().map(|&i| prompts.lens[i]).max().unwrap_or(1);
        let plan = SlotPlan::new(
            mine.len(),
            s.cfg.samples_per_prompt,
            longest.max(1),
            s.cfg.max_new_tokens,
            s.kv_cache_tokens,
        )?;
        Ok(Engine {
            prompts,
            mine,
            s,
            plan,
            slots: (0..plan.row_slots).map(|_| None).collect(),
            prompt_slots: (0..plan.prompt_slots).map(|_| None).collect(),
            resident: HashMap::new(),
            waiting: (0..mine.len()).collect(),
            next_sample: 0,
            live_rows: plan.row_slots,
            live_prompts: plan.prompt_slots,
            pools: None,
            logits: None,
            prompt_logits: None,
            done: Vec::new(),
            stats: EngineStats {
                kv_tokens: plan.kv_tokens(),
                row_slots: plan.row_slots,
                prompt_slots: plan.prompt_slots,
                ..Default::default()
            },
        })
    }

    fn run(mut self, model: &dyn CausalLm) -> Result<(Vec<RowOutput>, EngineStats)> {
        let cfg = self.s.cfg;
        let device = self.s.device;
        let blocked_always =
            (!cfg.blocked_token_ids.is_empty()).then(|| id_tensor(&cfg.blocked_token_ids, device));
        let early_ids = (!self.s.stop_ids.is_empty() && cfg.min_new_tokens > 0)
            .then(|| id_tensor(self.s.stop_ids, device));
        loop {
            let admitted = self.admit(model)?;
            if self.slots.iter().all(Option::is_none) {
                if !self.waiting.is_empty() {
                    bail!("generation engine stalled with prompts waiting (no free slot)");
                }
                break;
            }
            self.start_rows(&admitted)?;

            // One token for every live slot (empty ones are ignored).
            let live = self.live_rows;
            let logits = self.logits.as_ref().context("no logits before sampling")?;
            let early: Vec<bool> = self.slots[..live]
                .iter()
                .map(|r| {
                    r.as_ref()
                        .is_some_and(|r| r.tokens.len() < cfg.min_new_tokens)
                })
                .collect();
            let early_mask = match &early_ids {
                Some(ids) if early.iter().any(|&e| e) => {
                    Some((ids, Tensor::from_slice(&early).to_device(device)))
                }
                _ => None,
            };
            let mut uniforms = SlotUniforms {
                slots: &mut self.slots[..live],
                next: 0,
            };
            let choice = choose_rows(
                logits,
                &cfg.sampling,
                blocked_always.as_ref(),
                early_mask.as_ref().map(|(ids, rows)| (*ids, rows)),
                &mut uniforms,
            )?;
            // The one wait per step.
            let tokens = Vec::<i64>::try_from(choice.tokens.to_device(Device::Cpu))
                .context("reading sampled tokens")?;
            let lps = Vec::<f32>::try_from(choice.logprobs.to_device(Device::Cpu))
                .context("reading sampled log-probs")?;
            self.record(&tokens, &lps);
            if self.slots[..live].iter().all(Option::is_none) {
                continue;
            }
            if self.waiting.is_empty() {
                self.compact();
            }
            self.decode(model)?;
        }
        Ok((self.done, self.stats))
    }

    /// Fills free live slots with waiting rows, prefilling the prompts they
    /// need; returns the slots filled.
    fn admit(&mut self, model: &dyn CausalLm) -> Result<Vec<usize>> {
        let n = self.s.cfg.samples_per_prompt;
        let mut admitted = Vec::new();
        let mut to_prefill: Vec<(usize, usize)> = Vec::new();
        for slot in 0..self.live_rows {
            if self.slots[slot].is_some() {
                continue;
            }
            let Some(&prompt) = self.waiting.front() else {
                break;
            };
            let prompt_slot = match self.resident.get(&prompt) {
                Some(&p) => p,
                None => {
                    let Some(free) = self.prompt_slots[..self.live_prompts]
                        .iter()
                        .position(Option::is_none)
                    else {
                        break;
                    };
                    self.prompt_slots[free] = Some(PromptSlot {
                        prompt,
                        next_position: 0,
                        unfinished: n,
                    });
                    self.resident.insert(prompt, free);
                    to_prefill.push((prompt, free));
                    free
                }
            };
            let sample = self.next_sample;
            let key = self.prompts.key(self.mine[prompt]);
            self.slots[slot] = Some(Row {
                prompt,
                prompt_slot,
                sample,
                stream: SeededRng::keyed(self.s.seed, &[key, sample as u64]),
                tokens: Vec::new(),
                logprobs: Vec::new(),
            });
            admitted.push(slot);
            self.next_sample += 1;
            if self.next_sample == n {
                self.waiting.pop_front();
                self.next_sample = 0;
            }
        }
        // Prefill in chunks of at most PREFILL_TOKENS (at least one prompt each).
        let mut start = 0;
        while start < to_prefill.len() {
            let mut end = start + 1;
            let width = |a: usize, b: usize| {
                let longest = to_prefill[a..b]
                    .iter()
                    .map(|&(p, _)| self.prompts.lens[self.mine[p]])
                    .max()
                    .unwrap_or(0);
                longest * (b - a)
            };
            while end < to_prefill.len() && width(start, end + 1) <= PREFILL_TOKENS {
                end += 1;
            }
            self.prefill(model, &to_prefill[start..end])?;
            start = end;
        }
        Ok(admitted)
    }

    /// Prefills `chunk` (engine prompt, prompt slot) together.
    fn prefill(&mut self, model: &dyn CausalLm, chunk: &[(usize, usize)]) -> Result<()> {
        // The set's order keeps each chunk's images in batch order.
        let mut sel: Vec<(usize, usize)> = chunk.iter().map(|&(p, s)| (self.mine[p], s)).collect();
        sel.sort_unstable();
        let globals: Vec<usize> = sel.iter().map(|&(g, _)| g).collect();
        let inputs = self.prompts.inputs(&globals)?;
        let (logits, cache) = model
            .prefill(&inputs.as_inputs())
            .with_context(|| format!("prefill of prompts {globals:?}"))?;
        self.stats.prefills += 1;
        let device = self.s.device;
        if self.pools.is_none() {
            let (k, _) = cache
                .layers
                .first()
                .context("the model returned no keys/values")?;
            let s = k.size();
            self.pools = Some(KvPools::new(
                &self.plan,
                cache.layers.len(),
                s[1],
                s[3],
                k.kind(),
                device,
                self.s.cfg.samples_per_prompt,
            ));
            let v = logits.size()[1];
            check_ids_in_vocab(self.s.stop_ids, v, "stop token ids")?;
            check_ids_in_vocab(&self.s.cfg.blocked_token_ids, v, "blocked token ids")?;
            check_ids_in_vocab(&[self.s.cfg.pad_token_id], v, "pad token id")?;
            self.logits = Some(Tensor::zeros(
                [self.plan.row_slots as i64, v],
                (logits.kind(), device),
            ));
            self.prompt_logits = Some(Tensor::zeros(
                [self.plan.prompt_slots as i64, v],
                (logits.kind(), device),
            ));
        }
        let slots: Vec<i64> = sel.iter().map(|&(_, s)| s as i64).collect();
        let slots_t = Tensor::from_slice(&slots).to_device(device);
        if let Some(pools) = self.pools.as_mut() {
            pools.write_prompts(&slots_t, &cache);
        }
        if let Some(pl) = self.prompt_logits.as_mut() {
            let _ = pl.index_copy_(0, &slots_t, &logits.to_kind(pl.kind()));
        }
        let next = Vec::<i64>::try_from(cache.next_position.to_device(Device::Cpu))
            .context("reading the prompts' next positions")?;
        for (&slot, pos) in slots.iter().zip(next) {
            if let Some(p) = self.prompt_slots[slot as usize].as_mut() {
                p.next_position = pos;
            }
        }
        Ok(())
    }

    /// Gives newly admitted rows their prompt's last logits.
    fn start_rows(&mut self, admitted: &[usize]) -> Result<()> {
        if admitted.is_empty() {
            return Ok(());
        }
        let device = self.s.device;
        let prompt_slots: Vec<i64> = admitted
            .iter()
            .map(|&s| self.slots[s].as_ref().map_or(0, |r| r.prompt_slot as i64))
            .collect();
        let dst: Vec<i64> = admitted.iter().map(|&s| s as i64).collect();
        let pl = self.prompt_logits.as_ref().context("no prompt logits")?;
        let rows = pl.index_select(0, &Tensor::from_slice(&prompt_slots).to_device(device));
        let logits = self.logits.as_mut().context("no logits")?;
        let _ = logits.index_copy_(0, &Tensor::from_slice(&dst).to_device(device), &rows);
        Ok(())
    }

    /// Appends each running row's token; retires rows that stopped.
    fn record(&mut self, tokens: &[i64], lps: &[f32]) {
        let cfg = self.s.cfg;
        for slot in 0..self.live_rows {
            let Some(row) = self.slots[slot].as_mut() else {
                continue;
            };
            let t = tokens[slot];
            row.tokens.push(t);
            row.logprobs.push(lps[slot]);
            let stopped = self.s.stop_ids.contains(&t) || row.tokens.len() >= cfg.max_new_tokens;
            if !stopped {
                continue;
            }
            let Some(row) = self.slots[slot].take() else {
                continue;
            };
            let ps = row.prompt_slot;
            if let Some(p) = self.prompt_slots[ps].as_mut() {
                p.unfinished -= 1;
                if p.unfinished == 0 {
                    self.resident.remove(&p.prompt);
                    self.prompt_slots[ps] = None;
                }
            }
            self.done.push(RowOutput {
                prompt: self.mine[row.prompt],
                sample: row.sample,
                tokens: row.tokens,
                logprobs: row.logprobs,
            });
        }
    }

    /// With no row waiting and at most half the live slots running, moves
    /// the running rows (and their prompts) to the front slots.
    fn compact(&mut self) {
        let running: Vec<usize> = (0..self.live_rows)
            .filter(|&s| self.slots[s].is_some())
            .collect();
        if running.is_empty() || running.len() * 2 > self.live_rows {
            return;
        }
        let device = self.s.device;
        let resident: Vec<usize> = (0..self.live_prompts)
            .filter(|&p| self.prompt_slots[p].is_some())
            .collect();
        let idx = |v: &[usize]| {
            Tensor::from_slice(&v.iter().map(|&i| i as i64).collect::<Vec<_>>()).to_device(device)
        };
        let (rows_t, prompts_t) = (idx(&running), idx(&resident));
        if let Some(pools) = self.pools.as_mut() {
            pools.compact_rows(&rows_t);
            pools.compact_prompts(&prompts_t);
        }
        self.logits = self.logits.as_ref().map(|l| l.index_select(0, &rows_t));
        let mut new_slot_of_prompt = HashMap::new();
        for (new, &old) in resident.iter().enumerate() {
            self.prompt_slots.swap(new, old);
            new_slot_of_prompt.insert(old, new);
        }
        for (new, &old) in running.iter().enumerate() {
            self.slots.swap(new, old);
            if let Some(r) = self.slots[new].as_mut() {
                r.prompt_slot = new_slot_of_prompt[&r.prompt_slot];
            }
        }
        self.resident = self.prompt_slots[..resident.len()]
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (p.prompt, i)))
            .collect();
        self.live_rows = running.len();
        self.live_prompts = resident.len();
    }

    /// One decode step over the live slots: each running row's last token.
    fn decode(&mut self, model: &dyn CausalLm) -> Result<()> {
        let device = self.s.device;
        let n = self.s.cfg.samples_per_prompt;
        let (rows, prompts) = (self.live_rows, self.live_prompts);
        let pools = self.pools.as_ref().context("no KV pools")?;
        let mut ids = vec![self.s.cfg.pad_token_id; rows];
        let mut positions = vec![0i64; rows];
        let mut own_len = vec![1i64; rows];
        let mut rows_src = vec![0i64; rows];
        let mut layout_src = vec![0i64; prompts * n];
        for (slot, row) in self.slots[..rows].iter().enumerate() {
            let Some(row) = row else { continue };
            let len = row.tokens.len() as i64;
            ids[slot] = *row.tokens.last().context("a running row without tokens")?;
            let prompt = self.prompt_slots[row.prompt_slot]
                .as_ref()
                .context("a running row without its prompt")?;
            positions[slot] = prompt.next_position + len - 1;
            own_len[slot] = len;
            let at = row.prompt_slot * n + row.sample;
            rows_src[slot] = at as i64;
            layout_src[at] = slot as i64;
        }
        let suffix_len = own_len.iter().copied().max().unwrap_or(1);
        let lr = self.plan.response_len as i64;
        let kv_heads = pools.kv_heads() as usize;
        let write: Vec<i64> = (0..rows)
            .flat_map(|r| {
                let pos = own_len[r] - 1;
                (0..kv_heads).map(move |h| ((r * kv_heads + h) as i64) * lr + pos)
            })
            .collect();
        let t = |v: &[i64]| Tensor::from_slice(v).to_device(device);
        let own = t(&own_len).view([rows as i64, 1, 1, 1]);
        let suffix_pad = Tensor::arange(suffix_len, (Kind::Int64, device))
            .view([1, 1, 1, suffix_len])
            .ge_tensor(&own);
        let index = StepIndex {
            prompts: prompts as i64,
            suffix_len,
            write: t(&write),
            suffix_pad,
            layout_src: t(&layout_src),
            rows_src: t(&rows_src),
        };
        let ids_t = t(&ids).view([rows as i64, 1]);
        let logits = model
            .decode_with(&ids_t, &t(&positions), &mut pools.step(&index))
            .context("decode step")?;
        self.stats.decode_steps += 1;
        self.stats.idle_row_steps += self.slots[..rows].iter().filter(|r| r.is_none()).count();
        self.logits = Some(logits);
        Ok(())
    }
}
