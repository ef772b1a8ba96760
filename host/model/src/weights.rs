//! Safetensors weight files in and out: every tensor of a checkpoint
//! directory (`model.safetensors` or the shards of
//! `model.safetensors.index.json`) read into a [`Weights`] source that the
//! modules take their parameters from by name, and named tensors written back
//! as shards.
//!
//! In: memory-mapped one shard at a time: each tensor is copied from the map
//! straight into a tensor of the experiment's dtype and device, and the map is
//! dropped before the next shard, so the weights never exist twice in process
//! memory. Modules ask for canonical names (the published layout: `model.*`,
//! `visual.*`, `lm_head.*`); [`KeyLayout`] maps them to the file's keys.
//!
//! Out: safetensors with `{"format": "pt"}` metadata, split greedily in name
//! order past a size limit, with an index file when split (as transformers).

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

use crate::lora::{AdapterSwitch, LoraConfig};

/// Named parameters with their canonical (published-layout) names.
pub type Params = Vec<(String, Tensor)>;

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLayout {
    /// `model.*`, `visual.*`, `lm_head.*` (published Qwen2.5-VL, Qwen2).
    Published,
    /// `model.language_model.*`, `model.visual.*`, `lm_head.*` (transformers 5 modules).
    Nested,
}

impl KeyLayout {
    /// Checkpoint key of a canonical (published-layout) name.
    pub fn file_key(self, canonical: &str) -> String {
        match self {
            KeyLayout::Published => canonical.to_string(),
            KeyLayout::Nested => {
                if let Some(rest) = canonical.strip_prefix("visual.") {
                    format!("model.visual.{rest}")
                } else if let Some(rest) = canonical.strip_prefix("model.") {
                    format!("model.language_model.{rest}")
                } else {
                    canonical.to_string()
                }
            }
        }
    }
}

/// All tensors of a checkpoint, loaded and converted, waiting to be taken by the modules.
pub struct Weights {
    tensors: HashMap<String, (Tensor, PathBuf)>,
    layout: KeyLayout,
    dir: PathBuf,
    /// Dtype each tensor had in its file, by canonical name (saved back in it).
    source_kinds: HashMap<String, Kind>,
    /// Random initialisation instead of files: (device, kind).
    random: Option<(Device, Kind)>,
    /// Take tensors holding NaN or infinities (refused by default).
    pub allow_non_finite: bool,
    /// LoRA adapters for the linear layers built from this source.
    pub lora: Option<LoraConfig>,
    /// Shared by those adapters: turns them all off and on.
    pub adapter_switch: AdapterSwitch,
}

/// The tch type of a safetensors dtype (`None`: one tch has no type for).
pub fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// The safetensors dtype a tensor of `kind` is stored as.
pub fn dtype_of(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        k => bail!("cannot store dtype {k:?} in safetensors"),
    })
}

/// Tensor name -> shard file name, from `model.safetensors.index.json`.
pub type WeightMap = BTreeMap<String, String>;

/// The weight files of a checkpoint directory, in load order, and the index if sharded.
pub fn weight_files(dir: &Path) -> Result<(Vec<PathBuf>, Option<WeightMap>)> {
    let index = dir.join(INDEX_FILE);
    if index.exists() {
        let text = std::fs::read_to_string(&index)
            .with_context(|| format!("cannot read {}", index.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", index.display()))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .with_context(|| format!("{}: missing \"weight_map\" object", index.display()))?;
        let mut weight_map = BTreeMap::new();
        for (k, f) in map {
            let f = f.as_str().with_context(|| {
                format!("{}: weight_map[{k:?}] must be a file name", index.display())
            })?;
            weight_map.insert(k.clone(), f.to_string());
        }
        let mut files: Vec<String> = weight_map.values().cloned().collect();
        files.sort();
        files.dedup();
        Ok((
            files.into_iter().map(|f| dir.join(f)).collect(),
            Some(weight_map),
        ))
    } else {
        let single = dir.join(SINGLE_FILE);
        if !single.exists() {
            if !dir.join("config.json").exists() && !dir.exists() {
                bail!("checkpoint directory {} does not exist", dir.display());
            }
            bail!(
                "no {SINGLE_FILE} or {INDEX_FILE} in checkpoint directory {}",
                dir.display()
            );
        }
        Ok((vec![single], None))
    }
}

impl Weights {
    /// Loads every tensor of the checkpoint in `dir`, converting floating
    /// tensors to `kind` on `device`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let (files, weight_map) = weight_files(dir)?;
        let mut tensors = HashMap::new();
        let mut file_kinds = HashMap::new();
        for file in &files {
            let f = std::fs::File::open(file)
                .with_context(|| format!("cannot open weight file {}", file.display()))?;
            // SAFETY: the map is read-only and dropped at the end of this
            // iteration; a concurrent writer could only corrupt values, which the
            // header parse and per-tensor length checks catch or pass through.
            let map = unsafe { memmap2::Mmap::map(&f) }
                .with_context(|| format!("cannot map {}", file.display()))?;
            let st = SafeTensors::deserialize(&map).with_context(|| {
                format!(
                    "{} is not a valid safetensors file (corrupt or truncated?)",
                    file.display()
                )
            })?;
            for (name, view) in st.tensors() {
                let src_kind = kind_of(view.dtype()).with_context(|| {
                    format!(
                        "tensor {name} in {}: unsupported dtype {:?}",
                        file.display(),
                        view.dtype()
                    )
                })?;
                let shape: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
                let t =
                    Tensor::f_from_data_size(view.data(), &shape, src_kind).with_context(|| {
                        format!("tensor {name} in {}: cannot read data", file.display())
                    })?;
                let floating = matches!(
                    src_kind,
                    Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double
                );
                let t = if floating { t.to_kind(kind) } else { t };
                let t = t.to_device(device);
                file_kinds.insert(name.clone(), src_kind);
                tensors.insert(name, (t, file.clone()));
            }
            drop(map);
        }
        if let Some(wm) = &weight_map {
            for (k, f) in wm {
                if !tensors.contains_key(k) {
                    bail!(
                        "tensor {k} is listed in {} under {f} but that file does not contain it",
                        dir.join(INDEX_FILE).display()
                    );
                }
            }
        }
        let layout = if tensors
            .keys()
            .any(|k| k.starts_with("model.language_model.") || k.starts_with("model.visual."))
        {
            KeyLayout::Nested
        } else {
            KeyLayout::Published
        };
        let source_kinds = file_kinds
            .into_iter()
            .map(|(k, v)| (canonical_name(layout, &k), v))
            .collect();
        Ok(Weights {
            tensors,
            layout,
            dir: dir.to_path_buf(),
            source_kinds,
            random: None,
            allow_non_finite: false,
            lora: None,
            adapter_switch: AdapterSwitch::default(),
        })
    }

    /// A source that makes every tensor up on request: normal(0, 0.02)
    /// matrices, unit norm weights, zero biases (transformers' init scheme).
    pub fn random(device: Device, kind: Kind) -> Self {
        Weights {
            tensors: HashMap::new(),
            layout: KeyLayout::Published,
            dir: PathBuf::from("<random init>"),
            source_kinds: HashMap::new(),
            random: Some((device, kind)),
            allow_non_finite: false,
            lora: None,
            adapter_switch: AdapterSwitch::default(),
        }
    }

    pub fn layout(&self) -> KeyLayout {
        self.layout
    }

    /// Dtype each tensor had in its file, by canonical name.
    pub fn source_kinds(&self) -> &HashMap<String, Kind> {
        &self.source_kinds
    }

    pub fn contains(&self, canonical: &str) -> bool {
        self.tensors.contains_key(&self.layout.file_key(canonical))
    }

    /// Takes the tensor with canonical name `canonical`, checking its shape.
    pub fn take(&mut self, canonical: &str, shape: &[i64]) -> Result<Tensor> {
        if let Some((device, kind)) = self.random {
            let is_norm = ["norm.weight", "norm1.weight", "norm2.weight", "ln_q.weight"]
                .iter()
                .any(|s| canonical.ends_with(s));
            return Ok(if is_norm {
                Tensor::ones(shape, (kind, device))
            } else if canonical.ends_with(".bias") {
                Tensor::zeros(shape, (kind, device))
            } else {
                (Tensor::randn(shape, (Kind::Float, device)) * 0.02).to_kind(kind)
            });
        }
        let key = self.layout.file_key(canonical);
        let Some((t, file)) = self.tensors.remove(&key) else {
            bail!(
                "tensor {key} is missing from the checkpoint in {} (expected shape {shape:?})",
                self.dir.display()
            );
        };
        if t.size() != shape {
            bail!(
                "tensor {key} in {} has shape {:?}, expected {shape:?} from config.json",
                file.display(),
                t.size()
            );
        }
        if !t.is_floating_point() {
            bail!(
                "tensor {key} in {} is stored as {:?}; a weight must be a floating-point dtype (F32, F16, BF16 or F64)",
                file.display(),
                t.kind()
            );
        }
        if !self.allow_non_finite {
            let bad = t.isfinite().logical_not().sum(Kind::Int64).int64_value(&[]);
            if bad > 0 {
                bail!(
                    "tensor {key} in {} has {bad} of {} values that are NaN or infinite (a diverged or corrupt checkpoint); set model.allow_non_finite_weights = true to load it anyway",
                    file.display(),
                    t.numel()
                );
            }
        }
        Ok(t)
    }

    /// Checkpoint keys no module took.
    pub fn unused(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tensors.keys().cloned().collect();
        v.sort();
        v
    }
}

fn canonical_name(layout: KeyLayout, key: &str) -> String {
    match layout {
        KeyLayout::Published => key.to_string(),
        KeyLayout::Nested => {
            if let Some(rest) = key.strip_prefix("model.visual.") {
                format!("visual.{rest}")
            } else if let Some(rest) = key.strip_prefix("model.language_model.") {
                format!("model.{rest}")
            } else {
                key.to_string()
            }
        }
    }
}

/// A tensor written lazily: it is copied to host memory, in the type it is
/// stored as, when the serializer asks for its bytes, so that one tensor at
/// a time is there (not a second copy of all the weights).
pub struct TensorView {
    tensor: Tensor,
    kind: Kind,
    dtype: Dtype,
    shape: Vec<usize>,
    len: usize,
}

impl TensorView {
    /// `t` (on any device) to be stored as `kind`.
    pub fn new(t: &Tensor, kind: Kind) -> Result<TensorView> {
        let shape: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
        Ok(TensorView {
            tensor: t.detach(),
            kind,
            dtype: dtype_of(kind)?,
            len: shape.iter().product::<usize>() * kind.elt_size_in_bytes(),
            shape,
        })
    }

    /// Bytes it takes in the file.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl View for &TensorView {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        let t = self
            .tensor
            .to_device(Device::Cpu)
            .to_kind(self.kind)
            .contiguous();
        let mut buf = vec![0u8; self.len];
        // Contiguous CPU tensor of a safetensors dtype: this copy cannot fail
        // short of memory exhaustion; an empty buffer would fail the length check.
        if t.f_copy_data_u8(&mut buf, t.numel()).is_err() {
            buf.clear();
        }
        Cow::Owned(buf)
    }
    fn data_len(&self) -> usize {
        self.len
    }
}

/// Writes `tensors` (file key, tensor, dtype to store) into `out_dir` as
/// `model.safetensors`, or as `model-0000i-of-0000n.safetensors` shards with an
/// index once they pass `max_shard_bytes`. Weight files of an earlier save in
/// `out_dir` are replaced.
pub fn write_shards(
    tensors: Vec<(String, Tensor, Kind)>,
    out_dir: &Path,
    max_shard_bytes: u64,
) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    for (key, t, kind) in tensors {
        let view = TensorView::new(&t, kind).with_context(|| format!("tensor {key}"))?;
        views.push((key, view));
    }
    views.sort_by(|a, b| a.0.cmp(&b.0));
    // Greedy sharding in name order, like transformers.
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut cur = 0u64;
    for (i, (_, v)) in views.iter().enumerate() {
        let sz = v.len() as u64;
        if cur > 0 && cur + sz > max_shard_bytes {
            shards.push(Vec::new());
            cur = 0;
        }
        if let Some(last) = shards.last_mut() {
            last.push(i);
        }
        cur += sz;
    }
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let n = shards.len();
    // Stale weight files of an earlier save would confuse loaders.
    for stale in [SINGLE_FILE, INDEX_FILE] {
        let p = out_dir.join(stale);
        if p.exists() {
            std::fs::remove_file(&p)
                .with_context(|| format!("cannot remove stale {}", p.display()))?;
        }
    }
    let mut weight_map = BTreeMap::new();
    let mut total = 0u64;
    for (si, shard) in shards.iter().enumerate() {
        let fname = if n == 1 {
            SINGLE_FILE.to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", si + 1, n)
        };
        let path = out_dir.join(&fname);
        let items: Vec<(&str, &TensorView)> = shard
            .iter()
            .map(|&i| (views[i].0.as_str(), &views[i].1))
            .collect();
        for (k, v) in &items {
            weight_map.insert(k.to_string(), fname.clone());
            total += v.len() as u64;
        }
        safetensors::serialize_to_file(items, Some(meta.clone()), &path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if n > 1 {
        let index =
            serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
        let p = out_dir.join(INDEX_FILE);
        std::fs::write(&p, serde_json::to_string_pretty(&index)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}
