//! Qwen2VLImageProcessor: RGB, smart_resize to multiples of patch*merge,
//! PIL-exact bicubic resize, rescale, CLIP normalisation, temporal duplication
//! and the patch flattening order the vision tower expects.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// The settings of `preprocessor_config.json` this processor uses.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
    pub rescale_factor: f64,
    pub do_resize: bool,
    pub do_rescale: bool,
    pub do_normalize: bool,
}

impl Default for ImageProcessorConfig {
    fn default() -> Self {
        Self {
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            rescale_factor: 1.0 / 255.0,
            do_resize: true,
            do_rescale: true,
            do_normalize: true,
        }
    }
}

impl ImageProcessorConfig {
    /// Reads `preprocessor_config.json`. `min_pixels`/`max_pixels` override
    /// `size.shortest_edge`/`size.longest_edge`, as in transformers.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        Self::from_json(&v).with_context(|| format!("in {}", path.display()))
    }

    pub fn from_json(v: &Value) -> Result<Self> {
        let mut c = Self::default();
        let uint = |key: &str, v: &Value| -> Result<Option<usize>> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x.as_u64().map(|n| Some(n as usize)).with_context(|| {
                    format!("key {key:?} must be a non-negative integer, got {x}")
                }),
            }
        };
        let boolean = |key: &str, default: bool| -> Result<bool> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_bool()
                    .with_context(|| format!("key {key:?} must be a boolean, got {x}")),
            }
        };
        let triple = |key: &str, default: [f64; 3]| -> Result<[f64; 3]> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => {
                    let a: Vec<f64> = serde_json::from_value(x.clone())
                        .with_context(|| format!("key {key:?} must be a list of numbers"))?;
                    match a.as_slice() {
                        [r, g, b] => Ok([*r, *g, *b]),
                        [s] => Ok([*s; 3]),
                        _ => bail!("key {key:?} must have 3 values, got {}", a.len()),
                    }
                }
            }
        };
        if let Some(size) = v.get("size").filter(|s| !s.is_null()) {
            if let Some(n) = uint("shortest_edge", size)? {
                c.min_pixels = n;
            }
            if let Some(n) = uint("longest_edge", size)? {
                c.max_pixels = n;
            }
        }
        if let Some(n) = uint("min_pixels", v)? {
            c.min_pixels = n;
        }
        if let Some(n) = uint("max_pixels", v)? {
            c.max_pixels = n;
        }
        if let Some(n) = uint("patch_size", v)? {
            c.patch_size = n;
        }
        if let Some(n) = uint("temporal_patch_size", v)? {
            c.temporal_patch_size = n;
        }
        if let Some(n) = uint("merge_size", v)? {
            c.merge_size = n;
        }
        if let Some(r) = uint("resample", v)? {
            // 3 is PIL BICUBIC, what Qwen2VLImageProcessor uses; others are not implemented.
            if r != 3 {
                bail!("key \"resample\": only 3 (bicubic) is supported, got {r}");
            }
        }
        if let Some(x) = v.get("rescale_factor").filter(|x| !x.is_null()) {
            c.rescale_factor = x
                .as_f64()
                .with_context(|| format!("key \"rescale_factor\" must be a number, got {x}"))?;
        }
        c.image_mean = triple("image_mean", c.image_mean)?;
        c.image_std = triple("image_std", c.image_std)?;
        c.do_resize = boolean("do_resize", true)?;
        c.do_rescale = boolean("do_rescale", true)?;
        c.do_normalize = boolean("do_normalize", true)?;
        if c.patch_size == 0 || c.merge_size == 0 || c.temporal_patch_size == 0 {
            bail!("patch_size, merge_size and temporal_patch_size must be positive");
        }
        if c.min_pixels > c.max_pixels {
            bail!(
                "min_pixels {} is larger than max_pixels {}",
                c.min_pixels,
                c.max_pixels
            );
        }
        Ok(c)
    }
}

impl ImageProcessorConfig {
    /// The resize bounds replaced by `min_pixels` / `max_pixels` where given
    /// (an experiment's `model.min_pixels` / `model.max_pixels`). The maximum
    /// must hold one merged patch (`(patch_size * merge_size)^2` pixels):
    /// smart_resize never goes below that, so a smaller bound cannot be kept.
    pub fn with_pixel_bounds(mut self, min: Option<usize>, max: Option<usize>) -> Result<Self> {
        if let Some(n) = min {
            self.min_pixels = n;
        }
        if let Some(n) = max {
            self.max_pixels = n;
        }
        let unit = (self.patch_size * self.merge_size).pow(2);
        if self.min_pixels == 0 {
            bail!("min_pixels must be positive");
        }
        if self.max_pixels < unit {
            bail!(
                "max_pixels {} is below one merged patch ({} x {} = {unit} pixels), the smallest image the processor makes",
                self.max_pixels,
                self.patch_size * self.merge_size,
                self.patch_size * self.merge_size,
            );
        }
        if self.min_pixels > self.max_pixels {
            bail!(
                "min_pixels {} is larger than max_pixels {}",
                self.min_pixels,
                self.max_pixels
            );
        }
        Ok(self)
    }
}

/// Writes resize bounds into a `preprocessor_config.json` document the way
/// transformers reads them back: the top-level `min_pixels` / `max_pixels`
/// and, where the file has a `size` table, its `shortest_edge` /
/// `longest_edge` (which newer processors read instead).
pub fn set_pixel_bounds_json(v: &mut Value, min: Option<usize>, max: Option<usize>) {
    let Some(obj) = v.as_object_mut() else { return };
    for (key, edge, n) in [
        ("min_pixels", "shortest_edge", min),
        ("max_pixels", "longest_edge", max),
    ] {
        let Some(n) = n else { continue };
        obj.insert(key.into(), Value::from(n as u64));
        if let Some(size) = obj.get_mut("size").and_then(Value::as_object_mut) {
            size.insert(edge.into(), Value::from(n as u64));
        }
    }
}

/// One preprocessed image: `[grid_t*grid_h*grid_w, 3*T*P*P]` row-major floats.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImage {
    pub pixel_values: Vec<f32>,
    /// `[t, h, w]` in patches.
    pub grid_thw: [i64; 3],
}

impl ProcessedImage {
    pub fn num_patches(&self) -> usize {
        (self.grid_thw[0] * self.grid_thw[1] * self.grid_thw[2]) as usize
    }
}

/// Python's `round` (half to even), which smart_resize uses.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

/// transformers' `smart_resize`: (height, width) multiples of `factor`, with
/// the pixel count inside [min_pixels, max_pixels], aspect ratio kept as well as possible.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize)> {
    if height == 0 || width == 0 {
        bail!("image has zero size {width}x{height}");
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if h.max(w) / h.min(w) > 200.0 {
        bail!(
            "absolute aspect ratio must be smaller than 200, got {}",
            h.max(w) / h.min(w)
        );
    }
    let mut h_bar = round_half_even(h / f) * f;
    let mut w_bar = round_half_even(w / f) * f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = ((h * w) / max_pixels as f64).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    Ok((h_bar as usize, w_bar as usize))
}

/// PIL's bicubic kernel (a = -0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point bits of PIL's 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: first input index and integer weights, as Pillow's
/// `precompute_coeffs` + `normalize_coeffs_8bpc` compute them (the kernel is
/// stretched by the scale when downsampling, which is PIL's antialiasing).
fn coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| bicubic((x as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = w.iter().sum();
            let k = w
                .iter()
                .map(|&v| {
                    let v = if total != 0.0 { v / total } else { v };
                    let s = v * f64::from(1u32 << PRECISION_BITS);
                    if s < 0.0 {
                        (s - 0.5) as i32
                    } else {
                        (s + 0.5) as i32
                    }
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One 1-D resampling pass over an 8-bit RGB image of `width` x `height`
/// along x (`horizontal`) or y, rounded to uint8 as Pillow rounds each pass.
fn resample_pass(
    src: &[u8],
    width: usize,
    height: usize,
    out_len: usize,
    horizontal: bool,
) -> (Vec<u8>, usize, usize) {
    let (in_len, (out_w, out_h)) = if horizontal {
        (width, (out_len, height))
    } else {
        (height, (width, out_len))
    };
    let k = coeffs(in_len, out_len);
    let mut out = vec![0u8; out_w * out_h * 3];
    for y in 0..out_h {
        for x in 0..out_w {
            let (start, w) = &k[if horizontal { x } else { y }];
            for c in 0..3 {
                let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                for (i, &wi) in w.iter().enumerate() {
                    let (sx, sy) = if horizontal {
                        (start + i, y)
                    } else {
                        (x, start + i)
                    };
                    acc += i64::from(src[(sy * width + sx) * 3 + c]) * i64::from(wi);
                }
                out[(y * out_w + x) * 3 + c] = clip8(acc);
            }
        }
    }
    (out, out_w, out_h)
}

/// PIL `Image.resize(size, BICUBIC)` of an 8-bit RGB image: two 1-D passes,
/// each rounded to uint8. The pass order changes the rounding, so it follows
/// Pillow (>= 13): vertical first when the height shrinks by more than twice
/// as many pixels as the width does, horizontal first otherwise.
pub fn resize_bicubic_rgb8(
    src: &[u8],
    width: usize,
    height: usize,
    out_w: usize,
    out_h: usize,
) -> Vec<u8> {
    let shrink_y = height as i64 - out_h as i64;
    let shrink_x = width as i64 - out_w as i64;
    let vertical_first = shrink_y > 0 && shrink_y > 2 * shrink_x;
    let mut cur = (src.to_vec(), width, height);
    for horizontal in [!vertical_first, vertical_first] {
        let (len, target) = if horizontal {
            (cur.1, out_w)
        } else {
            (cur.2, out_h)
        };
        if len != target {
            cur = resample_pass(&cur.0, cur.1, cur.2, target, horizontal);
        }
    }
    cur.0
}

/// The image preprocessing of Qwen2-VL / Qwen2.5-VL.
/// The most pixels an image may have to be decoded at all: PIL's
/// decompression-bomb threshold (`Image.MAX_IMAGE_PIXELS`), 89,478,485.
pub const DEFAULT_MAX_DECODE_PIXELS: u64 = 89_478_485;

#[derive(Debug, Clone)]
pub struct ImageProcessor {
    pub config: ImageProcessorConfig,
    /// Images with more pixels than this are refused from their header,
    /// before any decoding.
    pub max_decode_pixels: u64,
}

impl ImageProcessor {
    pub fn new(config: ImageProcessorConfig) -> Self {
        Self {
            config,
            max_decode_pixels: DEFAULT_MAX_DECODE_PIXELS,
        }
    }

    /// Decodes PNG/JPEG bytes (format sniffed) to 8-bit RGB, refusing images
    /// over [`DEFAULT_MAX_DECODE_PIXELS`].
    pub fn decode(bytes: &[u8]) -> Result<image::RgbImage> {
        Self::decode_bounded(bytes, DEFAULT_MAX_DECODE_PIXELS)
    }

    /// Decodes PNG/JPEG bytes to 8-bit RGB. The size is read from the header
    /// first: an image over `max_pixels` is refused without being decoded.
    pub fn decode_bounded(bytes: &[u8], max_pixels: u64) -> Result<image::RgbImage> {
        let reader = || {
            image::ImageReader::new(std::io::Cursor::new(bytes))
                .with_guessed_format()
                .context("cannot read image")
        };
        let (w, h) = reader()?
            .into_dimensions()
            .context("cannot decode image (PNG or JPEG expected)")?;
        let pixels = u64::from(w) * u64::from(h);
        if pixels > max_pixels {
            bail!(
                "image is {w}x{h} = {pixels} pixels, over the limit of {max_pixels} (model.max_image_pixels); it was not decoded"
            );
        }
        let mut r = reader()?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(w);
        limits.max_image_height = Some(h);
        limits.max_alloc = Some((pixels * 8).max(512 << 20));
        r.limits(limits);
        let img = r
            .decode()
            .context("cannot decode image (PNG or JPEG expected)")?;
        Ok(img.to_rgb8())
    }

    /// The (height, width) an image of `width`x`height` pixels is resized to:
    /// multiples of patch_size * merge_size.
    pub fn resized(&self, width: usize, height: usize) -> Result<(usize, usize)> {
        let c = &self.config;
        let f = c.patch_size * c.merge_size;
        let (rh, rw) = if c.do_resize {
            smart_resize(height, width, f, c.min_pixels, c.max_pixels)?
        } else {
            (height, width)
        };
        if rh % f != 0 || rw % f != 0 {
            bail!("image size {width}x{height} is not a multiple of {f} (do_resize is false)");
        }
        Ok((rh, rw))
    }

    /// Vision tokens of an image resized to (height, width): one per
    /// merge_size x merge_size block of patches.
    pub fn tokens(&self, resized: (usize, usize)) -> usize {
        let f = self.config.patch_size * self.config.merge_size;
        (resized.0 / f) * (resized.1 / f)
    }

    /// Preprocesses one decoded RGB image.
    pub fn process_rgb(&self, img: &image::RgbImage) -> Result<ProcessedImage> {
        let c = &self.config;
        let (w, h) = (img.width() as usize, img.height() as usize);
        let p = c.patch_size;
        let m = c.merge_size;
        let (rh, rw) = self.resized(w, h)?;
        let pixels = if (rh, rw) == (h, w) {
            img.as_raw().clone()
        } else {
            resize_bicubic_rgb8(img.as_raw(), w, h, rw, rh)
        };
        // Rescale and normalise per channel, in f64 then rounded to f32.
        let plane = |ch: usize, y: usize, x: usize| -> f32 {
            let mut v = f64::from(pixels[(y * rw + x) * 3 + ch]);
            if c.do_rescale {
                v *= c.rescale_factor;
            }
            if c.do_normalize {
                v = (v - c.image_mean[ch]) / c.image_std[ch];
            }
            v as f32
        };
        let (gh, gw) = (rh / p, rw / p);
        let t = c.temporal_patch_size;
        let row_len = 3 * t * p * p;
        let mut out = Vec::with_capacity(gh * gw * row_len);
        // Rows ordered (block row, block col, row in block, col in block) so that
        // each merge group of m*m patches is contiguous; within a row the
        // layout is [channel, time, py, px] with the single frame repeated t times.
        for bh in 0..gh / m {
            for bw in 0..gw / m {
                for mh in 0..m {
                    for mw in 0..m {
                        let y0 = (bh * m + mh) * p;
                        let x0 = (bw * m + mw) * p;
                        for ch in 0..3 {
                            for _ in 0..t {
                                for py in 0..p {
                                    for px in 0..p {
                                        out.push(plane(ch, y0 + py, x0 + px));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(ProcessedImage {
            pixel_values: out,
            grid_thw: [1, gh as i64, gw as i64],
        })
    }

    /// Decodes and preprocesses encoded image bytes.
    pub fn process_bytes(&self, bytes: &[u8]) -> Result<ProcessedImage> {
        self.process_rgb(&Self::decode_bounded(bytes, self.max_decode_pixels)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_rules() {
        // Plain rounding; Python rounds 2.5 to 2 (70 / 28 = 2.5).
        assert_eq!(smart_resize(60, 100, 28, 3136, 50176).unwrap(), (56, 112));
        assert_eq!(smart_resize(150, 70, 28, 3136, 50176).unwrap(), (140, 56));
        // Below min_pixels: scaled up, ceil.
        assert_eq!(smart_resize(30, 50, 28, 3136, 50176).unwrap(), (56, 84));
        // Above max_pixels: scaled down, floor.
        assert_eq!(smart_resize(200, 300, 28, 3136, 50176).unwrap(), (168, 252));
        // The real models' defaults on a 1080p frame.
        assert_eq!(
            smart_resize(1080, 1920, 28, 3136, 12845056).unwrap(),
            (1092, 1932)
        );
        assert!(smart_resize(1, 300, 28, 3136, 50176).is_err());
    }

    #[test]
    fn kernel_weights_sum_to_one() {
        for (i, o) in [(100, 112), (60, 56), (300, 40), (7, 7)] {
            for (_, k) in coeffs(i, o) {
                let s: i64 = k.iter().map(|&v| i64::from(v)).sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= k.len() as i64,
                    "{i}->{o}: {s}"
                );
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![77u8; 33 * 21 * 3];
        let out = resize_bicubic_rgb8(&src, 33, 21, 56, 28);
        assert!(out.iter().all(|&v| v == 77));
    }
}
