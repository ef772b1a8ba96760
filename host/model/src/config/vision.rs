//! `vision_config` of Qwen2.5-VL and Qwen3-VL.

use anyhow::{bail, Context, Result};

use super::json::{i64_list, Obj};
use super::{Architecture, TextConfig, VisionConfig};

pub(super) fn parse(arch: Architecture, v: &Obj, text: &TextConfig) -> Result<VisionConfig> {
    let path = v.ctx.path;
    let qwen3 = arch == Architecture::Qwen3Vl;
    // Qwen2.5-VL's MLP is SwiGLU, Qwen3-VL's a tanh-approximated GELU.
    let want_act = if qwen3 { "gelu_pytorch_tanh" } else { "silu" };
    let act = v.opt_str("hidden_act")?.unwrap_or(want_act);
    if act != want_act {
        bail!(
            "{}: vision_config.hidden_act {act:?} is not supported ({want_act} only)",
            path.display()
        );
    }
    let hidden = v.req_i64("hidden_size")?;
    let heads = v.req_i64("num_heads")?;
    if hidden % heads.max(1) != 0 || (hidden / heads.max(1)) % 4 != 0 {
        bail!(
            "{}: vision head dim {hidden}/{heads} must be a multiple of 4",
            path.display()
        );
    }
    let rope_theta = match v
        .map
        .get("rope_parameters")
        .and_then(|r| r.get("rope_theta"))
    {
        Some(x) => x
            .as_f64()
            .with_context(|| format!("{}: vision rope_theta must be a number", path.display()))?,
        None => 10000.0,
    };
    let list = |key: &str, default: &[i64]| -> Result<Vec<i64>> {
        match v.map.get(key) {
            Some(x) => i64_list(x, path, &format!("vision_config.{key}")),
            None => Ok(default.to_vec()),
        }
    };
    let depth = v.req_i64("depth")?;
    let c = VisionConfig {
        depth,
        hidden_size: hidden,
        intermediate_size: v.req_i64("intermediate_size")?,
        num_heads: heads,
        out_hidden_size: v.opt_i64("out_hidden_size")?.unwrap_or(text.hidden_size),
        in_channels: match v.opt_i64("in_channels")? {
            Some(c) => c,
            None => v.opt_i64("in_chans")?.unwrap_or(3),
        },
        patch_size: v
            .opt_i64("patch_size")?
            .unwrap_or(if qwen3 { 16 } else { 14 }),
        temporal_patch_size: v.opt_i64("temporal_patch_size")?.unwrap_or(2),
        spatial_merge_size: v.opt_i64("spatial_merge_size")?.unwrap_or(2),
        rope_theta,
        window_size: if qwen3 {
            0
        } else {
            v.opt_i64("window_size")?.unwrap_or(112)
        },
        fullatt_block_indexes: if qwen3 {
            Vec::new()
        } else {
            list("fullatt_block_indexes", &[])?
        },
        tokens_per_second: v.opt_f64("tokens_per_second")?.unwrap_or(2.0),
        num_position_embeddings: if qwen3 {
            v.opt_i64("num_position_embeddings")?.unwrap_or(2304)
        } else {
            0
        },
        deepstack_visual_indexes: if qwen3 {
            list("deepstack_visual_indexes", &[8, 16, 24])?
        } else {
            Vec::new()
        },
    };
    if c.out_hidden_size != text.hidden_size {
        bail!(
            "{}: vision_config.out_hidden_size {} differs from the text hidden_size {}",
            path.display(),
            c.out_hidden_size,
            text.hidden_size
        );
    }
    if qwen3 {
        let side = (c.num_position_embeddings as f64).sqrt() as i64;
        if side < 1 || side * side != c.num_position_embeddings {
            bail!(
                "{}: vision_config.num_position_embeddings {} is not a square grid",
                path.display(),
                c.num_position_embeddings
            );
        }
        if let Some(bad) = c
            .deepstack_visual_indexes
            .iter()
            .find(|&&i| i < 0 || i >= depth)
        {
            bail!(
                "{}: vision_config.deepstack_visual_indexes holds {bad}, outside the {depth} blocks",
                path.display()
            );
        }
    }
    Ok(c)
}
