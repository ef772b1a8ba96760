//! Activation checkpointing for the training loss over responses that
//! continue shared prompts: the forward runs without a graph and keeps only
//! each decoder layer's inputs (and, when the vision tower trains, each
//! vision block's); the backward then goes stage by stage, the loss head
//! first, the layers in reverse, the embeddings, then such a tower's merger,
//! blocks in reverse and patch embedding, recomputing each stage's forward
//! with its graph from the saved inputs. Only one stage's activations exist
//! at a time.
//!
//! tch has no custom autograd functions, so the stages are chained by hand:
//! the gradient reaching a stage's outputs enters it as `sum(output *
//! gradient)`, whose backward (`run_backward`) gives the gradients of the
//! stage's inputs (handed to the stage before it) and of its own variables
//! that require grad (adapters, unfrozen weights), summed per parameter.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use super::{add_deepstack, image_inputs, DecoderLm, ResponseLayout, VisionLm};
use crate::layers::{attention_mask, LayerKv};
use crate::lm::{ResponseLoss, ResponseRows};
use crate::vision_stages::{self, grid_rows, BlockContext, VisionOutput, VisionStages};
use crate::weights::Params;

/// Gradients summed per parameter, in the order of the caller's list.
struct ParamGrads {
    /// Storage address -> index in the caller's list (a tied output
    /// projection shares the embeddings' storage, so their gradients add).
    index: HashMap<usize, usize>,
    grads: Vec<Option<Tensor>>,
}

impl ParamGrads {
    fn new(params: &[Tensor]) -> ParamGrads {
        ParamGrads {
            index: params
                .iter()
                .enumerate()
                .map(|(i, p)| (p.data_ptr() as usize, i))
                .collect(),
            grads: params.iter().map(|_| None).collect(),
        }
    }

    /// The variables among `params` that need a gradient: they require grad
    /// and are in the caller's list.
    fn wanted(&self, params: Params) -> Result<Vec<Tensor>> {
        let mut out = Vec::new();
        for (name, p) in params {
            if !p.requires_grad() {
                continue;
            }
            if !self.index.contains_key(&(p.data_ptr() as usize)) {
                bail!("{name} requires grad but is not among the parameters the update trains");
            }
            out.push(p);
        }
        Ok(out)
    }

    /// [`ParamGrads::wanted`] of the variables `push` lists.
    fn wanted_of(&self, push: impl FnOnce(&mut Params)) -> Result<Vec<Tensor>> {
        let mut params = Vec::new();
        push(&mut params);
        self.wanted(params)
    }

    fn add(&mut self, param: &Tensor, grad: Tensor) {
        if !grad.defined() {
            return;
        }
        let slot = &mut self.grads[self.index[&(param.data_ptr() as usize)]];
        *slot = Some(match slot.take() {
            Some(g) => g + grad,
            None => grad,
        });
    }

    fn into_vec(self) -> Vec<Tensor> {
        self.grads
            .into_iter()
            .map(|g| g.unwrap_or_else(Tensor::new))
            .collect()
    }
}

/// A fresh leaf holding `t`'s values, to recompute a stage from.
fn leaf(t: &Tensor) -> Tensor {
    t.detach().set_requires_grad(true)
}

/// The backward of one recomputed stage: `outputs` paired with the
/// gradients that reached them (undefined: none). Returns the gradients of
/// `inputs` (undefined where none) and adds those of `params` to `acc`.
fn stage_backward(
    outputs: &[(&Tensor, &Tensor)],
    inputs: &[&Tensor],
    params: &[Tensor],
    acc: &mut ParamGrads,
) -> Result<Vec<Tensor>> {
    let mut total: Option<Tensor> = None;
    for (out, grad) in outputs {
        if !grad.defined() || !out.requires_grad() {
            continue;
        }
        let term = (*out * grad.to_kind(out.kind())).sum(Kind::Float);
        total = Some(match total {
            Some(t) => t + term,
            None => term,
        });
    }
    let total = match total {
        Some(t) if t.requires_grad() && !(inputs.is_empty() && params.is_empty()) => t,
        _ => return Ok(inputs.iter().map(|_| Tensor::new()).collect()),
    };
    let mut wrt: Vec<&Tensor> = inputs.to_vec();
    wrt.extend(params.iter());
    let mut grads = Tensor::f_run_backward(&[&total], &wrt, false, false)?;
    for (p, g) in params.iter().zip(grads.split_off(inputs.len())) {
        acc.add(p, g);
    }
    Ok(grads)
}

/// What the layers of the shared-prompt pass run over, besides the hidden
/// states: the rotary tables and masks of the prompts and of the responses.
struct LayerContext {
    layout: ResponseLayout,
    prompt: (Tensor, Tensor, Tensor),
    response: (Tensor, Tensor, Tensor),
    /// `[G, Lp, 1]` image tokens of the prompts, for DeepStack features.
    image_mask: Option<Tensor>,
}

/// See [`crate::lm::CausalLm::response_loss_gradients`].
pub fn response_loss_gradients<M: DecoderLm + ?Sized>(
    model: &M,
    rows: &ResponseRows,
    params: &[Tensor],
    loss: &mut ResponseLoss,
) -> Result<Vec<Tensor>> {
    let dec = model.decoder();
    let n = dec.num_layers();
    let mut acc = ParamGrads::new(params);

    // A vision tower that trains runs block by block, keeping each block's
    // input; a frozen one runs once, its features kept for the embeddings.
    let tower = vision_tower(model, rows, &acc)?;
    let mut tower_saved = Vec::new();

    // Forward without a graph, keeping every layer's inputs.
    let (ctx, mut saved, deepstack, tower_run) = tch::no_grad(|| -> Result<_> {
        let (x, tower_run) = match &tower {
            Some(t) => {
                let keep = t.trains.then_some(&mut tower_saved);
                let (out, bctx) = vision_stages::run(t.lm.tower(), t.pixels, &t.grids, keep)?;
                let run = TowerRun {
                    ctx: bctx,
                    features: out.features.shallow_clone(),
                    deepstack: out.deepstack.len(),
                };
                (t.lm.embed_with_vision(rows.prompts, Some(out))?, Some(run))
            }
            None => (model.embed_inputs(rows.prompts)?, None),
        };
        let kind = x.embeds.kind();
        let layout = ResponseLayout::new(
            model.mrope(),
            &x.positions,
            rows.prompts.attention_mask,
            rows.group,
            rows.response_mask,
        );
        let (cp, sp) = dec.rotary(&x.positions, kind)?;
        let (cr, sr) = dec.rotary(&layout.positions, kind)?;
        let lp = x.embeds.size()[1];
        let lr = rows.responses.size()[1];
        let ctx = LayerContext {
            prompt: (cp, sp, attention_mask(rows.prompts.attention_mask, lp)),
            response: (cr, sr, attention_mask(&layout.key_mask, lr)),
            image_mask: x.deepstack.as_ref().map(|(m, _)| m.unsqueeze(-1)),
            layout,
        };
        let deepstack = x.deepstack.map(|(_, f)| f).unwrap_or_default();
        let mut saved = vec![(x.embeds, dec.embed(rows.responses))];
        for i in 0..n {
            let (hp, hr) = &saved[i];
            let next = layer_pair(model, &ctx, i, hp, hr, deepstack.get(i));
            saved.push(next);
        }
        Ok((ctx, saved, deepstack, tower_run))
    })
    .context("checkpointed forward")?;

    // The loss head: final norm, output projection, token statistics, loss.
    let (hp, hr) = (leaf(&saved[n].0), leaf(&saved[n].1));
    let (lp, ent) = ctx.layout.token_stats(
        &dec.final_norm(&hp),
        &dec.final_norm(&hr),
        model.lm_head(),
        rows.responses,
        rows.entropy,
        rows.temperature,
    )?;
    let value = loss(&lp, ent.as_ref())?;
    let mut head = Vec::new();
    dec.final_norm_params(&mut head);
    head.push(("lm_head.weight".into(), model.lm_head().shallow_clone()));
    let head = acc.wanted(head)?;
    let ones = value.ones_like();
    let mut grad = stage_backward(&[(&value, &ones)], &[&hp, &hr], &head, &mut acc)?;
    drop((lp, ent, value, hp, hr));
    saved.truncate(n);

    // The layers in reverse, each recomputed from its saved inputs.
    let mut feature_grads = Vec::new();
    while let Some((hp, hr)) = saved.pop() {
        let i = saved.len();
        let mut own = Vec::new();
        dec.layer_params(i, &mut own);
        let own = acc.wanted(own)?;
        let (hp, hr) = (leaf(&hp), leaf(&hr));
        let feature = deepstack.get(i).map(leaf);
        let (op, or) = layer_pair(model, &ctx, i, &hp, &hr, feature.as_ref());
        let mut inputs = vec![&hp, &hr];
        inputs.extend(feature.as_ref());
        let mut g = stage_backward(&[(&op, &grad[0]), (&or, &grad[1])], &inputs, &own, &mut acc)?;
        if feature.is_some() {
            feature_grads.push((i, g.pop().context("a DeepStack feature's gradient")?));
        }
        grad = g;
    }
    drop(deepstack);

    let (tower, run) = match (tower, tower_run) {
        (Some(tower), Some(run)) if tower.trains => {
            let stage = TowerStage { tower, rows, run };
            return tower_backward(model, stage, &grad, feature_grads, tower_saved, acc);
        }
        pair => pair,
    };

    // The embeddings, recomputed with their graph (a frozen tower's features
    // as they were).
    let mut own = Vec::new();
    dec.embedding_params(&mut own);
    let own = acc.wanted(own)?;
    if !own.is_empty() {
        let x = match (tower, run) {
            (Some(t), Some(run)) => {
                let vision = VisionOutput {
                    features: run.features,
                    deepstack: Vec::new(),
                };
                t.lm.embed_with_vision(rows.prompts, Some(vision))?
            }
            _ => model.embed_inputs(rows.prompts)?,
        };
        let er = dec.embed(rows.responses);
        stage_backward(
            &[(&x.embeds, &grad[0]), (&er, &grad[1])],
            &[],
            &own,
            &mut acc,
        )?;
    }
    Ok(acc.into_vec())
}

/// Layer `i` over the prompts `hp` `[G, Lp, H]` (plus DeepStack `feature`)
/// and the responses `hr` `[B, Lr, H]`, which attend to their prompt's keys.
fn layer_pair<M: DecoderLm + ?Sized>(
    model: &M,
    ctx: &LayerContext,
    i: usize,
    hp: &Tensor,
    hr: &Tensor,
    feature: Option<&Tensor>,
) -> (Tensor, Tensor) {
    let dec = model.decoder();
    let (cp, sp, mp) = &ctx.prompt;
    let (op, kv): (Tensor, LayerKv) = dec.layer(i, hp, cp, sp, mp, None);
    let op = match (feature, &ctx.image_mask) {
        (Some(f), Some(m)) => add_deepstack(&op, m, f),
        _ => op,
    };
    let (cr, sr, mr) = &ctx.response;
    let (or, _) = dec.layer(i, hr, cr, sr, mr, Some(&ctx.layout.share(&kv)));
    (op, or)
}

/// A vision-language model with the prompts' images.
struct Tower<'a> {
    lm: &'a dyn VisionLm,
    pixels: &'a Tensor,
    grids: Vec<[i64; 3]>,
    /// Whether some of the tower's variables train: then it is
    /// checkpointed block by block.
    trains: bool,
}

/// The vision tower with its images (`None`: no tower, or no images).
fn vision_tower<'a, M: DecoderLm + ?Sized>(
    model: &'a M,
    rows: &ResponseRows<'a>,
    acc: &ParamGrads,
) -> Result<Option<Tower<'a>>> {
    let (Some(lm), Some((pixels, grid))) = (model.vision_lm(), image_inputs(rows.prompts)?) else {
        return Ok(None);
    };
    Ok(Some(Tower {
        lm,
        pixels,
        grids: grid_rows(grid)?,
        trains: !acc.wanted_of(|p| tower_params(lm.tower(), p))?.is_empty(),
    }))
}

fn tower_params(tower: &dyn VisionStages, out: &mut Params) {
    tower.patch_params(out);
    for i in 0..tower.num_blocks() {
        tower.block_params(i, out);
    }
    tower.merge_params(out);
}

/// What the checkpointed forward kept of the vision tower, besides each
/// block's input.
struct TowerRun {
    ctx: BlockContext,
    /// The merged features `[N_tokens, out_hidden]`.
    features: Tensor,
    /// How many DeepStack features the blocks gave.
    deepstack: usize,
}

struct TowerStage<'a> {
    tower: Tower<'a>,
    rows: &'a ResponseRows<'a>,
    run: TowerRun,
}

/// The last stages when the vision tower trains: the embeddings with the
/// merged features as an input, the merger, the blocks in reverse (each
/// with its DeepStack merger, whose gradient the decoder layers gave), the
/// patch embedding. `grad` holds the gradients of the prompt and response
/// embeddings, `saved` each block's input and the merger's.
fn tower_backward<M: DecoderLm + ?Sized>(
    model: &M,
    stage: TowerStage,
    grad: &[Tensor],
    feature_grads: Vec<(usize, Tensor)>,
    mut saved: Vec<Tensor>,
    mut acc: ParamGrads,
) -> Result<Vec<Tensor>> {
    let dec = model.decoder();
    let TowerStage {
        tower: t,
        rows,
        run,
    } = stage;
    let (v, tower) = (t.lm, t.lm.tower());
    let mut own = Vec::new();
    dec.embedding_params(&mut own);
    let own = acc.wanted(own)?;
    let features = leaf(&run.features);
    let vision = VisionOutput {
        features: features.shallow_clone(),
        deepstack: Vec::new(),
    };
    let x = v.embed_with_vision(rows.prompts, Some(vision))?;
    let er = dec.embed(rows.responses);
    let outputs = [(&x.embeds, &grad[0]), (&er, &grad[1])];
    let mut g = stage_backward(&outputs, &[&features], &own, &mut acc)?;
    drop((x, er, features));

    let own = acc.wanted_of(|p| tower.merge_params(p))?;
    let xl = leaf(&saved.pop().context("the merger's input")?);
    let merged = tower.merge(&xl, &run.ctx);
    g = stage_backward(&[(&merged, &g[0])], &[&xl], &own, &mut acc)?;
    drop((merged, xl));

    // Stages run down to the lowest one whose variables train.
    let patch_own = acc.wanted_of(|p| tower.patch_params(p))?;
    let mut block_own = Vec::new();
    for i in 0..tower.num_blocks() {
        block_own.push(acc.wanted_of(|p| tower.block_params(i, p))?);
    }
    let lowest = if patch_own.is_empty() {
        let first = block_own.iter().position(|o| !o.is_empty());
        first.unwrap_or(block_own.len())
    } else {
        0
    };

    let mut ds_grads: Vec<Tensor> = (0..run.deepstack).map(|_| Tensor::new()).collect();
    for (i, fg) in feature_grads {
        if let Some(slot) = ds_grads.get_mut(i) {
            *slot = fg;
        }
    }
    for (i, own) in block_own.into_iter().enumerate().skip(lowest).rev() {
        let xi = leaf(&saved.pop().context("a vision block's input")?);
        let (out, feature) = tower.block(i, &xi, &run.ctx);
        let fg = match feature {
            Some(_) => ds_grads.pop().context("a DeepStack feature's gradient")?,
            None => Tensor::new(),
        };
        let mut outputs = vec![(&out, &g[0])];
        if let Some(f) = &feature {
            outputs.push((f, &fg));
        }
        g = stage_backward(&outputs, &[&xi], &own, &mut acc)?;
    }

    if !patch_own.is_empty() {
        let (x0, _) = tower.embed_patches(t.pixels, &t.grids)?;
        stage_backward(&[(&x0, &g[0])], &[], &patch_own, &mut acc)?;
    }
    Ok(acc.into_vec())
}
