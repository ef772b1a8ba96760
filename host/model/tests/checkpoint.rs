//! Checkpoint directories in and out: round trip, key layouts, sharding,
//! dtype, companion files, and the errors a user sees for broken inputs.

use std::path::{Path, PathBuf};

use lmmhost_model::checkpoint::{self, KeyLayout, SaveOptions};
use lmmhost_model::lm::{CausalLm, ForwardInputs};
use tch::{Device, Kind, Tensor};

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/model")
        .join(case)
}

fn ckpt(case: &str) -> PathBuf {
    fixture(case).join("checkpoint")
}

fn keys(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            for (k, _) in Tensor::read_safetensors(&p).unwrap() {
                out.push(k);
            }
        }
    }
    out.sort();
    out
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
}

fn assert_same_params(a: &checkpoint::LoadedModel, b: &checkpoint::LoadedModel) {
    let pa = a.model.named_parameters();
    let pb = b.model.named_parameters();
    assert_eq!(pa.len(), pb.len());
    for ((na, ta), (nb, tb)) in pa.iter().zip(&pb) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} changed in the round trip");
    }
}

#[test]
fn round_trip_keeps_weights_layout_and_files() {
    for case in ["a_text_qwen2", "b_vl_one_image", "e_vl_sharded_newkeys"] {
        let src = ckpt(case);
        let a = checkpoint::load(&src, Device::Cpu, Kind::Float).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("saved");
        checkpoint::save(&a, &out, &SaveOptions::default()).unwrap();
        // Same keys as the input (layout kept, tied lm_head left out as transformers does).
        assert_eq!(keys(&out), keys(&src), "{case}: key set changed");
        assert_eq!(
            std::fs::read(out.join("config.json")).unwrap(),
            std::fs::read(src.join("config.json")).unwrap()
        );
        assert!(out.join("generation_config.json").exists());
        let b = checkpoint::load(&out, Device::Cpu, Kind::Float).unwrap();
        assert_eq!(a.source.layout, b.source.layout);
        assert_same_params(&a, &b);
        // safetensors metadata {"format": "pt"} is what transformers checks.
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(
            meta.metadata()
                .as_ref()
                .and_then(|m| m.get("format"))
                .map(String::as_str),
            Some("pt")
        );
    }
}

#[test]
fn layouts_are_detected_and_kept() {
    let legacy = checkpoint::load(&ckpt("b_vl_one_image"), Device::Cpu, Kind::Float).unwrap();
    assert_eq!(legacy.source.layout, KeyLayout::Published);
    let k = keys(&ckpt("b_vl_one_image"));
    assert!(
        k.iter().any(|k| k.starts_with("visual.blocks."))
            && k.contains(&"lm_head.weight".to_string())
    );
    let nested = checkpoint::load(&ckpt("e_vl_sharded_newkeys"), Device::Cpu, Kind::Float).unwrap();
    assert_eq!(nested.source.layout, KeyLayout::Nested);
    // Same model in both layouts: identical parameters.
    assert_same_params(&legacy, &nested);
    assert_eq!(
        KeyLayout::Nested.file_key("model.layers.0.mlp.up_proj.weight"),
        "model.language_model.layers.0.mlp.up_proj.weight"
    );
    assert_eq!(
        KeyLayout::Nested.file_key("visual.merger.ln_q.weight"),
        "model.visual.merger.ln_q.weight"
    );
    assert_eq!(
        KeyLayout::Nested.file_key("lm_head.weight"),
        "lm_head.weight"
    );
    // Tied text model: lm_head shares the embedding.
    let tied = checkpoint::load(&ckpt("a_text_qwen2"), Device::Cpu, Kind::Float).unwrap();
    assert!(tied.config.text.tie_word_embeddings);
    assert!(!tied
        .model
        .named_parameters()
        .iter()
        .any(|(n, _)| n == "lm_head.weight"));
}

#[test]
fn sharded_save_and_dtype() {
    let a = checkpoint::load(&ckpt("b_vl_one_image"), Device::Cpu, Kind::Float).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sharded");
    let opts = SaveOptions {
        max_shard_bytes: 200_000,
        dtype: None,
    };
    checkpoint::save(&a, &out, &opts).unwrap();
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let files: std::collections::BTreeSet<&str> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(files.len() >= 3, "{files:?}");
    assert!(!out.join("model.safetensors").exists());
    let b = checkpoint::load(&out, Device::Cpu, Kind::Float).unwrap();
    assert_same_params(&a, &b);

    // bf16 on request; loading it back as f32 gives the bf16-rounded weights.
    let out16 = tmp.path().join("bf16");
    checkpoint::save(
        &a,
        &out16,
        &SaveOptions {
            dtype: Some(Kind::BFloat16),
            ..Default::default()
        },
    )
    .unwrap();
    let t = Tensor::read_safetensors(out16.join("model.safetensors")).unwrap();
    assert!(t.iter().all(|(_, t)| t.kind() == Kind::BFloat16));
    let c = checkpoint::load(&out16, Device::Cpu, Kind::Float).unwrap();
    for ((n, x), (_, y)) in a
        .model
        .named_parameters()
        .iter()
        .zip(c.model.named_parameters().iter())
    {
        assert!(
            x.to_kind(Kind::BFloat16).to_kind(Kind::Float).equal(y),
            "{n}"
        );
    }
    // Loading a bf16 checkpoint keeps bf16 as the dtype to save back in.
    let out_back = tmp.path().join("back");
    checkpoint::save(&c, &out_back, &SaveOptions::default()).unwrap();
    let t = Tensor::read_safetensors(out_back.join("model.safetensors")).unwrap();
    assert!(t.iter().all(|(_, t)| t.kind() == Kind::BFloat16));
}

#[test]
fn companion_files_are_copied_and_source_is_not_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    copy_dir(&ckpt("a_text_qwen2"), &src);
    std::fs::write(src.join("tokenizer.json"), "{\"fake\": true}").unwrap();
    std::fs::write(src.join("chat_template.jinja"), "{{ x }}").unwrap();
    let a = checkpoint::load(&src, Device::Cpu, Kind::Float).unwrap();
    let out = tmp.path().join("out");
    checkpoint::save(&a, &out, &SaveOptions::default()).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("tokenizer.json")).unwrap(),
        "{\"fake\": true}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("chat_template.jinja")).unwrap(),
        "{{ x }}"
    );
    let err = checkpoint::save(&a, &src, &SaveOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refusing to overwrite the source checkpoint"),
        "{err}"
    );
}

#[test]
fn trained_weights_are_what_gets_saved() {
    let a = checkpoint::load(&ckpt("a_text_qwen2"), Device::Cpu, Kind::Float).unwrap();
    // An in-place update as an optimizer step makes it.
    tch::no_grad(|| {
        for (_, mut p) in a.model.named_parameters() {
            let _ = p.g_add_scalar_(0.5);
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    checkpoint::save(&a, tmp.path(), &SaveOptions::default()).unwrap();
    let b = checkpoint::load(tmp.path(), Device::Cpu, Kind::Float).unwrap();
    assert_same_params(&a, &b);
    let orig = checkpoint::load(&ckpt("a_text_qwen2"), Device::Cpu, Kind::Float).unwrap();
    let (n, x) = &orig.model.named_parameters()[0];
    let (_, y) = &b.model.named_parameters()[0];
    assert!((y - x - 0.5).abs().max().double_value(&[]) < 1e-6, "{n}");
}

// ---- errors ----

fn load_err(dir: &Path) -> String {
    match checkpoint::load(dir, Device::Cpu, Kind::Float) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn missing_directory_and_files() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load_err(&tmp.path().join("nope"));
    assert!(err.contains("nope/config.json"), "{err}");
    let d = tmp.path().join("noweights");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(
        ckpt("a_text_qwen2").join("config.json"),
        d.join("config.json"),
    )
    .unwrap();
    let err = load_err(&d);
    assert!(
        err.contains("no model.safetensors or model.safetensors.index.json")
            && err.contains("noweights"),
        "{err}"
    );
    // An index naming a shard that is not there.
    let s = tmp.path().join("shardmissing");
    copy_dir(&ckpt("e_vl_sharded_newkeys"), &s);
    std::fs::remove_file(s.join("model-00002-of-00003.safetensors")).unwrap();
    let err = load_err(&s);
    assert!(err.contains("model-00002-of-00003.safetensors"), "{err}");
}

#[test]
fn corrupt_weight_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("corrupt");
    copy_dir(&ckpt("a_text_qwen2"), &d);
    let f = d.join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(&d);
    assert!(
        err.contains("model.safetensors is not a valid safetensors file"),
        "{err}"
    );
    std::fs::write(&f, b"garbage").unwrap();
    let err = load_err(&d);
    assert!(err.contains("corrupt/model.safetensors"), "{err}");
    std::fs::write(d.join("config.json"), "{\"architectures\": [").unwrap();
    let err = load_err(&d);
    assert!(err.contains("config.json is not valid JSON"), "{err}");
}

#[test]
fn wrong_shape_missing_tensor_and_unknown_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("shape");
    copy_dir(&ckpt("a_text_qwen2"), &d);
    let mut t = Tensor::read_safetensors(d.join("model.safetensors")).unwrap();
    for (k, v) in t.iter_mut() {
        if k == "model.layers.1.self_attn.k_proj.weight" {
            *v = Tensor::zeros([16, 64], (Kind::Float, Device::Cpu));
        }
    }
    Tensor::write_safetensors(&t, d.join("model.safetensors")).unwrap();
    let err = load_err(&d);
    assert!(
        err.contains("tensor model.layers.1.self_attn.k_proj.weight")
            && err.contains("shape/model.safetensors")
            && err.contains("[16, 64]")
            && err.contains("expected [32, 64]"),
        "{err}"
    );

    let t: Vec<(String, Tensor)> =
        Tensor::read_safetensors(ckpt("a_text_qwen2").join("model.safetensors"))
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k != "model.norm.weight")
            .collect();
    Tensor::write_safetensors(&t, d.join("model.safetensors")).unwrap();
    let err = load_err(&d);
    assert!(err.contains("tensor model.norm.weight is missing"), "{err}");

    let cfg = std::fs::read_to_string(d.join("config.json"))
        .unwrap()
        .replace("Qwen2ForCausalLM", "MistralForCausalLM");
    std::fs::write(d.join("config.json"), cfg).unwrap();
    let err = load_err(&d);
    assert!(
        err.contains("unsupported architecture \"MistralForCausalLM\""),
        "{err}"
    );
}

#[test]
fn untied_checkpoint_without_lm_head_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("nohead");
    copy_dir(&ckpt("b_vl_one_image"), &d);
    let t: Vec<(String, Tensor)> = Tensor::read_safetensors(d.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k != "lm_head.weight")
        .collect();
    Tensor::write_safetensors(&t, d.join("model.safetensors")).unwrap();
    let err = load_err(&d);
    assert!(err.contains("tensor lm_head.weight is missing"), "{err}");
}

#[test]
fn loaded_model_runs_through_the_trait_object() {
    let a = checkpoint::load(&ckpt("a_text_qwen2"), Device::Cpu, Kind::Float).unwrap();
    let ids = Tensor::from_slice(&[3i64, 4, 5]).reshape([1, 3]);
    let mask = ids.ones_like();
    let inputs = ForwardInputs {
        input_ids: &ids,
        attention_mask: &mask,
        position_ids: None,
        pixel_values: None,
        image_grid_thw: None,
    };
    let lm: &dyn CausalLm = &a.model;
    let logits = tch::no_grad(|| lm.forward(&inputs)).unwrap();
    assert_eq!(logits.size(), vec![1, 3, 300]);
}

/// The Python half of the round trip: a directory written here loads with
/// transformers' `from_pretrained` (every key mapped, none left over) and
/// reproduces the fixture logits. Python is the fixture venv that
/// scripts/setup.sh installs (`.venv-fixtures`, transformers from PyPI).
#[test]
fn rust_saved_checkpoint_loads_in_transformers() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv-fixtures/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh (it installs the fixture venv)",
        python.display()
    );
    let script = root.join("scripts/fixtures/make_model_fixtures.py");
    let tmp = tempfile::tempdir().unwrap();
    // Published layout (text, tied), nested layout (VL, untied), a sharded
    // save; Qwen3 text, Qwen3-VL read from the flat layout (written back in
    // the one transformers reads), Qwen3-VL tied and sharded.
    let flat = tmp.path().join("flat_qwen3_vl");
    write_flat_layout(&ckpt("g_qwen3_vl_one_image"), &flat);
    let cases = [
        (ckpt("a_text_qwen2"), "a_text_qwen2", 5_000_000_000u64),
        (
            ckpt("e_vl_sharded_newkeys"),
            "e_vl_sharded_newkeys",
            5_000_000_000,
        ),
        (ckpt("b_vl_one_image"), "b_vl_one_image", 200_000),
        (ckpt("f_text_qwen3"), "f_text_qwen3", 5_000_000_000),
        (flat, "g_qwen3_vl_one_image", 5_000_000_000),
        (
            ckpt("i_qwen3_vl_sharded_tied"),
            "i_qwen3_vl_sharded_tied",
            50_000,
        ),
    ];
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(&script).arg("--check-rust-saved");
    for (i, (src, io_case, shard)) in cases.iter().enumerate() {
        let a = checkpoint::load(src, Device::Cpu, Kind::Float).unwrap();
        let out = tmp.path().join(format!("{i}_{io_case}"));
        let opts = SaveOptions {
            max_shard_bytes: *shard,
            dtype: None,
        };
        checkpoint::save(&a, &out, &opts).unwrap();
        cmd.arg(&out).arg(io_case);
    }
    // One Python process for all: importing transformers dominates.
    let o = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let checked: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("from_pretrained OK"))
        .collect();
    eprintln!("{}", checked.join("\n"));
    assert!(
        o.status.success(),
        "transformers could not load a saved dir:\n{text}"
    );
    assert_eq!(checked.len(), cases.len(), "{text}");
}

/// Writes the Qwen3-VL checkpoint `src` (transformers' module layout) into
/// `dst` in the flat layout of older conversions: `model.*` and `visual.*`.
fn write_flat_layout(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    let mut tensors = Vec::new();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            for (k, t) in Tensor::read_safetensors(&p).unwrap() {
                let k = if let Some(rest) = k.strip_prefix("model.language_model.") {
                    format!("model.{rest}")
                } else if let Some(rest) = k.strip_prefix("model.visual.") {
                    format!("visual.{rest}")
                } else {
                    k
                };
                tensors.push((k, t));
            }
        } else if p.extension().is_some_and(|x| x == "json") {
            std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
        }
    }
    Tensor::write_safetensors(&tensors, dst.join("model.safetensors")).unwrap();
}

#[test]
fn qwen3_checkpoints_round_trip_and_qwen3_vl_is_written_in_its_module_layout() {
    for case in ["f_text_qwen3", "g_qwen3_vl_one_image"] {
        let src = ckpt(case);
        let a = checkpoint::load(&src, Device::Cpu, Kind::Float).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("saved");
        checkpoint::save(&a, &out, &SaveOptions::default()).unwrap();
        assert_eq!(keys(&out), keys(&src), "{case}: key set changed");
        let b = checkpoint::load(&out, Device::Cpu, Kind::Float).unwrap();
        assert_same_params(&a, &b);
        // Stored back in the files' dtype (bf16).
        let st = Tensor::read_safetensors(out.join("model.safetensors")).unwrap();
        assert!(st.iter().all(|(_, t)| t.kind() == Kind::BFloat16), "{case}");
    }
    // The flat layout is read (same parameters) and written back in the
    // module layout, the only one transformers reads for Qwen3-VL.
    let tmp = tempfile::tempdir().unwrap();
    let flat = tmp.path().join("flat");
    write_flat_layout(&ckpt("g_qwen3_vl_one_image"), &flat);
    assert!(keys(&flat).iter().any(|k| k.starts_with("visual.blocks.")));
    let a = checkpoint::load(&flat, Device::Cpu, Kind::Float).unwrap();
    let g = checkpoint::load(&ckpt("g_qwen3_vl_one_image"), Device::Cpu, Kind::Float).unwrap();
    assert_same_params(&a, &g);
    assert_eq!(a.source.layout, KeyLayout::Nested);
    let out = tmp.path().join("saved");
    checkpoint::save(&a, &out, &SaveOptions::default()).unwrap();
    assert_eq!(keys(&out), keys(&ckpt("g_qwen3_vl_one_image")));
}

#[test]
fn random_init_saves_and_reloads() {
    let cfg = lmmhost_model::config::ModelConfig::from_dir(&ckpt("d_vl_windows")).unwrap();
    let a = checkpoint::init_random_seeded(cfg, None, Device::Cpu, Kind::Float, 7).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    checkpoint::save(&a, tmp.path(), &SaveOptions::default()).unwrap();
    assert_eq!(keys(tmp.path()), keys(&ckpt("d_vl_windows")));
    let b = checkpoint::load(tmp.path(), Device::Cpu, Kind::Float).unwrap();
    assert_same_params(&a, &b);
    let p = a.model.named_parameters();
    let norm = p.iter().find(|(n, _)| n == "model.norm.weight").unwrap();
    assert_eq!(norm.1.mean(Kind::Float).double_value(&[]), 1.0);
    let q = p
        .iter()
        .find(|(n, _)| n == "model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    let std = q.1.std(true).double_value(&[]);
    assert!((std - 0.02).abs() < 0.002, "{std}");
}

/// The tiny model the quickstart ships (configs/models/tiny-qwen2.5-vl):
/// parses, initialises, and runs an image through the whole model.
#[test]
fn tiny_quickstart_config_runs() {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/models/tiny-qwen2.5-vl");
    let cfg = lmmhost_model::config::ModelConfig::from_dir(&dir).unwrap();
    let v = cfg.vision.clone().unwrap();
    assert_eq!(v.fullatt_block_indexes, vec![1, 3]);
    let image_pad = cfg.image_token_id.unwrap();
    // The ids the config names must be the shipped tokenizer's.
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let id = |s: &str| tok.token_to_id(s).map(i64::from);
    assert_eq!(id("<|image_pad|>"), Some(image_pad));
    assert_eq!(id("<|video_pad|>"), cfg.video_token_id);
    assert_eq!(id("<|vision_start|>"), cfg.vision_start_token_id);
    assert_eq!(id("<|vision_end|>"), cfg.vision_end_token_id);
    assert_eq!(id("<|im_end|>"), cfg.eos_token_ids.first().copied());
    assert_eq!(id("<|endoftext|>"), cfg.pad_token_id);
    assert!(tok.get_vocab_size(true) as i64 <= cfg.text.vocab_size);
    let (m, pixels) = checkpoint::seeded(1, || {
        let m = checkpoint::init_random(cfg, Some(&dir), Device::Cpu, Kind::Float).unwrap();
        let pixels = Tensor::randn([120, v.patch_dim()], (Kind::Float, Device::Cpu));
        (m, pixels)
    });
    // One 10x12-patch image -> 30 merged tokens; positions as text (enough to run).
    let mut ids = vec![5i64, 6];
    ids.extend(std::iter::repeat_n(image_pad, 30));
    ids.push(7);
    let n = ids.len() as i64;
    let ids = Tensor::from_slice(&ids).reshape([1, n]);
    let mask = ids.ones_like();
    let pos = Tensor::arange(n, (Kind::Int64, Device::Cpu)).reshape([1, n]);
    let grid = Tensor::from_slice(&[1i64, 10, 12]).reshape([1, 3]);
    let inputs = ForwardInputs {
        input_ids: &ids,
        attention_mask: &mask,
        position_ids: Some(&pos),
        pixel_values: Some(&pixels),
        image_grid_thw: Some(&grid),
    };
    let logits = tch::no_grad(|| m.model.forward(&inputs)).unwrap();
    assert_eq!(logits.size(), vec![1, n, 1024]);
    assert!(logits.isfinite().all().int64_value(&[]) == 1);
}

/// `a_text_qwen2` with `model.norm.weight` replaced by `make(original)`.
fn with_norm(tmp: &Path, name: &str, make: impl Fn(&Tensor) -> Tensor) -> PathBuf {
    let d = tmp.join(name);
    copy_dir(&ckpt("a_text_qwen2"), &d);
    let mut t = Tensor::read_safetensors(d.join("model.safetensors")).unwrap();
    for (k, v) in t.iter_mut() {
        if k == "model.norm.weight" {
            *v = make(v);
        }
    }
    Tensor::write_safetensors(&t, d.join("model.safetensors")).unwrap();
    d
}

#[test]
fn integer_and_non_finite_weights_are_refused_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let ints = with_norm(tmp.path(), "ints", |t| t.to_kind(Kind::Int));
    let err = load_err(&ints);
    assert!(
        err.contains("tensor model.norm.weight")
            && err.contains("ints/model.safetensors")
            && err.contains("is stored as Int")
            && err.contains("floating-point"),
        "{err}"
    );
    let nan = with_norm(tmp.path(), "nan", |t| {
        let t = t.copy();
        let _ = t.get(3).fill_(f64::NAN);
        let _ = t.get(5).fill_(f64::INFINITY);
        t
    });
    let err = load_err(&nan);
    assert!(
        err.contains("tensor model.norm.weight")
            && err.contains("has 2 of 64 values that are NaN or infinite")
            && err.contains("model.allow_non_finite_weights = true"),
        "{err}"
    );
    // The explicit override loads it as stored.
    let opts = checkpoint::LoadOptions {
        allow_non_finite: true,
        ..Default::default()
    };
    let m = checkpoint::load_with(&nan, Device::Cpu, Kind::Float, opts).unwrap();
    let norm = &m.model.named_parameters();
    let (_, w) = norm.iter().find(|(n, _)| n == "model.norm.weight").unwrap();
    assert!(w.get(3).double_value(&[]).is_nan());
}
