//! The model being trained, its processor and trainable parameters; and the
//! frozen reference copy GRPO's KL term compares against.

use std::path::Path;

use anyhow::{Context, Result};
use lmmhost_model::checkpoint::{self, LoadOptions, LoadedModel, SaveOptions};
use lmmhost_model::config::{Architecture, ModelConfig};
use lmmhost_model::device::parse_device;
use lmmhost_model::lm::CausalLm;
use lmmhost_model::processor::{image, Processor};
use lmmhost_model::{lora, peft_adapter};
use tch::{Device, Tensor};

use super::experiment::{ModelInit, ModelSection};
use super::lora::LoraSection;
use super::precision::Precision;

/// Which parameters a stage leaves as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Freeze {
    pub vision: bool,
    pub language: bool,
    /// Checkpoint-name prefixes (e.g. `visual.blocks.`).
    pub prefixes: Vec<String>,
}

pub struct Policy {
    pub model: LoadedModel,
    pub precision: Precision,
    pub processor: Processor,
    pub device: Device,
    /// Canonical name -> tensor (shares storage with the model).
    pub params: Vec<(String, Tensor)>,
    /// Threads that rollouts, log-prob passes and updates split their rows
    /// over (`model.workers`, at most the libtorch threads; 1 on CUDA).
    pub workers: usize,
    /// The update keeps each decoder layer's inputs only and recomputes the
    /// layers in its backward (`model.activation_checkpointing`).
    pub activation_checkpointing: bool,
    /// `model.lora`: only the adapters train, saves are adapter directories.
    pub lora: Option<LoraSection>,
    /// What an adapter's `base_model_name_or_path` names (`model.path`).
    base: String,
}

/// Loads the model an experiment names: from `dir` (a checkpoint) or, for
/// `init = "random"` with no checkpoint yet, initialised from its config.json
/// with `seed` (so a resumed or reference copy is the same network).
pub fn load_model(
    section: &ModelSection,
    dir: Option<&Path>,
    seed: u64,
) -> Result<(LoadedModel, Device)> {
    let device = parse_device(&section.device).context("model.device")?;
    let kind = Precision::parse(&section.dtype)
        .context("model.dtype")?
        .kind();
    let opts = LoadOptions {
        allow_non_finite: section.allow_non_finite_weights,
        lora: section.lora.as_ref().map(LoraSection::config),
    };
    let model = match (dir, section.init) {
        (Some(d), _) => checkpoint::load_with(d, device, kind, opts)
            .with_context(|| format!("loading the model from {}", d.display()))?,
        (None, ModelInit::Pretrained) => {
            checkpoint::load_with(&section.path, device, kind, opts)
                .with_context(|| format!("model.path: loading {}", section.path.display()))?
        }
        (None, ModelInit::Random) => {
            let config = ModelConfig::from_dir(&section.path)
                .with_context(|| format!("model.path: {}", section.path.display()))?;
            checkpoint::init_random_seeded_with(
                config,
                Some(&section.path),
                device,
                kind,
                seed as i64,
                &opts,
            )?
        }
    };
    Ok((model, device))
}

/// `model.min_pixels` / `model.max_pixels` into the processor and into the
/// `preprocessor_config.json` every save writes, so that a checkpoint's
/// processor resizes images as the run that trained it did.
fn set_pixel_bounds(
    section: &ModelSection,
    processor: &mut Processor,
    model: &mut LoadedModel,
) -> Result<()> {
    let (min, max) = (section.min_pixels, section.max_pixels);
    if min.is_none() && max.is_none() {
        return Ok(());
    }
    processor
        .set_pixel_bounds(min, max)
        .context("model.min_pixels / model.max_pixels")?;
    for (name, bytes) in &mut model.source.files {
        if name != "preprocessor_config.json" {
            continue;
        }
        let mut v: serde_json::Value = serde_json::from_slice(bytes)
            .context("preprocessor_config.json of the loaded model is not valid JSON")?;
        image::set_pixel_bounds_json(&mut v, min, max);
        *bytes = serde_json::to_vec_pretty(&v)?;
    }
    Ok(())
}

impl Policy {
    /// The model of `section`, or the one saved in `dir` (a checkpoint's
    /// `model/`). With `model.lora`, `dir` holds the adapters only: the base
    /// is loaded from `model.path` (or its seeded random init) and the
    /// adapters from `dir`; without `dir` they start as PEFT's (A drawn, B zero).
    pub fn load(section: &ModelSection, dir: Option<&Path>, seed: u64) -> Result<Policy> {
        let base_dir = if section.lora.is_some() { None } else { dir };
        let (model, device) = load_model(section, base_dir, seed)?;
        if let Some(lora) = &section.lora {
            let params = model.model.named_parameters();
            match dir {
                Some(d) => peft_adapter::load_adapter(&model, &lora.config(), d)
                    .with_context(|| format!("loading the LoRA adapters from {}", d.display()))?,
                None => lora::init_adapters(&params, seed),
            }
        }
        let precision = Precision::parse(&section.dtype).context("model.dtype")?;
        let proc_dir = dir.unwrap_or(&section.path);
        let mut processor = Processor::from_dir(proc_dir)
            .with_context(|| format!("processor files in {}", proc_dir.display()))?;
        processor.set_max_image_pixels(section.max_image_pixels);
        let mut model = model;
        set_pixel_bounds(section, &mut processor, &mut model)?;
        let params = model.model.named_parameters();
        let workers = if device == Device::Cpu {
            section
                .workers
                .clamp(1, tch::get_num_threads().max(1) as usize)
        } else {
            1
        };
        Ok(Policy {
            model,
            precision,
            processor,
            device,
            params,
            workers,
            activation_checkpointing: section.activation_checkpointing,
            lora: section.lora.clone(),
            base: section.path.display().to_string(),
        })
    }

    pub fn lm(&self) -> &dyn CausalLm {
        self.model.model.as_lm()
    }

    pub fn architecture(&self) -> Architecture {
        self.model.config.architecture
    }

    pub fn is_multimodal(&self) -> bool {
        self.architecture().is_multimodal()
    }

    /// Marks which parameters get gradients: all but the vision tower
    /// (`visual.*`) with `freeze.vision`, all but it with `freeze.language`,
    /// and none whose name starts with one of `freeze.prefixes`. Returns how
    /// many tensors train.
    /// With `model.lora` every base weight is frozen and these rules pick
    /// among the adapters.
    pub fn set_trainable(&self, freeze: &Freeze) -> usize {
        let mut trainable = 0;
        for (name, t) in &self.params {
            let vision = name.starts_with("visual.");
            let frozen = (self.lora.is_some() && !lora::is_adapter(name))
                || (vision && freeze.vision)
                || (!vision && freeze.language)
                || freeze.prefixes.iter().any(|p| name.starts_with(p.as_str()));
            let mut t = t.shallow_clone();
            let _ = t.requires_grad_(!frozen);
            trainable += usize::from(!frozen);
        }
        trainable
    }

    /// The parameter tensors in a fixed order (the optimizer's order).
    pub fn tensors(&self) -> Vec<Tensor> {
        self.params.iter().map(|(_, t)| t.shallow_clone()).collect()
    }

    pub fn zero_grad(&self) {
        for (_, t) in &self.params {
            let mut t = t.shallow_clone();
            t.zero_grad();
        }
    }

    /// Writes the model as a Hugging Face checkpoint directory; with
    /// `model.lora`, the adapters as a PEFT adapter directory.
    pub fn save(&self, dir: &Path) -> Result<()> {
        match &self.lora {
            Some(l) => peft_adapter::save_adapter(&self.model, &l.config(), &self.base, dir)
                .with_context(|| format!("saving the LoRA adapters to {}", dir.display())),
            None => checkpoint::save(&self.model, dir, &SaveOptions::default())
                .with_context(|| format!("saving the model to {}", dir.display())),
        }
    }

    /// Writes the model as a plain Hugging Face checkpoint directory, the
    /// adapters (if any) merged into the base weights.
    pub fn save_merged(&self, dir: &Path) -> Result<()> {
        match &self.lora {
            Some(l) => {
                peft_adapter::save_merged(&self.model, &l.config(), dir, &SaveOptions::default())
                    .with_context(|| format!("saving the merged model to {}", dir.display()))
            }
            None => self.save(dir),
        }
    }
}

/// Where the reference model lives and in which type (`grpo.kl.reference_device`,
/// `grpo.kl.reference_dtype`; `None` = the policy's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub device: Option<String>,
    pub dtype: Option<String>,
}

impl Placement {
    /// `section` with the device and dtype replaced where set.
    fn apply(&self, section: &ModelSection) -> Result<ModelSection> {
        let mut out = section.clone();
        // The reference is a plain model: the base, or the policy as a stage
        // started with its adapters merged in.
        out.lora = None;
        if let Some(d) = &self.device {
            parse_device(d).context("grpo.kl.reference_device")?;
            out.device = d.clone();
        }
        if let Some(d) = &self.dtype {
            let kind = Precision::parse(d)
                .context("grpo.kl.reference_dtype")?
                .kind();
            out.dtype = lmmhost_model::device::dtype_name(kind).to_string();
        }
        Ok(out)
    }
}

/// The frozen reference the KL penalty compares with: the model the run
/// loaded, or the policy as a stage started (`grpo.kl.reference`), loaded
/// again without gradients, on its own device and in its own dtype if the
/// experiment says so (a bf16 or CPU copy halves or frees the accelerator
/// memory it takes).
pub struct Reference {
    pub model: LoadedModel,
    /// The stage whose start it is a copy of; `None` for the initial model.
    pub stage: Option<String>,
    pub placement: Placement,
    pub device: Device,
}

impl Reference {
    /// The model the run loaded (`model.path`, or its seeded random init).
    pub fn initial(section: &ModelSection, place: &Placement, seed: u64) -> Result<Reference> {
        let (model, device) =
            load_model(&place.apply(section)?, None, seed).context("reference model")?;
        Ok(Reference::frozen(model, device, None, place))
    }

    /// The copy of the policy that `stage` started from, saved in `dir`
    /// (written by [`Reference::stage_start`]; a resumed run reads it back).
    pub fn saved(
        section: &ModelSection,
        place: &Placement,
        dir: &Path,
        stage: &str,
    ) -> Result<Reference> {
        let (model, device) = load_model(&place.apply(section)?, Some(dir), 0)
            .with_context(|| format!("reference model of stage {stage:?}"))?;
        Ok(Reference::frozen(
            model,
            device,
            Some(stage.to_string()),
            place,
        ))
    }

    /// Saves the policy as it is into `dir` and loads that copy as the
    /// reference of `stage` (saved, so that a resumed run compares with the
    /// same model).
    pub fn stage_start(
        policy: &Policy,
        section: &ModelSection,
        place: &Placement,
        dir: &Path,
        stage: &str,
    ) -> Result<Reference> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot replace {}", dir.display()))?;
        }
        policy.save_merged(dir)?;
        Reference::saved(section, place, dir, stage)
    }

    fn frozen(
        model: LoadedModel,
        device: Device,
        stage: Option<String>,
        place: &Placement,
    ) -> Reference {
        for (_, t) in model.model.named_parameters() {
            let mut t = t.shallow_clone();
            let _ = t.requires_grad_(false);
        }
        Reference {
            model,
            stage,
            placement: place.clone(),
            device,
        }
    }

    pub fn lm(&self) -> &dyn CausalLm {
        self.model.model.as_lm()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `model.min_pixels` / `model.max_pixels` reach the processor the run
    /// uses and the processor files a save writes, so the saved model
    /// resizes images as training did.
    #[test]
    fn pixel_bounds_reach_the_processor_and_the_saved_files() {
        let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/models/tiny-qwen2.5-vl");
        let section = ModelSection {
            init: ModelInit::Random,
            min_pixels: Some(112 * 112),
            max_pixels: Some(224 * 224),
            ..ModelSection::new(&tiny)
        };
        let p = Policy::load(&section, None, 1).unwrap();
        let config = &p.processor.image_processor.as_ref().unwrap().config;
        assert_eq!((config.min_pixels, config.max_pixels), (12544, 50176));
        let out = tempfile::tempdir().unwrap();
        p.save(out.path()).unwrap();
        let saved = Processor::from_dir(out.path()).unwrap();
        assert_eq!(saved.image_processor.unwrap().config, *config);
        // The checkpoint's own file is left as it was.
        let own = Processor::from_dir(&tiny).unwrap();
        assert_eq!(own.image_processor.unwrap().config.min_pixels, 3136);

        let bad = ModelSection {
            min_pixels: Some(1_000_000),
            ..section
        };
        let err = format!("{:#}", Policy::load(&bad, None, 1).err().unwrap());
        assert!(
            err.contains("model.min_pixels / model.max_pixels: min_pixels 1000000 is larger than max_pixels 50176"),
            "{err}"
        );
    }
}
