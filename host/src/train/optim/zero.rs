//! ZeRO stages 1 and 2 (`distributed.zero_stage`): the trained parameters
//! are laid out in flat buckets (`ShardPlan`) and each rank keeps the AdamW
//! state (moments, and the f32 master weights under mixed precision) of its
//! shard of every bucket only. An update runs AdamW's arithmetic on the
//! rank's flat shards; the new weights are then all-gathered (the step in
//! `train/step/apply.rs` names the collectives).
//!
//! The state starts from whatever the optimizer holds whole (nothing, or a
//! previous stage's masters), or from the shards a checkpoint's reader
//! made (`checkpoint.rs`), which are kept when the same parameters train;
//! a checkpoint writes each rank's shards as they are.

use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};
use lmmhost_distributed::{Distributed, ShardPlan};
use tch::{Device, Kind, Tensor};

use super::adamw::{narrow, AdamW, ZeroShards};

/// Bytes per flat bucket (DDP's gradient bucket size).
pub(crate) const BUCKET_BYTES: usize = 25 << 20;

/// Stand-ins of the gradients' sum of the parameters at `indices` (in
/// `sum_kind`, else each parameter's own type), from which a `ShardPlan` is
/// laid out: shape, type and device only, a broadcast scalar with no memory
/// of the parameter's size behind it.
pub(super) fn sum_layout(
    params: &[Tensor],
    indices: &[usize],
    sum_kind: Option<Kind>,
) -> Vec<Tensor> {
    indices
        .iter()
        .map(|&i| {
            let p = &params[i];
            Tensor::zeros([0i64; 0], (sum_kind.unwrap_or(p.kind()), p.device()))
                .expand(p.size(), false)
        })
        .collect()
}

impl AdamW {
    /// Holds the state as this rank's shards of the parameters at `indices`
    /// (of `params`), laid out as their gradients `grads` (the state's dtype);
    /// returns the plan. The whole state held (a checkpoint's, or a previous
    /// stage's masters) moves into the shards; shards of another set of
    /// parameters (a stage that trains other parts) are re-sharded.
    pub fn shard_state(
        &mut self,
        dist: &Distributed,
        params: &[Tensor],
        indices: &[usize],
        grads: &[Tensor],
    ) -> Result<&ShardPlan> {
        let same = self.zero.as_ref().is_some_and(|z| z.indices == indices);
        if !same {
            if self.zero.is_some() {
                let (moments, masters) = self.gather_state(dist, params)?;
                (self.moments, self.masters) = (moments, masters);
                self.zero = None;
            }
            let plan = ShardPlan::new(grads, BUCKET_BYTES, dist);
            let device = grads.first().map_or(Device::Cpu, Tensor::device);
            // A whole state (a checkpoint's, a previous stage's masters) is
            // sharded on the CPU, where it was loaded or gathered: the
            // accelerator holds the shards only.
            let whole_state = indices
                .iter()
                .any(|i| self.masters.contains_key(i) || self.moments.contains_key(i));
            let place = |t: Tensor| {
                if whole_state {
                    t.to_device(Device::Cpu)
                } else {
                    t
                }
            };
            let with_masters = self.master_weights && indices.iter().any(|&i| narrow(&params[i]));
            let masters = if with_masters {
                let whole: Vec<Tensor> = indices
                    .iter()
                    .map(|&i| {
                        place(
                            self.masters
                                .remove(&i)
                                .unwrap_or_else(|| params[i].detach()),
                        )
                    })
                    .collect();
                let shards = plan
                    .local_shards(&whole)
                    .context("sharding the master weights")?;
                Some(
                    shards
                        .iter()
                        .map(|s| s.to_device(device).to_kind(Kind::Float))
                        .collect(),
                )
            } else {
                None
            };
            let moments = if indices.iter().any(|i| self.moments.contains_key(i)) {
                let (mut ms, mut vs) = (Vec::new(), Vec::new());
                for (&i, g) in indices.iter().zip(grads) {
                    let (m, v) = self
                        .moments
                        .remove(&i)
                        .unwrap_or_else(|| (place(g.zeros_like()), place(g.zeros_like())));
                    ms.push(place(m).to_kind(g.kind()));
                    vs.push(place(v).to_kind(g.kind()));
                }
                let ms = plan.local_shards(&ms).context("sharding the moments")?;
                let vs = plan.local_shards(&vs).context("sharding the moments")?;
                let on_device = |t: Tensor| t.to_device(device);
                ms.into_iter()
                    .map(on_device)
                    .zip(vs.into_iter().map(on_device))
                    .collect()
            } else {
                Vec::new()
            };
            // What is not sharded (a frozen part's masters) stays whole.
            self.zero = Some(ZeroShards {
                plan,
                indices: indices.to_vec(),
                masters,
                moments,
            });
        }
        Ok(&self.zero.as_ref().expect("set above").plan)
    }

    /// As `shard_state`, before any gradient exists (ZeRO-2 reduces each
    /// micro-batch's gradients into the plan's shards): laid out as the
    /// gradients' sum will be, the parameters' shapes in `sum_kind` (f32
    /// under master weights), else in each parameter's own dtype.
    pub fn shard_state_for_sums(
        &mut self,
        dist: &Distributed,
        params: &[Tensor],
        indices: &[usize],
        sum_kind: Option<Kind>,
    ) -> Result<&ShardPlan> {
        let layout = sum_layout(params, indices, sum_kind);
        self.shard_state(dist, params, indices, &layout)
    }

    /// One update of this rank's shards with its shards `grads` of the
    /// reduced, clipped gradients; `active` (per bucket, 1 where the
    /// parameter got a gradient on some rank, 0 elsewhere) leaves the others
    /// untouched, as `step` leaves a parameter without a gradient. Returns
    /// the updated shards of the weights, to be all-gathered into `params`.
    pub fn step_shards(
        &mut self,
        params: &[Tensor],
        grads: &[Tensor],
        active: Option<&[Tensor]>,
        lr: f64,
    ) -> Result<Vec<Tensor>> {
        let bias = self.count_step();
        let mut zero = self
            .zero
            .take()
            .context("the ZeRO state is not sharded yet")?;
        ensure!(
            grads.len() == zero.plan.len(),
            "{} gradient shards for {} buckets",
            grads.len(),
            zero.plan.len()
        );
        let weights = match &zero.masters {
            Some(m) => m.iter().map(Tensor::shallow_clone).collect(),
            None => {
                let trained: Vec<Tensor> =
                    zero.indices.iter().map(|&i| params[i].detach()).collect();
                zero.plan.local_shards(&trained)?
            }
        };
        if zero.moments.is_empty() {
            // In the type of what they update, as `step` creates them.
            zero.moments = weights
                .iter()
                .map(|w| (w.zeros_like(), w.zeros_like()))
                .collect();
        }
        tch::no_grad(|| {
            for (b, (w, g)) in weights.iter().zip(grads).enumerate() {
                let (m, v) = &zero.moments[b];
                let Some(active) = active else {
                    self.update(w, g, m, v, lr, bias);
                    continue;
                };
                let before = [w.copy(), m.copy(), v.copy()];
                self.update(w, g, m, v, lr, bias);
                let keep = active[b].eq(0.0);
                for (now, old) in [w, m, v].into_iter().zip(before) {
                    now.shallow_clone().copy_(&old.where_self(&keep, now));
                }
            }
        });
        self.zero = Some(zero);
        Ok(weights)
    }

    /// The whole optimizer, per parameter, as an unsharded run holds it (a
    /// stage change carries the f32 masters over this way), gathered from
    /// every rank's shards into every rank's host memory; `None` when the
    /// state is not sharded. Every rank must call it.
    pub fn gathered(&self, dist: &Distributed, params: &[Tensor]) -> Result<Option<AdamW>> {
        if self.zero.is_none() {
            return Ok(None);
        }
        let (mut moments, mut masters) = self.gather_state(dist, params)?;
        moments.extend(
            self.moments
                .iter()
                .map(|(&i, (m, v))| (i, (m.shallow_clone(), v.shallow_clone()))),
        );
        masters.extend(self.masters.iter().map(|(&i, m)| (i, m.shallow_clone())));
        let mut whole = AdamW::new([self.beta1, self.beta2], self.eps, self.weight_decay)
            .with_master_weights(self.master_weights)
            .with_zero_stage(self.zero_stage);
        (whole.step, whole.moments, whole.masters) = (self.step, moments, masters);
        Ok(Some(whole))
    }

    /// Every rank's shards gathered into whole tensors on the CPU, by
    /// parameter index: one bucket at a time passes through the
    /// accelerator.
    #[allow(clippy::type_complexity)]
    fn gather_state(
        &self,
        dist: &Distributed,
        params: &[Tensor],
    ) -> Result<(BTreeMap<usize, (Tensor, Tensor)>, BTreeMap<usize, Tensor>)> {
        let Some(zero) = &self.zero else {
            return Ok((BTreeMap::new(), BTreeMap::new()));
        };
        // Whole tensors of the parameters' shapes, by parameter index.
        let gather = |shards: Vec<Tensor>| -> Result<BTreeMap<usize, Tensor>> {
            let mut whole = BTreeMap::new();
            zero.plan
                .all_gather_each(dist, &shards, |_, members, full| {
                    let mut offset = 0i64;
                    for &j in members {
                        let i = zero.indices[j];
                        let n = params[i].numel() as i64;
                        let t = full.narrow(0, offset, n).view(params[i].size().as_slice());
                        whole.insert(i, t.to_device(Device::Cpu).copy());
                        offset += n;
                    }
                    Ok(())
                })
                .context("gathering the optimizer state")?;
            Ok(whole)
        };
        let mut moments = BTreeMap::new();
        if !zero.moments.is_empty() {
            let ms = gather(
                zero.moments
                    .iter()
                    .map(|(m, _)| m.shallow_clone())
                    .collect(),
            )?;
            let mut vs = gather(
                zero.moments
                    .iter()
                    .map(|(_, v)| v.shallow_clone())
                    .collect(),
            )?;
            for (i, m) in ms {
                let v = vs
                    .remove(&i)
                    .context("a moment gathered without its pair")?;
                moments.insert(i, (m, v));
            }
        }
        let masters = match &zero.masters {
            Some(shards) => gather(shards.iter().map(Tensor::shallow_clone).collect())?,
            None => BTreeMap::new(),
        };
        Ok((moments, masters))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On one rank (a plan of whole buckets) the flat-shard update is the
    /// per-parameter one: a trained parameter without a gradient anywhere
    /// keeps its weight and moments, a frozen one is not sharded, and the
    /// gathered state is the unsharded optimizer's. With bf16 parameters,
    /// through f32 master shards.
    #[test]
    fn flat_shards_update_as_whole_parameters_do() {
        let dist = Distributed::single(Device::Cpu);
        for kind in [Kind::Float, Kind::BFloat16] {
            let init = || -> Vec<Tensor> {
                let a = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.25, 1.5, -0.75]).view([2, 3]);
                let b = Tensor::from_slice(&[3.0f32, -2.0]);
                let c = Tensor::from_slice(&[1.0f32]);
                [a, b, c]
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| t.to_kind(kind).set_requires_grad(i < 2))
                    .collect()
            };
            let grad = |step: f64| {
                Tensor::from_slice(&[1.0f32, -0.5, 0.25, 2.0, -1.0, 0.5]).view([2, 3]) * step
            };
            let master = kind != Kind::Float;
            let new = || AdamW::new([0.9, 0.999], 1e-8, 0.1).with_master_weights(master);
            let (whole_params, shard_params) = (init(), init());
            let (mut whole, mut sharded) = (new(), new().with_zero_stage(1));
            for step in 1..=3 {
                let g = grad(f64::from(step));
                whole
                    .step(
                        &whole_params,
                        &[g.shallow_clone(), Tensor::new(), Tensor::new()],
                        0.1,
                    )
                    .unwrap();
                let state_kind = if master { Kind::Float } else { kind };
                let grads = [
                    g.to_kind(state_kind),
                    Tensor::zeros([2], (state_kind, Device::Cpu)),
                ];
                let plan = sharded
                    .shard_state(&dist, &shard_params, &[0, 1], &grads)
                    .unwrap();
                let shards = plan.local_shards(&grads).unwrap();
                let flags = [
                    Tensor::ones([2, 3], (Kind::Float, Device::Cpu)),
                    Tensor::zeros([2], (Kind::Float, Device::Cpu)),
                ];
                let active = plan.local_shards(&flags).unwrap();
                let weights = sharded
                    .step_shards(&shard_params, &shards, Some(&active), 0.1)
                    .unwrap();
                let targets: Vec<Tensor> = shard_params[..2]
                    .iter()
                    .map(Tensor::shallow_clone)
                    .collect();
                sharded
                    .zero
                    .as_ref()
                    .unwrap()
                    .plan()
                    .all_gather_into(&dist, &weights, &targets)
                    .unwrap();
            }
            for (w, s) in whole_params.iter().zip(&shard_params) {
                assert!(w.equal(s), "{kind:?}: {w} vs {s}");
            }
            assert!(
                shard_params[1].equal(&init()[1]),
                "a parameter without gradient moved"
            );
            let gathered = sharded.gathered(&dist, &shard_params).unwrap().unwrap();
            assert_eq!(gathered.step, 3);
            let (m, v) = &whole.moments[&0];
            assert!(m.equal(&gathered.moments[&0].0) && v.equal(&gathered.moments[&0].1));
            assert!(
                !gathered.moments.contains_key(&2),
                "a frozen parameter has no state"
            );
            assert_eq!(gathered.masters.contains_key(&0), master);
            if master {
                assert!(whole.masters[&0].equal(&gathered.masters[&0]));
            }
        }
    }
}
