//! Generation on the transformers fixtures (scripts/fixtures/make_model_fixtures.py):
//! greedy output equals `generate(do_sample=False)` token for token, group
//! sampling shares one prefill per prompt, and seeded sampling reproduces.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lmmhost_model::checkpoint;
use lmmhost_model::generate::{generate, FinishReason, GenerateConfig, Generation, PromptBatch};
use lmmhost_model::lm::ForwardInputs;
use lmmhost_model::sampling::{SamplingParams, SeededRng};
use tch::{Device, Kind, Tensor};

fn fixture_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/model")
        .join(case)
}

struct Case {
    model: checkpoint::LoadedModel,
    io: HashMap<String, Tensor>,
}

impl Case {
    fn load(case: &str, checkpoint_case: &str) -> Case {
        let io: HashMap<String, Tensor> =
            Tensor::read_safetensors(fixture_dir(case).join("io.safetensors"))
                .unwrap()
                .into_iter()
                .collect();
        let model = checkpoint::load(
            &fixture_dir(checkpoint_case).join("checkpoint"),
            Device::Cpu,
            Kind::Float,
        )
        .unwrap();
        Case { model, io }
    }

    fn inputs(&self) -> ForwardInputs<'_> {
        ForwardInputs {
            input_ids: &self.io["input_ids"],
            attention_mask: &self.io["attention_mask"],
            position_ids: self.io.get("position_ids"),
            pixel_values: self.io.get("pixel_values"),
            image_grid_thw: self.io.get("image_grid_thw"),
        }
    }

    fn pad(&self) -> i64 {
        self.io["pad_token_id"].int64_value(&[0])
    }

    fn greedy_cfg(&self, max_new: usize, n: usize) -> GenerateConfig {
        GenerateConfig {
            sampling: SamplingParams::greedy(),
            max_new_tokens: max_new,
            stop_token_ids: Vec::<i64>::try_from(&self.io["eos_token_ids"]).unwrap(),
            samples_per_prompt: n,
            pad_token_id: self.pad(),
            ..Default::default()
        }
    }

    /// transformers' new tokens `[B, S]` (S <= 8: it stops once all rows finished).
    fn expected(&self) -> Vec<Vec<i64>> {
        let l = self.io["input_ids"].size()[1];
        let g = &self.io["generated"];
        let s = g.size()[1] - l;
        Vec::<Vec<i64>>::try_from(g.narrow(1, l, s)).unwrap()
    }

    fn run(&self, cfg: &GenerateConfig, seed: u64) -> Generation {
        generate(
            self.model.model.as_lm(),
            &self.inputs(),
            cfg,
            &mut SeededRng::new(seed),
            None,
        )
        .unwrap()
    }
}

fn check_greedy_parity(case: &str, checkpoint_case: &str) {
    let c = Case::load(case, checkpoint_case);
    let want = c.expected();
    let g = c.run(&c.greedy_cfg(8, 1), 0);
    let got = Vec::<Vec<i64>>::try_from(&g.tokens).unwrap();
    assert_eq!(g.steps, want[0].len(), "{case}: steps");
    assert_eq!(got, want, "{case}: greedy tokens differ from transformers");
    // The completions stop at the first stop token and keep it.
    let stops = Vec::<i64>::try_from(&c.io["eos_token_ids"]).unwrap();
    for (comp, row) in g.completions.iter().zip(&want) {
        match row.iter().position(|t| stops.contains(t)) {
            Some(i) => {
                assert_eq!(comp.token_ids, row[..=i].to_vec());
                assert_eq!(comp.finish, FinishReason::Stop(row[i]));
            }
            None => {
                assert_eq!(&comp.token_ids, row);
                assert_eq!(comp.finish, FinishReason::Length);
            }
        }
        assert_eq!(comp.logprobs.len(), comp.token_ids.len());
        assert!(comp.logprobs.iter().all(|&x| x <= 0.0 && x.is_finite()));
    }
}

#[test]
fn greedy_matches_transformers_text_left_padded() {
    let c = Case::load("a_text_qwen2", "a_text_qwen2");
    // The fixture is built so that rows finish at different steps.
    let want = c.expected();
    let stops = Vec::<i64>::try_from(&c.io["eos_token_ids"]).unwrap();
    let finish: Vec<Option<usize>> = want
        .iter()
        .map(|r| r.iter().position(|t| stops.contains(t)))
        .collect();
    assert!(
        finish.iter().any(|f| f.is_some()) && finish.iter().any(|f| f != &finish[0]),
        "{finish:?}"
    );
    check_greedy_parity("a_text_qwen2", "a_text_qwen2");
}

#[test]
fn greedy_matches_transformers_one_image() {
    check_greedy_parity("b_vl_one_image", "b_vl_one_image");
}

#[test]
fn greedy_matches_transformers_two_images_and_text_only_row() {
    check_greedy_parity("c_vl_two_images", "e_vl_sharded_newkeys");
}

#[test]
fn greedy_matches_transformers_vision_windows() {
    check_greedy_parity("d_vl_windows", "d_vl_windows");
}

#[test]
fn greedy_matches_transformers_qwen3() {
    check_greedy_parity("f_text_qwen3", "f_text_qwen3");
    check_greedy_parity("g_qwen3_vl_one_image", "g_qwen3_vl_one_image");
    check_greedy_parity("h_qwen3_vl_two_images", "g_qwen3_vl_one_image");
}

#[test]
fn greedy_groups_equal_the_single_sample() {
    for (case, ckpt) in [
        ("a_text_qwen2", "a_text_qwen2"),
        ("c_vl_two_images", "e_vl_sharded_newkeys"),
        ("h_qwen3_vl_two_images", "g_qwen3_vl_one_image"),
    ] {
        let c = Case::load(case, ckpt);
        let one = c.run(&c.greedy_cfg(8, 1), 0);
        let n = 3;
        let g = c.run(&c.greedy_cfg(8, n), 0);
        assert_eq!(g.completions.len(), one.completions.len() * n);
        for (r, comp) in g.completions.iter().enumerate() {
            let base = &one.completions[r / n];
            assert_eq!(comp.token_ids, base.token_ids, "{case} row {r}");
            for (a, b) in comp.logprobs.iter().zip(&base.logprobs) {
                assert!(
                    (a - b).abs() < 1e-4,
                    "{case} row {r}: {:?} vs {:?}",
                    comp.logprobs,
                    base.logprobs
                );
            }
        }
    }
}

/// Repeating the prefilled cache n times gives the same next-step logits as
/// prefilling the n-times repeated prompts (what the group sharing saves).
#[test]
fn repeated_cache_equals_repeated_prefill() {
    let c = Case::load("c_vl_two_images", "e_vl_sharded_newkeys");
    let lm = c.model.model.as_lm();
    let n = 2;
    let (logits, cache) = tch::no_grad(|| lm.prefill(&c.inputs())).unwrap();
    let mut cache = cache.repeat_rows(n);
    let next = logits
        .argmax(-1, false)
        .repeat_interleave_self_int(n, 0, None::<i64>);
    let shared = tch::no_grad(|| lm.decode_step(&next.unsqueeze(1), &mut cache)).unwrap();

    // The same prompts listed n times each, images too.
    let rep = |t: &Tensor, dim: i64| t.repeat_interleave_self_int(n, dim, None::<i64>);
    let ids = rep(&c.io["input_ids"], 0);
    let mask = rep(&c.io["attention_mask"], 0);
    let pos = rep(&c.io["position_ids"], 1);
    // Images belong to sample 0 only: repeat its patches and grid rows.
    let pix = &c.io["pixel_values"];
    let grid = &c.io["image_grid_thw"];
    let pix2 = Tensor::cat(&[pix, pix], 0);
    let grid2 = Tensor::cat(&[grid, grid], 0);
    let inputs = ForwardInputs {
        input_ids: &ids,
        attention_mask: &mask,
        position_ids: Some(&pos),
        pixel_values: Some(&pix2),
        image_grid_thw: Some(&grid2),
    };
    let (_, mut cache2) = tch::no_grad(|| lm.prefill(&inputs)).unwrap();
    let full = tch::no_grad(|| lm.decode_step(&next.unsqueeze(1), &mut cache2)).unwrap();
    let diff = (&shared - &full).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "max diff {diff}");
}

#[test]
fn seeded_sampling_reproduces_and_stays_in_the_nucleus() {
    let c = Case::load("a_text_qwen2", "a_text_qwen2");
    let cfg = GenerateConfig {
        sampling: SamplingParams {
            temperature: 0.9,
            top_k: Some(20),
            top_p: Some(0.95),
            greedy: false,
        },
        samples_per_prompt: 4,
        max_new_tokens: 12,
        min_new_tokens: 12,
        ..c.greedy_cfg(12, 4)
    };
    let mut rng = SeededRng::new(77);
    let a = generate(c.model.model.as_lm(), &c.inputs(), &cfg, &mut rng, None).unwrap();
    let after = rng.state();
    let b = c.run(&cfg, 77);
    for (x, y) in a.completions.iter().zip(&b.completions) {
        assert_eq!(x.token_ids, y.token_ids);
        // min_new_tokens = max_new_tokens: every completion has exactly 12 tokens.
        assert_eq!(x.token_ids.len(), 12);
        assert_eq!(x.finish, FinishReason::Length);
    }
    // The 4 samples of a prompt differ (random model, 12 tokens each).
    let distinct: std::collections::HashSet<_> = a.completions[..4]
        .iter()
        .map(|x| x.token_ids.clone())
        .collect();
    assert!(distinct.len() > 1);
    // Resuming from the saved state continues the same stream.
    let mut r1 = SeededRng::from_state(after).unwrap();
    let mut r2 = SeededRng::from_state(after).unwrap();
    let x = generate(c.model.model.as_lm(), &c.inputs(), &cfg, &mut r1, None).unwrap();
    let y = generate(c.model.model.as_lm(), &c.inputs(), &cfg, &mut r2, None).unwrap();
    assert_eq!(x.tokens.size(), y.tokens.size());
    assert_eq!(
        Vec::<Vec<i64>>::try_from(&x.tokens).unwrap(),
        Vec::<Vec<i64>>::try_from(&y.tokens).unwrap()
    );
    assert_ne!(
        Vec::<Vec<i64>>::try_from(&x.tokens).unwrap(),
        Vec::<Vec<i64>>::try_from(&a.tokens).unwrap()
    );

    // Log-probs equal the model's log_softmax(logits / T) at each sampled token
    // (recomputed with a full forward over prompt + completion).
    let comp = &a.completions[0];
    let prompt_ids = c.io["input_ids"].get(0);
    let prompt_mask = c.io["attention_mask"].get(0);
    let new_ids = Tensor::from_slice(&comp.token_ids);
    let ids = Tensor::cat(&[&prompt_ids, &new_ids], 0).unsqueeze(0);
    let mask = Tensor::cat(&[&prompt_mask, &new_ids.ones_like()], 0).unsqueeze(0);
    let inputs = ForwardInputs {
        input_ids: &ids,
        attention_mask: &mask,
        position_ids: None,
        pixel_values: None,
        image_grid_thw: None,
    };
    let logits = tch::no_grad(|| c.model.model.as_lm().forward(&inputs)).unwrap();
    let l = prompt_ids.size()[0];
    let lp = (logits.get(0).narrow(0, l - 1, 12) / 0.9)
        .log_softmax(-1, Kind::Float)
        .gather(1, &new_ids.unsqueeze(1), false)
        .squeeze_dim(1);
    let want = Vec::<f32>::try_from(&lp).unwrap();
    for (g, w) in comp.logprobs.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4, "{:?} vs {want:?}", comp.logprobs);
    }
}

/// Two and three decode workers (row chunks on their own threads) give the
/// same samples as one, for a text batch and for images next to a text-only
/// row, and greedy still equals transformers.
#[test]
fn workers_decode_the_same_completions() {
    for (case, ckpt) in [
        ("a_text_qwen2", "a_text_qwen2"),
        ("c_vl_two_images", "b_vl_one_image"),
    ] {
        let c = Case::load(case, ckpt);
        let sampled = GenerateConfig {
            sampling: SamplingParams::default(),
            ..c.greedy_cfg(10, 3)
        };
        for cfg in [sampled, c.greedy_cfg(8, 1)] {
            let one = c.run(&cfg, 5);
            for workers in [2, 3] {
                let g = c.run(
                    &GenerateConfig {
                        workers,
                        ..cfg.clone()
                    },
                    5,
                );
                assert_eq!(g.steps, one.steps, "{case}, {workers} workers");
                assert!(
                    g.tokens.equal(&one.tokens),
                    "{case}, {workers} workers: tokens"
                );
                let d = (&g.logprobs - &one.logprobs).abs().max().double_value(&[]);
                assert!(
                    d < 1e-5,
                    "{case}, {workers} workers: log-probs differ by {d}"
                );
            }
        }
        let g = c.run(
            &GenerateConfig {
                workers: 2,
                ..c.greedy_cfg(8, 1)
            },
            0,
        );
        assert_eq!(Vec::<Vec<i64>>::try_from(&g.tokens).unwrap(), c.expected());
    }
}

/// The engine gives the same samples under any KV budget (down to one row
/// at a time), on one or two workers, for text, Qwen2.5-VL images next to a
/// text-only row, and Qwen3-VL; and a text batch in another order gives
/// each prompt (by its key) the same samples.
#[test]
fn budgets_workers_and_batch_order_give_the_same_samples() {
    for (case, ckpt) in [
        ("a_text_qwen2", "a_text_qwen2"),
        ("c_vl_two_images", "b_vl_one_image"),
        ("h_qwen3_vl_two_images", "g_qwen3_vl_one_image"),
    ] {
        let c = Case::load(case, ckpt);
        let cfg = GenerateConfig {
            sampling: SamplingParams::default(),
            ..c.greedy_cfg(10, 3)
        };
        let one = c.run(&cfg, 11);
        let l = c.io["input_ids"].size()[1] as usize;
        for (budget, workers) in [(l + 9, 1), (2 * l + 27, 1), (l + 9, 2), (4 * (l + 9), 2)] {
            let g = c.run(
                &GenerateConfig {
                    kv_cache_tokens: Some(budget * workers),
                    workers,
                    ..cfg.clone()
                },
                11,
            );
            let what = format!("{case}, budget {budget} x {workers} workers");
            assert!(
                g.stats.kv_tokens <= budget * workers,
                "{what}: {:?}",
                g.stats
            );
            assert_eq!(g.steps, one.steps, "{what}");
            assert!(g.tokens.equal(&one.tokens), "{what}: tokens");
            let d = (&g.logprobs - &one.logprobs).abs().max().double_value(&[]);
            assert!(d < 1e-4, "{what}: log-probs differ by {d}");
        }
        if case != "a_text_qwen2" {
            continue;
        }
        let b = c.io["input_ids"].size()[0];
        let rev = Tensor::arange(b, (Kind::Int64, Device::Cpu)).flip([0]);
        let keys: Vec<u64> = (0..b as u64).rev().collect();
        let (ids, mask) = (
            c.io["input_ids"].index_select(0, &rev),
            c.io["attention_mask"].index_select(0, &rev),
        );
        let inputs = ForwardInputs {
            input_ids: &ids,
            attention_mask: &mask,
            position_ids: None,
            pixel_values: None,
            image_grid_thw: None,
        };
        let batch = PromptBatch {
            inputs,
            images_per_prompt: None,
            keys: Some(&keys),
        };
        let lm = c.model.model.as_lm();
        let g = generate(lm, batch, &cfg, &mut SeededRng::new(11), None).unwrap();
        for comp in &g.completions {
            let key = keys[comp.prompt_index] as usize;
            let base = &one.completions[key * 3 + comp.sample_index];
            assert_eq!(comp.token_ids, base.token_ids, "prompt {key} reordered");
        }
    }
}

/// `lmmhost logits` end to end on the text fixture: token-id prompts in JSONL,
/// logits and greedy continuation equal transformers' in the written file.
#[test]
fn logits_command_matches_the_fixture() {
    use lmmhost_model::parity_dump;
    let c = Case::load("a_text_qwen2", "a_text_qwen2");
    let dir = tempfile::tempdir().unwrap();
    let ids = Vec::<Vec<i64>>::try_from(&c.io["input_ids"]).unwrap();
    let mask = Vec::<Vec<i64>>::try_from(&c.io["attention_mask"]).unwrap();
    let mut jsonl = String::new();
    for (r, m) in ids.iter().zip(&mask) {
        let real: Vec<i64> = r
            .iter()
            .zip(m)
            .filter(|(_, &m)| m == 1)
            .map(|(&t, _)| t)
            .collect();
        jsonl += &format!("{}\n", serde_json::json!({ "input_ids": real }));
    }
    let prompts = dir.path().join("prompts.jsonl");
    std::fs::write(&prompts, jsonl).unwrap();
    let out = dir.path().join("sub/out.safetensors");
    let ckpt = fixture_dir("a_text_qwen2").join("checkpoint");
    let dump = parity_dump::run(&ckpt, &prompts, &out, 8, Device::Cpu, Kind::Float).unwrap();
    assert_eq!(dump.prompt_lens, vec![13, 7, 10]);
    let file: HashMap<String, Tensor> = Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(Vec::<Vec<i64>>::try_from(&file["input_ids"]).unwrap(), ids);
    assert_eq!(
        Vec::<Vec<i64>>::try_from(&file["attention_mask"]).unwrap(),
        mask
    );
    // Logits at real positions (padding positions carry no meaning).
    let m = c.io["attention_mask"].unsqueeze(-1).to_kind(Kind::Float);
    let diff = ((&file["logits"] - &c.io["logits"]) * m)
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-4, "logits differ from transformers by {diff}");
    // Greedy: transformers' tokens, padded to 8 columns with the pad id.
    let want = c.expected();
    let got = Vec::<Vec<i64>>::try_from(&file["greedy_tokens"]).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.len(), 8);
        assert_eq!(&g[..w.len()], w.as_slice());
        assert!(g[w.len()..].iter().all(|&t| t == c.pad()));
    }
    // Bad input names the line.
    std::fs::write(
        &prompts,
        "{\"input_ids\": [1, 2]}\n{\"input_ids\": [1, \"x\"]}\n",
    )
    .unwrap();
    let err = parity_dump::run(&ckpt, &prompts, &out, 2, Device::Cpu, Kind::Float)
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("prompts.jsonl:2: input_ids[1] is not an integer"),
        "{err:#}"
    );
    std::fs::write(&prompts, "{\"input_ids\": [1, 999999]}\n").unwrap();
    let err = parity_dump::run(&ckpt, &prompts, &out, 2, Device::Cpu, Kind::Float)
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("outside the vocabulary"),
        "{err:#}"
    );
}

/// The benchmark's random models load through the checkpoint path with every
/// tensor used, and every measurement runs.
#[test]
fn bench_presets_build_and_measure() {
    use lmmhost_model::bench;
    for preset in ["w1", "w2"] {
        let m = bench::random_model(preset, Device::Cpu, Kind::Float, 0).unwrap();
        assert!(
            m.source.unused.is_empty(),
            "{preset}: unused tensors {:?}",
            m.source.unused
        );
        let opts = bench::BenchOptions {
            batch: 2,
            prompt_len: 12,
            new_tokens: 3,
            reps: 1,
            seed: 0,
        };
        let r = bench::run(&m, Device::Cpu, Kind::Float, &opts).unwrap();
        assert!(
            r.prefill_s > 0.0 && r.decode_s > 0.0 && r.fwd_bwd_s > 0.0,
            "{r:?}"
        );
        assert_eq!((r.prefill_tokens, r.decode_tokens), (24, 6));
        assert_eq!(
            r.image_tokens_per_prompt,
            if preset == "w2" { 4 } else { 0 }
        );
    }
    assert!(bench::random_model("w9", Device::Cpu, Kind::Float, 0).is_err());
}

/// W2's sizes as Qwen3-VL, and the tiny Qwen3-VL config, run every measurement.
#[test]
fn bench_runs_qwen3_vl() {
    use lmmhost_model::bench;
    let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/models/tiny-qwen3-vl");
    for config in ["w2-qwen3-vl", tiny.to_str().unwrap()] {
        let m = bench::random_model(config, Device::Cpu, Kind::Float, 0).unwrap();
        assert!(
            m.source.unused.is_empty(),
            "{config}: {:?}",
            m.source.unused
        );
        assert!(m.config.architecture.is_multimodal());
        let opts = bench::BenchOptions {
            batch: 2,
            prompt_len: 12,
            new_tokens: 3,
            reps: 1,
            seed: 0,
        };
        let r = bench::run(&m, Device::Cpu, Kind::Float, &opts).unwrap();
        assert!(r.prefill_s > 0.0 && r.decode_s > 0.0 && r.fwd_bwd_s > 0.0);
        assert_eq!(r.image_tokens_per_prompt, 4, "{config}");
    }
}

#[test]
fn chat_prompt_rows_parse_with_images_relative_to_the_file() {
    use lmmhost_model::processor::{ImageInput, Part};
    use lmmhost_model::prompt_file::{read_prompt_file, PromptFile};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.jsonl");
    let rows = [
        serde_json::json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "image", "image": "imgs/a.png"},
                {"type": "text", "text": "What is shown?"},
                {"type": "image_url", "image_url": {"url": "file://b.jpg"}}
            ]}
        ]}),
        serde_json::json!({"messages": [{"role": "user", "content": "2+2?"}]}),
    ];
    std::fs::write(
        &path,
        rows.iter().map(|r| format!("{r}\n")).collect::<String>(),
    )
    .unwrap();
    let PromptFile::Chats(chats) = read_prompt_file(&path).unwrap() else {
        panic!("expected chat rows")
    };
    assert_eq!(chats.len(), 2);
    assert_eq!(chats[0][0].role, "system");
    assert_eq!(
        chats[0][1].parts,
        vec![
            Part::Image(ImageInput::Path(dir.path().join("imgs/a.png"))),
            Part::Text("What is shown?".into()),
            Part::Image(ImageInput::Path(dir.path().join("b.jpg"))),
        ]
    );
    assert_eq!(chats[1][0].parts, vec![Part::Text("2+2?".into())]);
    // Errors name the line and the part.
    std::fs::write(
        &path,
        "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"video\"}]}]}\n",
    )
    .unwrap();
    let err = format!("{:#}", read_prompt_file(&path).err().unwrap());
    assert!(
        err.contains("p.jsonl:1")
            && err.contains("messages[0].content[0]")
            && err.contains("\"video\""),
        "{err}"
    );
    std::fs::write(
        &path,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n{\"input_ids\": [1]}\n",
    )
    .unwrap();
    assert!(format!("{:#}", read_prompt_file(&path).err().unwrap()).contains("mixes"));
}
