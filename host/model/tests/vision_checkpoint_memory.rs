//! Peak memory of the training backward of a Qwen2.5-VL model whose vision
//! tower trains, over one 448x448 image per prompt (1,024 patches through 8
//! vision blocks of width 256): the plain backward against activation
//! checkpointing (per decoder layer and per vision block). Each runs in a
//! child process, whose peak resident size (`VmHWM`) rises over the pass.

use lmmhost_model::bench;
use lmmhost_model::lm::{Entropy, ForwardInputs, ResponseRows};
use lmmhost_model::memory::{peak_rss_bytes, rss_bytes, rss_follows_live_memory, run_probe};
use tch::{Device, Kind, Tensor};

const MODE: &str = "LMMHOST_VISION_PROBE_MODE";
const PAD: i64 = 122;
const IMAGE: i64 = 125;
/// Merged image tokens per side: 448 / 14 / 2.
const SIDE: i64 = 16;

/// W2's Qwen2.5-VL with a wider, deeper vision tower.
fn model() -> lmmhost_model::checkpoint::LoadedModel {
    let mut cfg = bench::preset_config("w2").unwrap();
    let v = cfg["vision_config"].as_object_mut().unwrap();
    v.insert("depth".into(), 8.into());
    v.insert("hidden_size".into(), 256.into());
    v.insert("intermediate_size".into(), 1024.into());
    v.insert("fullatt_block_indexes".into(), serde_json::json!([3, 7]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    bench::random_model(path.to_str().unwrap(), Device::Cpu, Kind::Float, 11).unwrap()
}

/// Two prompts of text, one image of SIDE x SIDE merged tokens, text; M-RoPE
/// positions `[3, 2, L]`.
fn prompts() -> (Tensor, Tensor, Tensor) {
    let (pre, post) = ([120i64, 30, 31], [40i64, 41, 121, 120]);
    let mut ids = pre.to_vec();
    let mut pos = [Vec::new(), Vec::new(), Vec::new()];
    for i in 0..pre.len() as i64 {
        pos.iter_mut().for_each(|p| p.push(i));
    }
    let s = pre.len() as i64;
    for r in 0..SIDE {
        for c in 0..SIDE {
            ids.push(IMAGE);
            pos[0].push(s);
            pos[1].push(s + r);
            pos[2].push(s + c);
        }
    }
    for (i, &t) in post.iter().enumerate() {
        ids.push(t);
        pos.iter_mut().for_each(|p| p.push(s + SIDE + i as i64));
    }
    let l = ids.len() as i64;
    let ids = Tensor::from_slice(&[ids.clone(), ids].concat()).view([2, l]);
    let flat: Vec<i64> = pos
        .iter()
        .flat_map(|p| [p.clone(), p.clone()].concat())
        .collect();
    let pos = Tensor::from_slice(&flat).view([3, 2, l]);
    (ids.shallow_clone(), ids.ones_like(), pos)
}

/// Run in a child process: one backward (plain or checkpointed, after a
/// first one that warms the allocator), printing the resident size's rise.
#[test]
#[ignore = "a child process of vision_checkpointing_lowers_the_backward_peak"]
fn vision_backward_peak_probe() {
    rss_follows_live_memory();
    tch::set_num_threads(1);
    let ckpt = std::env::var(MODE).expect(MODE) == "ckpt";
    let m = model();
    let params: Vec<Tensor> = m
        .model
        .named_parameters()
        .into_iter()
        .map(|(_, p)| p.set_requires_grad(true))
        .collect();
    let (ids, mask, pos) = prompts();
    let patch_dim = m.config.vision.as_ref().unwrap().patch_dim();
    let patches = 4 * SIDE * SIDE;
    let pixels = Tensor::randn([2 * patches, patch_dim], (Kind::Float, Device::Cpu));
    let grid = Tensor::from_slice(&[1i64, 2 * SIDE, 2 * SIDE, 1, 2 * SIDE, 2 * SIDE]).view([2, 3]);
    let inputs = ForwardInputs {
        input_ids: &ids,
        attention_mask: &mask,
        position_ids: Some(&pos),
        pixel_values: Some(&pixels),
        image_grid_thw: Some(&grid),
    };
    let resp = Tensor::randint_low(30, 110, [4, 16], (Kind::Int64, Device::Cpu));
    let rmask = resp.ne(PAD).to_kind(Kind::Float);
    let group = Tensor::from_slice(&[0i64, 1, 0, 1]);
    let rows = ResponseRows {
        prompts: &inputs,
        group: &group,
        responses: &resp,
        response_mask: &rmask,
        entropy: Entropy::Detached,
        temperature: 1.0,
    };
    let lm = m.model.as_lm();
    let pass = || -> Vec<Tensor> {
        if ckpt {
            lm.response_loss_gradients(&rows, &params, &mut |lp, _| {
                Ok((lp * &rmask).sum(Kind::Float))
            })
            .unwrap()
        } else {
            let (lp, _) = lm
                .response_token_stats(&inputs, &group, &resp, &rmask, Entropy::Detached, 1.0)
                .unwrap();
            let loss = (lp * &rmask).sum(Kind::Float);
            Tensor::run_backward(&[&loss], &params, false, false)
        }
    };
    drop(pass());
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = rss_bytes().expect("VmRSS");
    let grads = pass();
    let rise = peak_rss_bytes().expect("VmHWM") - before;
    let grad_bytes: i64 = grads.iter().map(|g| g.numel() as i64 * 4).sum();
    println!(
        "probe mode={} rise={rise} grad_bytes={grad_bytes}",
        if ckpt { "ckpt" } else { "plain" }
    );
}

/// Runs the probe in a child process; returns (rise, gradient bytes).
fn probe(mode: &str) -> (f64, f64) {
    let v = run_probe(
        "vision_backward_peak_probe",
        &[(MODE, mode.to_owned())],
        "probe mode=",
    );
    (v["rise"], v["grad_bytes"])
}

/// With the vision tower checkpointed block by block, only the blocks'
/// inputs and one block's activations are alive in the backward, besides
/// the gradients: the rise beyond one gradient copy falls by more than half.
#[test]
fn vision_checkpointing_lowers_the_backward_peak() {
    let (plain, grad) = probe("plain");
    let (ckpt, _) = probe("ckpt");
    eprintln!(
        "backward peak rise, 2 prompts with a 448x448 image, 4 responses of 16 tokens: {:.1} MB \
         plain, {:.1} MB with activation checkpointing; one gradient copy {:.1} MB",
        plain / 1e6,
        ckpt / 1e6,
        grad / 1e6
    );
    assert!(
        ckpt - grad < 0.5 * (plain - grad),
        "checkpointing: +{ckpt} B, plain: +{plain} B (one gradient copy {grad} B)"
    );
}
