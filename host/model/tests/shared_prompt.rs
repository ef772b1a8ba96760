//! `response_token_stats` (each prompt computed once, its keys/values shared by
//! the responses of its group) equals `token_stats` on the concatenated rows:
//! log-probs, entropies and every parameter gradient, for both architectures;
//! and the recomputing backward of activation checkpointing
//! (`response_loss_gradients`) gives the plain backward's gradients, with and
//! without frozen parts, with LoRA adapters, in float32 and in bf16.
#![allow(clippy::needless_range_loop)]

use lmmhost_model::bench;
use lmmhost_model::checkpoint::{self, LoadOptions, LoadedModel};
use lmmhost_model::lm::{CausalLm, Entropy, ForwardInputs, ResponseRows};
use lmmhost_model::lora::{self, LoraConfig, LANGUAGE_TARGETS};
use lmmhost_model::weights::Params;
use tch::{Device, Kind, Tensor};

const PAD: i64 = 122;
const IMAGE: i64 = 125;

/// One prompt: ids and M-RoPE positions `[3][len]` (text: t = h = w).
struct Prompt {
    ids: Vec<i64>,
    pos: [Vec<i64>; 3],
}

fn text_prompt(ids: Vec<i64>) -> Prompt {
    let p: Vec<i64> = (0..ids.len() as i64).collect();
    Prompt {
        ids,
        pos: [p.clone(), p.clone(), p],
    }
}

/// `pre` text tokens, a 2x2 grid of merged image tokens, `post` text tokens.
fn image_prompt(pre: &[i64], post: &[i64]) -> Prompt {
    let mut ids = pre.to_vec();
    let mut pos = [Vec::new(), Vec::new(), Vec::new()];
    for i in 0..pre.len() as i64 {
        for p in pos.iter_mut() {
            p.push(i);
        }
    }
    let s = pre.len() as i64;
    for r in 0..2 {
        for c in 0..2 {
            ids.push(IMAGE);
            pos[0].push(s);
            pos[1].push(s + r);
            pos[2].push(s + c);
        }
    }
    let next = s + 2;
    for (i, &t) in post.iter().enumerate() {
        ids.push(t);
        for p in pos.iter_mut() {
            p.push(next + i as i64);
        }
    }
    Prompt { ids, pos }
}

/// Left-padded `[N, L]` ids, mask and `[3, N, L]` positions.
fn left_pad(prompts: &[&Prompt], extra: &[&[i64]]) -> (Tensor, Tensor, Tensor) {
    let n = prompts.len();
    let l = prompts
        .iter()
        .zip(extra)
        .map(|(p, e)| p.ids.len() + e.len())
        .max()
        .unwrap();
    let mut ids = vec![PAD; n * l];
    let mut mask = vec![0i64; n * l];
    let mut pos = vec![0i64; 3 * n * l];
    for (i, (p, e)) in prompts.iter().zip(extra).enumerate() {
        let len = p.ids.len() + e.len();
        let off = l - len;
        let next = p.pos.iter().flatten().max().unwrap() + 1;
        for j in 0..len {
            ids[i * l + off + j] = if j < p.ids.len() {
                p.ids[j]
            } else {
                e[j - p.ids.len()]
            };
            mask[i * l + off + j] = 1;
            for d in 0..3 {
                pos[d * n * l + i * l + off + j] = if j < p.ids.len() {
                    p.pos[d][j]
                } else {
                    next + (j - p.ids.len()) as i64
                };
            }
        }
    }
    let (ni, li) = (n as i64, l as i64);
    (
        Tensor::from_slice(&ids).view([ni, li]),
        Tensor::from_slice(&mask).view([ni, li]),
        Tensor::from_slice(&pos).view([3, ni, li]),
    )
}

fn grads(params: &[(String, Tensor)]) -> Vec<Tensor> {
    params
        .iter()
        .map(|(_, p)| {
            let g = p.grad();
            let out = if g.defined() {
                g.copy()
            } else {
                p.zeros_like()
            };
            if g.defined() {
                let _ = p.grad().zero_();
            }
            out
        })
        .collect()
}

fn check(preset: &str) {
    // A seed per preset: different random models.
    let seed = match preset {
        "w1" => 3,
        "w2" => 4,
        _ => 5,
    };
    let m = bench::random_model(preset, Device::Cpu, Kind::Float, seed).unwrap();
    let lm = m.model.as_lm();
    let params = m.model.named_parameters();
    for (_, p) in &params {
        let _ = p.set_requires_grad(true);
    }
    let vl = m.config.architecture.is_multimodal();
    let prompts = if vl {
        vec![
            image_prompt(&[120, 30, 31], &[40, 41, 42, 121, 120, 50]),
            image_prompt(&[120, 33], &[44, 121, 120]),
        ]
    } else {
        vec![
            text_prompt(vec![120, 30, 31, 32, 33, 121, 120, 50]),
            text_prompt(vec![120, 34, 35, 121]),
        ]
    };
    // Three rows of prompt 0, two of prompt 1, interleaved; ragged responses.
    let group = [0usize, 1, 0, 0, 1];
    let responses: Vec<Vec<i64>> = vec![
        vec![60, 61, 62, 63],
        vec![64, 65],
        vec![66, 67, 68],
        vec![69, 70, 71, 72],
        vec![73, 74, 75, 76],
    ];
    let (b, lr) = (group.len(), 4usize);
    let patch_dim = m.config.vision.as_ref().map_or(0, |v| v.patch_dim());
    let pixels = vl.then(|| Tensor::randn([16, patch_dim], (Kind::Float, Device::Cpu)));
    let grid = Tensor::from_slice(&[1i64, 4, 4]).view([1, 3]);

    // Straightforward: every row is its prompt followed by its response.
    let rows: Vec<&Prompt> = group.iter().map(|&g| &prompts[g]).collect();
    let extra: Vec<&[i64]> = responses.iter().map(|r| r.as_slice()).collect();
    let (ids, mask, pos) = left_pad(&rows, &extra);
    let l = ids.size()[1];
    let targets = Tensor::cat(
        &[
            ids.narrow(1, 1, l - 1),
            Tensor::full([b as i64, 1], PAD, (Kind::Int64, Device::Cpu)),
        ],
        1,
    );
    let row_pixels = pixels.as_ref().map(|p| {
        let parts: Vec<&Tensor> = group.iter().map(|_| p).collect();
        // Each row carries a copy of its prompt's image (prompt 1 uses the
        // same pixels here, which does not matter for the equality).
        Tensor::cat(&parts, 0)
    });
    let row_grid = Tensor::cat(&vec![&grid; b], 0);
    let full_pos = pos.shallow_clone();
    let inputs = ForwardInputs {
        input_ids: &ids,
        attention_mask: &mask,
        position_ids: vl.then_some(&full_pos),
        pixel_values: row_pixels.as_ref(),
        image_grid_thw: vl.then_some(&row_grid),
    };
    let (lp_all, ent_all) = lm
        .token_stats(&inputs, &targets, Entropy::Differentiable)
        .unwrap();
    // Response token j of row i sits at column l - len_i + |prompt_i| + j;
    // its log-prob is in the column before.
    let mut want_lp = Vec::new();
    let mut want_ent = Vec::new();
    let mut rmask = vec![0f32; b * lr];
    for i in 0..b {
        let p = &prompts[group[i]];
        let len = p.ids.len() + responses[i].len();
        let start = l - len as i64 + p.ids.len() as i64 - 1;
        let n = responses[i].len() as i64;
        want_lp.push(lp_all.get(i as i64).narrow(0, start, n));
        want_ent.push(ent_all.as_ref().unwrap().get(i as i64).narrow(0, start, n));
        for j in 0..responses[i].len() {
            rmask[i * lr + j] = 1.0;
        }
    }
    let zero = Tensor::zeros([], (Kind::Float, Device::Cpu));
    let loss_ref = want_lp.iter().zip(&want_ent).fold(zero, |acc, (a, e)| {
        acc + a.sum(Kind::Float) + e.sum(Kind::Float) * 0.5
    });
    loss_ref.backward();
    let g_ref = grads(&params);

    // Shared: two prompts once, five responses.
    let prompt_refs: Vec<&Prompt> = prompts.iter().collect();
    let none: Vec<&[i64]> = vec![&[]; prompts.len()];
    let (pids, pmask, ppos) = left_pad(&prompt_refs, &none);
    let prompt_pixels = pixels.as_ref().map(|p| Tensor::cat(&[p, p], 0));
    let prompt_grid = Tensor::cat(&[&grid, &grid], 0);
    let pinputs = ForwardInputs {
        input_ids: &pids,
        attention_mask: &pmask,
        position_ids: vl.then_some(&ppos),
        pixel_values: prompt_pixels.as_ref(),
        image_grid_thw: vl.then_some(&prompt_grid),
    };
    let mut resp = vec![PAD; b * lr];
    for (i, r) in responses.iter().enumerate() {
        resp[i * lr..i * lr + r.len()].copy_from_slice(r);
    }
    let resp = Tensor::from_slice(&resp).view([b as i64, lr as i64]);
    let rmask = Tensor::from_slice(&rmask).view([b as i64, lr as i64]);
    let gidx = Tensor::from_slice(&group.iter().map(|&g| g as i64).collect::<Vec<_>>());
    let (lp, ent) = lm
        .response_token_stats(&pinputs, &gidx, &resp, &rmask, Entropy::Differentiable, 1.0)
        .unwrap();
    assert_eq!(lp.size(), [b as i64, lr as i64]);
    let ent = ent.unwrap();
    let mut loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
    for i in 0..b {
        let n = responses[i].len() as i64;
        let got = lp.get(i as i64).narrow(0, 0, n);
        let diff = (&got - &want_lp[i]).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{preset} row {i}: log-probs differ by {diff}");
        let got_e = ent.get(i as i64).narrow(0, 0, n);
        let diff = (&got_e - &want_ent[i]).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{preset} row {i}: entropies differ by {diff}");
        loss = loss + got.sum(Kind::Float) + got_e.sum(Kind::Float) * 0.5;
    }
    let lv = loss.double_value(&[]);
    let rv = loss_ref.double_value(&[]);
    assert!((lv - rv).abs() < 1e-4 * rv.abs().max(1.0), "{lv} vs {rv}");
    loss.backward();
    let g_new = grads(&params);
    let mut checked = 0;
    for ((name, _), (a, r)) in params.iter().zip(g_new.iter().zip(&g_ref)) {
        let scale = r.abs().max().double_value(&[]).max(1e-6);
        let diff = (a - r).abs().max().double_value(&[]);
        assert!(
            diff <= 1e-4 * scale + 1e-7,
            "{preset}: gradient of {name} differs by {diff} (max |g| {scale})"
        );
        if scale > 1e-6 {
            checked += 1;
        }
    }
    assert!(
        checked > 10,
        "{preset}: only {checked} parameters got gradients"
    );

    // Activation checkpointing: the same gradients, all parameters trained.
    let rows = ResponseRows {
        prompts: &pinputs,
        group: &gidx,
        responses: &resp,
        response_mask: &rmask,
        entropy: Entropy::Differentiable,
        temperature: 1.0,
    };
    let n = checkpointed_matches_plain(preset, lm, &params, &rows, 1e-5).len();
    assert!(n > 10, "{preset}: only {n} parameters got gradients");
    if vl {
        vision_only_gradients(preset, lm, &params, &rows, 1e-5);
        // The tower frozen, the embeddings training: the tower's features
        // from the forward enter the embeddings' stage as they were.
        for (name, p) in &params {
            let _ = p.set_requires_grad(!name.starts_with("visual."));
        }
        let k = checkpointed_matches_plain(preset, lm, &params, &rows, 1e-5).len();
        assert!(
            k > 10 && k < n,
            "{preset}: {k} of {n} with the tower frozen"
        );
        for (_, p) in &params {
            let _ = p.set_requires_grad(true);
        }
    }
    // With the vision tower (or the embeddings and first layer) frozen, at
    // another temperature and with the entropy out of the graph.
    for (name, p) in &params {
        if name.starts_with("visual.")
            || name.contains("layers.0.")
            || name.contains("embed_tokens")
        {
            let _ = p.set_requires_grad(false);
        }
    }
    let rows = ResponseRows {
        entropy: Entropy::Detached,
        temperature: 0.7,
        ..rows
    };
    let m = checkpointed_matches_plain(preset, lm, &params, &rows, 1e-5).len();
    assert!(
        m > 5 && m < n,
        "{preset}: {m} of {n} parameters got gradients when frozen"
    );
}

/// Only the vision tower trains (block by block under checkpointing): its
/// variables get the plain backward's gradients, and every block's, the
/// merger's and the patch embedding's get one (a stage whose variables were
/// left out fails here; the DeepStack merger of the last decoder layer gets
/// none in either backward, as only the prompt's own logits see it); then
/// only the merger and the last block. Leaves every parameter requiring grad.
fn vision_only_gradients(
    preset: &str,
    lm: &dyn CausalLm,
    params: &Params,
    rows: &ResponseRows,
    tol: f64,
) {
    for (name, p) in params {
        let _ = p.set_requires_grad(name.starts_with("visual."));
    }
    let got = checkpointed_matches_plain(preset, lm, params, rows, tol);
    let must: Vec<&String> = params
        .iter()
        .map(|(n, _)| n)
        .filter(|n| {
            ["visual.blocks.", "visual.merger.", "visual.patch_embed."]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect();
    assert!(must.len() > 10, "{preset}: {} vision variables", must.len());
    for name in must {
        assert!(got.contains(name), "{preset}: {name} got no gradient");
    }
    // The merger and the last block alone: the backward stops above the
    // frozen blocks, with the same gradients.
    let last = params
        .iter()
        .filter_map(|(n, _)| {
            n.strip_prefix("visual.blocks.")?
                .split('.')
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0usize);
    let top = [format!("visual.blocks.{last}."), "visual.merger.".into()];
    for (name, p) in params {
        let _ = p.set_requires_grad(top.iter().any(|t| name.starts_with(t)));
    }
    let got = checkpointed_matches_plain(preset, lm, params, rows, tol);
    let want = params.iter().filter(|(_, p)| p.requires_grad()).count();
    assert_eq!(got.len(), want, "{preset}: {got:?} got gradients");
    for (_, p) in params {
        let _ = p.set_requires_grad(true);
    }
}

/// The loss the checkpointing checks train on: response log-probs plus half
/// the entropies, over real tokens.
fn response_loss(lp: &Tensor, ent: Option<&Tensor>, mask: &Tensor) -> Tensor {
    let loss = (lp * mask).sum(Kind::Float);
    match ent {
        Some(e) => loss + (e * mask).sum(Kind::Float) * 0.5,
        None => loss,
    }
}

/// Gradients of [`response_loss`] for the parameters that require grad, by
/// the plain backward and by the recomputing one: equal to `tol` relative to
/// each gradient's largest entry. Returns the parameters that got one.
fn checkpointed_matches_plain(
    preset: &str,
    lm: &dyn CausalLm,
    params: &Params,
    rows: &ResponseRows,
    tol: f64,
) -> Vec<String> {
    let (names, trainable): (Vec<&String>, Vec<Tensor>) = params
        .iter()
        .filter(|(_, p)| p.requires_grad())
        .map(|(n, p)| (n, p.shallow_clone()))
        .unzip();
    let (lp, ent) = lm
        .response_token_stats(
            rows.prompts,
            rows.group,
            rows.responses,
            rows.response_mask,
            rows.entropy,
            rows.temperature,
        )
        .unwrap();
    let plain_loss = response_loss(&lp, ent.as_ref(), rows.response_mask);
    let plain = Tensor::run_backward(&[&plain_loss], &trainable, false, false);
    let mut ckpt_loss = f64::NAN;
    let ckpt = lm
        .response_loss_gradients(rows, &trainable, &mut |lp, ent| {
            let loss = response_loss(lp, ent, rows.response_mask);
            ckpt_loss = loss.double_value(&[]);
            Ok(loss)
        })
        .unwrap();
    let want = plain_loss.double_value(&[]);
    assert!(
        (ckpt_loss - want).abs() <= 1e-5 * want.abs().max(1.0),
        "{preset}: checkpointed loss {ckpt_loss} vs {want}"
    );
    assert_eq!(ckpt.len(), trainable.len());
    let mut got = Vec::new();
    for ((name, a), r) in names.iter().zip(&ckpt).zip(&plain) {
        assert_eq!(
            a.defined(),
            r.defined(),
            "{preset}: {name} has a gradient in one backward only"
        );
        if !r.defined() {
            continue;
        }
        let (a, r) = (a.to_kind(Kind::Float), r.to_kind(Kind::Float));
        let scale = r.abs().max().double_value(&[]).max(1e-6);
        let diff = (&a - &r).abs().max().double_value(&[]);
        assert!(
            diff <= tol * scale + 1e-7,
            "{preset}: checkpointed gradient of {name} differs by {diff} (max |g| {scale})"
        );
        if scale > 1e-6 {
            got.push(name.to_string());
        }
    }
    got
}

#[test]
fn shared_prompts_match_the_concatenated_rows_w1() {
    check("w1");
}

#[test]
fn shared_prompts_match_the_concatenated_rows_w2_with_images() {
    check("w2");
}

#[test]
fn shared_prompts_match_the_concatenated_rows_qwen3_vl_with_images() {
    check("w2-qwen3-vl");
}

/// bf16 compute: the recomputing backward runs the same bf16 operations as
/// the plain one (on CPU the gradients came out bit-identical; the bound
/// leaves room for kernels that sum in another order).
#[test]
fn checkpointed_backward_matches_in_bf16() {
    let prompts = [
        text_prompt(vec![120, 30, 31, 32, 33, 121, 120, 50]),
        text_prompt(vec![120, 34, 35, 121]),
    ];
    check_bf16("w1", 6, &prompts);
}

/// bf16 with images: the vision tower, checkpointed block by block, gets the
/// plain backward's gradients (all parameters, then the tower alone).
#[test]
fn checkpointed_vision_backward_matches_in_bf16() {
    let prompts = [
        image_prompt(&[120, 30, 31], &[40, 41, 121, 120]),
        image_prompt(&[120, 33], &[44, 121, 120, 50]),
    ];
    check_bf16("w2", 7, &prompts);
    check_bf16("w2-qwen3-vl", 8, &prompts);
}

/// [`checkpointed_on_prompts`] for a bf16 model of `preset`, every
/// parameter training.
fn check_bf16(preset: &str, seed: i64, prompts: &[Prompt; 2]) {
    let m = bench::random_model(preset, Device::Cpu, Kind::BFloat16, seed).unwrap();
    let params = m.model.named_parameters();
    for (_, p) in &params {
        let _ = p.set_requires_grad(true);
    }
    let name = format!("{preset} bf16");
    let n = checkpointed_on_prompts(&name, &m, &params, prompts, 1e-2).len();
    assert!(n > 10, "{name}: only {n} parameters got gradients");
}

/// [`checkpointed_matches_plain`] for `m` over two prompts (with a
/// 4x4-patch image each for a vision-language model) and three responses;
/// with a vision tower, also [`vision_only_gradients`]. Returns the
/// parameters that got a gradient.
fn checkpointed_on_prompts(
    name: &str,
    m: &LoadedModel,
    params: &Params,
    prompts: &[Prompt; 2],
    tol: f64,
) -> Vec<String> {
    let refs: Vec<&Prompt> = prompts.iter().collect();
    let (ids, mask, pos) = left_pad(&refs, &[&[], &[]]);
    let vl = m.config.vision.is_some();
    let pixels = m
        .config
        .vision
        .as_ref()
        .map(|v| Tensor::randn([32, v.patch_dim()], (Kind::Float, Device::Cpu)));
    let grid = Tensor::from_slice(&[1i64, 4, 4, 1, 4, 4]).view([2, 3]);
    let inputs = ForwardInputs {
        input_ids: &ids,
        attention_mask: &mask,
        position_ids: vl.then_some(&pos),
        pixel_values: pixels.as_ref(),
        image_grid_thw: vl.then_some(&grid),
    };
    let resp =
        Tensor::from_slice(&[60i64, 61, 62, 63, 64, 65, 122, 122, 66, 67, 68, 122]).view([3, 4]);
    let rmask = resp.ne(PAD).to_kind(Kind::Float);
    let group = Tensor::from_slice(&[0i64, 1, 0]);
    let rows = ResponseRows {
        prompts: &inputs,
        group: &group,
        responses: &resp,
        response_mask: &rmask,
        entropy: Entropy::Differentiable,
        temperature: 1.0,
    };
    let lm = m.model.as_lm();
    let got = checkpointed_matches_plain(name, lm, params, &rows, tol);
    if vl {
        vision_only_gradients(name, lm, params, &rows, tol);
    }
    got
}

/// LoRA on a frozen base: every adapter gets the plain backward's gradient
/// from the recomputing one (B drawn non-zero, so A's gradients are too).
#[test]
fn checkpointed_backward_matches_with_lora_adapters() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/model/a_text_qwen2/checkpoint");
    let lora = LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: LANGUAGE_TARGETS.iter().map(|s| s.to_string()).collect(),
        vision: false,
        rslora: false,
    };
    let opts = LoadOptions {
        lora: Some(lora),
        ..Default::default()
    };
    let m = checkpoint::load_with(&dir, Device::Cpu, Kind::Float, opts).unwrap();
    let params = m.model.named_parameters();
    lora::init_adapters(&params, 7);
    checkpoint::seeded(8, || {
        tch::no_grad(|| {
            for (name, p) in &params {
                if name.ends_with(".lora_B.weight") {
                    p.shallow_clone().copy_(&(p.randn_like() * 0.05));
                }
            }
        })
    });
    for (name, p) in &params {
        let _ = p.set_requires_grad(lora::is_adapter(name));
    }
    let prompts = [
        text_prompt(vec![120, 30, 31, 32, 33, 121, 120, 50]),
        text_prompt(vec![120, 34, 35, 121]),
    ];
    let got = checkpointed_on_prompts("a_text_qwen2 lora", &m, &params, &prompts, 1e-5);
    let adapters: Vec<&String> = params
        .iter()
        .map(|(n, _)| n)
        .filter(|n| lora::is_adapter(n))
        .collect();
    assert!(!adapters.is_empty());
    for name in adapters {
        assert!(got.contains(name), "adapter {name} got no gradient");
    }
}
