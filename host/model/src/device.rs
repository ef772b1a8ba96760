//! Device and dtype choices of an experiment, parsed from their config strings.

use anyhow::{bail, Context, Result};
use tch::{Device, Kind};

/// Parses "cpu", "cuda" (= cuda:0) or "cuda:N".
pub fn parse_device(s: &str) -> Result<Device> {
    let t = s.trim().to_ascii_lowercase();
    let device = match t.as_str() {
        "cpu" => Device::Cpu,
        "cuda" | "gpu" => Device::Cuda(0),
        _ => match t.strip_prefix("cuda:") {
            Some(n) => Device::Cuda(
                n.parse::<usize>()
                    .with_context(|| format!("device {s:?}: {n:?} is not a CUDA device index"))?,
            ),
            None => bail!("unknown device {s:?}: expected \"cpu\", \"cuda\" or \"cuda:N\""),
        },
    };
    if let Device::Cuda(i) = device {
        let n = tch::Cuda::device_count();
        if n <= 0 {
            bail!("device {s:?}: CUDA is not available (libtorch sees no GPU)");
        }
        if i as i64 >= n {
            bail!(
                "device {s:?}: only {n} CUDA device(s) present (cuda:0..cuda:{})",
                n - 1
            );
        }
    }
    Ok(device)
}

/// Parses "f32"/"float32", "bf16"/"bfloat16", "f16"/"float16"/"half".
pub fn parse_dtype(s: &str) -> Result<Kind> {
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" | "float" | "fp32" => Kind::Float,
        "bf16" | "bfloat16" => Kind::BFloat16,
        "f16" | "float16" | "half" | "fp16" => Kind::Half,
        _ => bail!("unknown dtype {s:?}: expected \"f32\", \"bf16\" or \"f16\""),
    })
}

/// The config-string name of a floating dtype (inverse of [`parse_dtype`]).
pub fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "f32",
        Kind::BFloat16 => "bf16",
        Kind::Half => "f16",
        Kind::Double => "f64",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_device(" CPU ").unwrap(), Device::Cpu);
        let err = parse_device("tpu").unwrap_err().to_string();
        assert!(err.contains("unknown device \"tpu\""), "{err}");
        let err = parse_device("cuda:x").unwrap_err().to_string();
        assert!(err.contains("not a CUDA device index"), "{err}");
        // Must not crash whether or not a GPU is present.
        let cuda = parse_device("cuda:0");
        assert_eq!(cuda.is_ok(), tch::Cuda::is_available());
    }

    #[test]
    fn parses_dtypes() {
        assert_eq!(parse_dtype("f32").unwrap(), Kind::Float);
        assert_eq!(parse_dtype("bf16").unwrap(), Kind::BFloat16);
        assert_eq!(parse_dtype("float16").unwrap(), Kind::Half);
        let err = parse_dtype("int8").unwrap_err().to_string();
        assert!(err.contains("unknown dtype \"int8\""), "{err}");
        assert_eq!(dtype_name(parse_dtype("bfloat16").unwrap()), "bf16");
    }
}
