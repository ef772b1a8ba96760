//! The planner's vision term against the measured peak of a GRPO update on
//! the tiny Qwen2.5-VL with a vision tower wide enough to matter (8 blocks
//! of width 256, random weights) and one 448x448 image per prompt (1,024
//! patches): the tower trained without and with activation checkpointing,
//! and frozen. Each update runs in a child process of its own.

use std::io::Cursor;
use std::path::Path;

use lmmhost_model::memory::{rss_follows_live_memory, run_probe};
use lmmhost_model::processor::image::ImageProcessorConfig;
use lmmhost_model::processor::{ImageInput, Message, Part};
use lmmhost_model::sampling::{SamplingParams, SeededRng};

use super::tests::{assert_planned, one_rank};
use super::*;
use crate::rl::kl::Kl;
use crate::rl::schedules::{EntropyBonus, LrDecay};
use crate::train::experiment::{Grpo, ModelInit, ModelSection, Optim, Rollout, Sft};
use crate::train::memory_plan::{PlanInputs, Shape, VisionInputs, VisionShape};
use crate::train::param_count::param_count;
use crate::train::policy::Freeze;
use crate::train::rollout::{roll_out, RolloutConfig};

const CASE: &str = "LMMHOST_VISION_PLAN_CASE";
/// The image's side in pixels, and `model.max_pixels`.
const SIDE: u32 = 448;
const PROMPTS: usize = 2;
const GROUP: usize = 4;
const RESPONSE: usize = 16;

/// The tiny Qwen2.5-VL (its tokenizer and processor) with a tower of 8
/// blocks of width 256, in `dir`.
fn vl_policy(dir: &Path, trains: bool, checkpointing: bool) -> Policy {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/models/tiny-qwen2.5-vl");
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let text = std::fs::read_to_string(src.join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    let v = &mut config["vision_config"];
    v["depth"] = 8.into();
    v["hidden_size"] = 256.into();
    v["intermediate_size"] = 1024.into();
    v["fullatt_block_indexes"] = serde_json::json!([3, 7]);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let section = ModelSection {
        init: ModelInit::Random,
        max_pixels: Some((SIDE * SIDE) as usize),
        ..ModelSection::new(dir)
    };
    let mut p = Policy::load(&section, None, 4).unwrap();
    p.activation_checkpointing = checkpointing;
    p.set_trainable(&Freeze {
        vision: !trains,
        ..Freeze::default()
    });
    p
}

/// A SIDE x SIDE PNG of a smooth pattern.
fn png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(SIDE, SIDE, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// GROUP completions of RESPONSE tokens for each of PROMPTS prompts with an image.
fn rows(p: &Policy) -> Vec<Row> {
    let convs: Vec<_> = (0..PROMPTS)
        .map(|i| {
            vec![Message {
                role: "user".into(),
                parts: vec![
                    Part::Image(ImageInput::Bytes(png())),
                    Part::Text(format!("What is drawn here, {i}?")),
                ],
            }]
        })
        .collect();
    let batch = p.processor.prepare(&convs, true).unwrap();
    let cfg = RolloutConfig {
        samples_per_prompt: GROUP,
        sampling: SamplingParams::default(),
        max_new_tokens: RESPONSE,
        min_new_tokens: RESPONSE,
        blocked_token_ids: Vec::new(),
        kv_cache_tokens: None,
    };
    roll_out(p, &batch, &cfg, &mut SeededRng::new(3), 0, None).unwrap()
}

/// What `lmmhost plan` assumes for this update: one micro-batch of all rows.
fn plan_of(p: &Policy, rows: &[Row], trains: bool) -> PlanInputs {
    let config = &p.model.config;
    let params = param_count(config).unwrap();
    let prompt = rows.iter().map(|r| r.prompt.ids.len()).max().unwrap() as u64;
    let processor = ImageProcessorConfig::default()
        .with_pixel_bounds(None, Some((SIDE * SIDE) as usize))
        .unwrap();
    let shape = VisionShape::of(config.architecture, config.vision.as_ref().unwrap());
    PlanInputs {
        params,
        adapter_params: 0,
        trainable: if trains {
            params.total()
        } else {
            params.language
        },
        precision: p.precision,
        reference_bytes: None,
        micro_batch_size: rows.len() as u64,
        workers: 1,
        update_rows: rows.len() as u64,
        row_tokens: prompt + RESPONSE as u64,
        prompt_tokens: prompt,
        response_tokens: RESPONSE as u64,
        group_size: GROUP as u64,
        activation_checkpointing: p.activation_checkpointing,
        logprob_chunk_tokens: None,
        kv_tokens: 0,
        shape: Shape::of(&config.text),
        vision: Some(VisionInputs::at_max_pixels(shape, processor, trains, prompt).unwrap()),
        ranks: 1,
        zero_stage: 0,
    }
}

fn settings(micro_batch_size: usize) -> StageSettings {
    StageSettings {
        rollout: Rollout::default(),
        optim: Optim {
            micro_batch_size,
            grad_clip: 0.0,
            ..Optim::default()
        },
        grpo: Grpo {
            kl: Kl::default(),
            ..Grpo::default()
        },
        sft: Sft::default(),
    }
}

/// Run by `planned_vision_activations_match_the_update_peak` in a process of
/// its own: one update (after a first that makes the moments and `.grad`)
/// in the case `LMMHOST_VISION_PLAN_CASE` names (`trained`, `checkpointed`,
/// `frozen`), printing the resident size's rise and the plan's.
#[test]
#[ignore = "a child process of planned_vision_activations_match_the_update_peak"]
fn vision_update_peak_probe() {
    rss_follows_live_memory();
    tch::set_num_threads(1);
    let case = std::env::var(CASE).expect(CASE);
    let (trains, ckpt) = match case.as_str() {
        "trained" => (true, false),
        "checkpointed" => (true, true),
        "frozen" => (false, false),
        other => panic!("{CASE}={other}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let p = vl_policy(dir.path(), trains, ckpt);
    let rows = rows(&p);
    assert_eq!(rows.len(), PROMPTS * GROUP);
    let patches: i64 = rows[0]
        .prompt
        .pixel_values
        .as_ref()
        .map_or(0, |t| t.size()[0]);
    assert_eq!(patches, i64::from(SIDE / 14).pow(2));
    let adv: Vec<Vec<f32>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| vec![(i % 4) as f32 - 1.5; r.response.len()])
        .collect();
    let rates = RateSchedule {
        lr: 1e-4,
        decay: LrDecay::Constant,
        warmup: 0,
        total: 0,
        min_ratio: 0.0,
        entropy: EntropyBonus::default(),
    };
    let inputs = UpdateInputs {
        rows: &rows,
        advantages: &adv,
        old_logprobs: None,
        kl: None,
        temperature: 1.0,
        rates: &rates,
    };
    let mut opt = AdamW::new([0.9, 0.999], 1e-8, 0.0);
    let s = settings(rows.len());
    update(&one_rank(), &p, &mut opt, &s, &inputs).unwrap();
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = lmmhost_model::memory::rss_bytes().unwrap();
    update(&one_rank(), &p, &mut opt, &s, &inputs).unwrap();
    let peak = lmmhost_model::memory::peak_rss_bytes().unwrap();
    let plan = plan_of(&p, &rows, trains).plan();
    println!(
        "probe case={case} rise={} planned={} vision={} decoder={}",
        peak - before,
        plan.update,
        plan.vision_activations,
        plan.activations
    );
}

/// The update's planned transients (the decoder's and the tower's
/// activations, the gradients in flight) within 15 % of the measured peak
/// rise, with the tower trained, trained with activation checkpointing,
/// and frozen (its one-block pass then outweighs the tiny decoder's
/// activations); without the tower's term each plan would fall short by
/// more than 15 %. Measured on an AMD EPYC: -0.8, -1.0 and +1.3 %.
#[test]
fn planned_vision_activations_match_the_update_peak() {
    for case in ["trained", "checkpointed", "frozen"] {
        let v = run_probe(
            "train::step::update::vision_tests::vision_update_peak_probe",
            &[(CASE, case.to_owned())],
            "probe case=",
        );
        let (rise, planned, vision) = (v["rise"], v["planned"], v["vision"]);
        eprintln!("{case}: the tower's activations {:.1} MB", vision / 1e6);
        assert_planned(&format!("update, vision {case}"), planned, rise);
        // Without the tower's term the plan would miss the peak.
        assert!(
            (planned - vision) / rise < 0.85,
            "{case}: the tower's part {vision} B of {planned} B planned"
        );
    }
}
