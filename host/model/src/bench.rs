//! `lmmhost bench model`: prefill, decode and forward+backward tokens/s of a
//! model config with random weights on the current device.
//!
//! The random checkpoint is written to a temporary directory as a checkpoint
//! save writes it and loaded through the normal checkpoint path, so the
//! benchmark runs exactly the code a real checkpoint runs.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, LoadedModel};
use crate::config::ModelConfig;
use crate::lm::ForwardInputs;
use crate::sampling::{choose, id_tensor, SamplingParams, SeededRng};

/// The tiny configs of the W1 (text) and W2 (vision-language) benchmark
/// workloads, and W2's sizes as Qwen3-VL.
pub const PRESETS: &[&str] = &["w1", "w2", "w2-qwen3-vl"];

/// `config.json` of a preset: `w1` is the text model of workload W1, `w2` the
/// Qwen2.5-VL model of W2, `w2-qwen3-vl` a Qwen3-VL of W2's sizes (DeepStack
/// from both vision blocks). Vocabulary 128: the W1/W2 character tokenizer has
/// ~110 tokens plus the Qwen special tokens, which sit at the top (120..).
pub fn preset_config(name: &str) -> Result<Value> {
    let specials = json!({
        "bos_token_id": 120, "eos_token_id": 121, "pad_token_id": 122,
        "vision_start_token_id": 123, "vision_end_token_id": 124,
        "image_token_id": 125, "video_token_id": 126,
    });
    let mut v = match name {
        "w1" => json!({
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
            "vocab_size": 128, "hidden_size": 256, "intermediate_size": 688,
            "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true,
            "hidden_act": "silu", "max_position_embeddings": 4096,
        }),
        "w2" => json!({
            "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
            "vocab_size": 128, "hidden_size": 128, "intermediate_size": 344,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true,
            "hidden_act": "silu", "max_position_embeddings": 4096,
            "rope_scaling": {"type": "mrope", "rope_type": "default", "mrope_section": [4, 6, 6]},
            "vision_config": {
                "depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4,
                "out_hidden_size": 128, "patch_size": 14, "spatial_merge_size": 2,
                "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [1],
                "in_channels": 3, "hidden_act": "silu", "tokens_per_second": 2,
            },
        }),
        "w2-qwen3-vl" => json!({
            "architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
            "tie_word_embeddings": true,
            "text_config": {
                "vocab_size": 128, "hidden_size": 128, "intermediate_size": 344,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "head_dim": 32, "rms_norm_eps": 1e-6, "hidden_act": "silu",
                "max_position_embeddings": 4096,
                "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                    "mrope_section": [4, 6, 6], "mrope_interleaved": true},
            },
            "vision_config": {
                "depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4,
                "out_hidden_size": 128, "patch_size": 16, "spatial_merge_size": 2,
                "temporal_patch_size": 2, "in_channels": 3, "hidden_act": "gelu_pytorch_tanh",
                "num_position_embeddings": 16, "deepstack_visual_indexes": [0, 1],
            },
        }),
        _ => bail!(
            "unknown model preset {name:?}: expected one of {PRESETS:?} or a directory with a config.json"
        ),
    };
    if let (Some(o), Some(s)) = (v.as_object_mut(), specials.as_object()) {
        for (k, x) in s {
            o.insert(k.clone(), x.clone());
        }
    }
    Ok(v)
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `config.json` named by `config`: a preset, a `config.json` file, a
/// directory holding one, or the name of a folder under `configs/models/`
/// (relative to the working directory, i.e. the repository root).
pub fn resolve_config(config: &str) -> Result<Value> {
    let p = Path::new(config);
    let file = if p.is_file() {
        p.to_path_buf()
    } else if p.join("config.json").is_file() {
        p.join("config.json")
    } else if p.exists() {
        bail!("{config} has no config.json");
    } else if PRESETS.contains(&config) {
        return preset_config(config);
    } else if Path::new("configs/models")
        .join(config)
        .join("config.json")
        .is_file()
    {
        Path::new("configs/models").join(config).join("config.json")
    } else {
        bail!(
            "unknown model config {config:?}: expected one of the presets {PRESETS:?}, a \
             config.json, a directory with one, or a folder name under configs/models/"
        );
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", file.display()))
}

/// Builds a model with random weights from a config (see [`resolve_config`];
/// weights beside it, if any, are not read).
pub fn random_model(config: &str, device: Device, kind: Kind, seed: i64) -> Result<LoadedModel> {
    let raw = resolve_config(config)?;
    // Unique per call: models of several configs may be built at once.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        TempDir(std::env::temp_dir().join(format!("lmmhost-bench-{}-{n}", std::process::id())));
    std::fs::create_dir_all(&dir.0)
        .with_context(|| format!("cannot create {}", dir.0.display()))?;
    let cfg_path = dir.0.join("config.json");
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&raw)?)
        .with_context(|| format!("cannot write {}", cfg_path.display()))?;
    let cfg = ModelConfig::from_dir(&dir.0).with_context(|| format!("model config {config:?}"))?;
    let model = checkpoint::init_random_seeded(cfg, None, Device::Cpu, Kind::Float, seed)?;
    checkpoint::save(&model, &dir.0, &Default::default())?;
    drop(model);
    checkpoint::load(&dir.0, device, kind)
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub batch: i64,
    pub prompt_len: i64,
    pub new_tokens: i64,
    /// Timed repetitions (the median is reported), after one warm-up.
    pub reps: usize,
    pub seed: u64,
}

/// Medians of the timed repetitions.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub prefill_s: f64,
    pub decode_s: f64,
    pub fwd_bwd_s: f64,
    pub prefill_tokens: i64,
    pub decode_tokens: i64,
    pub fwd_bwd_tokens: i64,
    pub image_tokens_per_prompt: i64,
}

impl BenchReport {
    pub fn prefill_tok_s(&self) -> f64 {
        self.prefill_tokens as f64 / self.prefill_s
    }
    pub fn decode_tok_s(&self) -> f64 {
        self.decode_tokens as f64 / self.decode_s
    }
    pub fn fwd_bwd_tok_s(&self) -> f64 {
        self.fwd_bwd_tokens as f64 / self.fwd_bwd_s
    }
}

/// Synthetic prompts: random text ids below the special tokens; for a
/// vision-language model one image of 4x4 patches (4 merged tokens) at the
/// start of every prompt, with its M-RoPE positions.
pub struct BenchInputs {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub position_ids: Option<Tensor>,
    pub pixel_values: Option<Tensor>,
    pub image_grid_thw: Option<Tensor>,
    pub image_tokens: i64,
}

impl BenchInputs {
    pub fn as_inputs(&self) -> ForwardInputs<'_> {
        ForwardInputs {
            input_ids: &self.input_ids,
            attention_mask: &self.attention_mask,
            position_ids: self.position_ids.as_ref(),
            pixel_values: self.pixel_values.as_ref(),
            image_grid_thw: self.image_grid_thw.as_ref(),
        }
    }
}

pub fn bench_inputs(
    cfg: &ModelConfig,
    batch: i64,
    prompt_len: i64,
    device: Device,
    kind: Kind,
) -> Result<BenchInputs> {
    // Text ids avoid every configured special token (they sit at the top of the vocabulary).
    let mut specials: Vec<i64> = cfg.eos_token_ids.clone();
    specials.extend(
        [
            cfg.bos_token_id,
            cfg.pad_token_id,
            cfg.image_token_id,
            cfg.video_token_id,
            cfg.vision_start_token_id,
            cfg.vision_end_token_id,
        ]
        .into_iter()
        .flatten(),
    );
    let text_vocab = specials
        .iter()
        .copied()
        .filter(|&s| s > 0)
        .min()
        .unwrap_or(cfg.text.vocab_size)
        .min(cfg.text.vocab_size);
    if text_vocab < 2 {
        bail!("the vocabulary leaves no room for ordinary text tokens below the special ids");
    }
    let mut ids = Tensor::randint(text_vocab, [batch, prompt_len], (Kind::Int64, Device::Cpu));
    let mask = Tensor::ones([batch, prompt_len], (Kind::Int64, Device::Cpu));
    let (mut positions, mut pixels, mut grid, mut image_tokens) = (None, None, None, 0);
    if cfg.architecture.is_multimodal() {
        let v = cfg
            .vision
            .as_ref()
            .context("vision-language config without vision_config")?;
        let (start, end, img) = match (
            cfg.vision_start_token_id,
            cfg.vision_end_token_id,
            cfg.image_token_id,
        ) {
            (Some(s), Some(e), Some(i)) => (s, e, i),
            _ => bail!(
                "the config needs vision_start_token_id, vision_end_token_id and image_token_id"
            ),
        };
        // 4x4 patches (56x56 pixels at patch 14, 64x64 at 16), merged m x m into tokens.
        let side = 4;
        let merged_side = side / v.spatial_merge_size;
        image_tokens = merged_side * merged_side;
        if prompt_len < image_tokens + 3 {
            bail!("prompt length {prompt_len} is too short for an image of {image_tokens} tokens");
        }
        let _ = ids.narrow(1, 1, 1).fill_(start);
        let _ = ids.narrow(1, 2, image_tokens).fill_(img);
        let _ = ids.narrow(1, 2 + image_tokens, 1).fill_(end);
        // M-RoPE: text counts up on all three axes; the image's tokens take
        // (t, h, w) = start + (0, row, col); text after it resumes at start + side.
        let mut pos = vec![0i64; 3 * prompt_len as usize];
        let l = prompt_len as usize;
        let first = 2usize;
        let after = first + image_tokens as usize;
        for j in 0..l {
            let (t, h, w) = if j < first {
                (j as i64, j as i64, j as i64)
            } else if j < after {
                let k = (j - first) as i64;
                let s = first as i64;
                (s, s + k / merged_side, s + k % merged_side)
            } else {
                let p = first as i64 + merged_side + (j - after) as i64;
                (p, p, p)
            };
            pos[j] = t;
            pos[l + j] = h;
            pos[2 * l + j] = w;
        }
        let one = Tensor::from_slice(&pos).view([3, 1, prompt_len]);
        positions = Some(
            one.expand([3, batch, prompt_len], true)
                .contiguous()
                .to_device(device),
        );
        let patches = side * side;
        pixels = Some(
            Tensor::randn([batch * patches, v.patch_dim()], (Kind::Float, Device::Cpu))
                .to_kind(kind)
                .to_device(device),
        );
        grid = Some(
            Tensor::from_slice(&[1, side, side])
                .view([1, 3])
                .repeat([batch, 1])
                .to_device(device),
        );
    }
    ids = ids.to_device(device);
    Ok(BenchInputs {
        input_ids: ids,
        attention_mask: mask.to_device(device),
        position_ids: positions,
        pixel_values: pixels,
        image_grid_thw: grid,
        image_tokens,
    })
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Times `f` once as a warm-up and then `reps` times; returns the median seconds.
fn time_median(reps: usize, device: Device, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    sync(device);
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        f()?;
        sync(device);
        times.push(t0.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

/// Measures prefill, decode (with temperature-1 sampling and EOS blocked, as
/// the GRPO workloads generate) and forward+backward of `token_logprobs`.
pub fn run(
    model: &LoadedModel,
    device: Device,
    kind: Kind,
    opts: &BenchOptions,
) -> Result<BenchReport> {
    if opts.batch < 1 || opts.prompt_len < 1 || opts.new_tokens < 1 {
        bail!("batch, prompt length and new tokens must all be at least 1");
    }
    let lm = model.model.as_lm();
    let cfg = &model.config;
    let inputs = bench_inputs(cfg, opts.batch, opts.prompt_len, device, kind)?;
    let fi = inputs.as_inputs();

    let prefill_s = time_median(opts.reps, device, || {
        tch::no_grad(|| lm.prefill(&fi)).map(|_| ())
    })?;

    let blocked = id_tensor(&cfg.eos_token_ids, device);
    let sampling = SamplingParams::default();
    let mut rng = SeededRng::new(opts.seed);
    // The prefill before each decode run is not timed: only the steps count.
    let mut decode_times = Vec::with_capacity(opts.reps);
    for rep in 0..=opts.reps.max(1) {
        let (mut logits, mut cache) = tch::no_grad(|| lm.prefill(&fi))?;
        // As generation does: room for every step, no per-step cache copy.
        tch::no_grad(|| cache.reserve(opts.new_tokens));
        sync(device);
        let t0 = Instant::now();
        tch::no_grad(|| -> Result<()> {
            for _ in 0..opts.new_tokens {
                let c = choose(
                    &logits,
                    &sampling,
                    (!cfg.eos_token_ids.is_empty()).then_some(&blocked),
                    &mut rng,
                )?;
                logits = lm.decode_step(&c.tokens.unsqueeze(1), &mut cache)?;
            }
            Ok(())
        })?;
        sync(device);
        if rep > 0 {
            decode_times.push(t0.elapsed().as_secs_f64());
        }
    }
    let decode_s = median(decode_times);

    let params = model.model.named_parameters();
    for (_, p) in &params {
        let _ = p.shallow_clone().set_requires_grad(true);
    }
    let targets = inputs.input_ids.roll([-1].as_slice(), [1].as_slice());
    let fwd_bwd_s = time_median(opts.reps, device, || {
        let lp = lm.token_logprobs(&fi, &targets)?;
        lp.sum(Kind::Float).backward();
        for (_, p) in &params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        Ok(())
    })?;
    for (_, p) in &params {
        let _ = p.shallow_clone().set_requires_grad(false);
    }
    Ok(BenchReport {
        prefill_s,
        decode_s,
        fwd_bwd_s,
        prefill_tokens: opts.batch * opts.prompt_len,
        decode_tokens: opts.batch * opts.new_tokens,
        fwd_bwd_tokens: opts.batch * opts.prompt_len,
        image_tokens_per_prompt: inputs.image_tokens,
    })
}
