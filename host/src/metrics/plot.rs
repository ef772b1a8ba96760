//! Line charts as PNG files, drawn directly into an RGB buffer: axes with
//! 1-2-5 ticks, grid, one polyline per series, a legend and labelled stage
//! boundaries. Text uses the public-domain 8x8 bitmap font, so no font files
//! or system libraries are needed.

use std::path::Path;

use anyhow::{Context, Result};
use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Vertical markers, e.g. `(120.0, "MGT")` where a stage begins.
    pub markers: Vec<(f64, String)>,
}

const PALETTE: [Rgb<u8>; 6] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
];
const BLACK: Rgb<u8> = Rgb([30, 30, 30]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const MARK: Rgb<u8> = Rgb([150, 150, 150]);

/// Tick positions covering `[lo, hi]` with a 1, 2 or 5 times power-of-ten step.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let span = (hi - lo).abs().max(1e-12);
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    // The 1-2-5 step whose tick count is closest to the target.
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .min_by(|a, b| {
            ((span / a) - target as f64)
                .abs()
                .total_cmp(&((span / b) - target as f64).abs())
        })
        .unwrap_or(mag);
    let first = (lo / step).ceil() * step;
    (0..)
        .map(|i| first + i as f64 * step)
        .take_while(|v| *v <= hi + step * 1e-9)
        .map(|v| if v.abs() < step * 1e-9 { 0.0 } else { v })
        .collect()
}

fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').to_string()
    }
}

struct Canvas {
    img: RgbImage,
}

impl Canvas {
    fn put(&mut self, x: i64, y: i64, c: Rgb<u8>) {
        if x >= 0 && y >= 0 && (x as u32) < self.img.width() && (y as u32) < self.img.height() {
            self.img.put_pixel(x as u32, y as u32, c);
        }
    }

    fn line(
        &mut self,
        (x0, y0): (i64, i64),
        (x1, y1): (i64, i64),
        c: Rgb<u8>,
        thick: i64,
        dash: Option<i64>,
    ) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err, mut n) = (x0, y0, dx + dy, 0i64);
        loop {
            if dash.is_none_or(|d| (n / d) % 2 == 0) {
                for ox in 0..thick {
                    for oy in 0..thick {
                        self.put(x + ox - thick / 2, y + oy - thick / 2, c);
                    }
                }
            }
            n += 1;
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text with its top-left corner at (x, y); `vertical` draws bottom-to-top.
    fn text(&mut self, x: i64, y: i64, s: &str, c: Rgb<u8>, vertical: bool) {
        for (i, ch) in s.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS
                .get(ch)
                .or_else(|| font8x8::BASIC_FONTS.get('?'))
                .unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        let (gx, gy) = (i as i64 * 8 + col, row as i64);
                        if vertical {
                            self.put(x + gy, y - gx, c);
                        } else {
                            self.put(x + gx, y + gy, c);
                        }
                    }
                }
            }
        }
    }
}

/// Renders `chart` to a PNG at `path`.
pub fn render_png(chart: &Chart, path: &Path, width: u32, height: u32) -> Result<()> {
    let mut cv = Canvas {
        img: RgbImage::from_pixel(width, height, Rgb([255, 255, 255])),
    };
    let (left, right, top, bottom) = (80i64, width as i64 - 20, 40i64, height as i64 - 50);
    let pts = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y0 -= 0.5;
        y1 += 0.5;
    }
    let pad = (y1 - y0) * 0.05;
    (y0, y1) = (y0 - pad, y1 + pad);
    let sx = |x: f64| left + ((x - x0) / (x1 - x0) * (right - left) as f64).round() as i64;
    let sy = |y: f64| bottom - ((y - y0) / (y1 - y0) * (bottom - top) as f64).round() as i64;

    for t in nice_ticks(y0, y1, 6) {
        cv.line((left, sy(t)), (right, sy(t)), GRID, 1, None);
        let label = fmt_tick(t);
        cv.text(
            left - 6 - 8 * label.len() as i64,
            sy(t) - 4,
            &label,
            BLACK,
            false,
        );
    }
    for t in nice_ticks(x0, x1, 8) {
        cv.line((sx(t), top), (sx(t), bottom), GRID, 1, None);
        let label = fmt_tick(t);
        cv.text(
            sx(t) - 4 * label.len() as i64,
            bottom + 8,
            &label,
            BLACK,
            false,
        );
    }
    for (x, name) in &chart.markers {
        if (x0..=x1).contains(x) {
            cv.line((sx(*x), top), (sx(*x), bottom), MARK, 1, Some(4));
            cv.text(sx(*x) + 4, top + 4, name, MARK, false);
        }
    }
    cv.line((left, bottom), (right, bottom), BLACK, 1, None);
    cv.line((left, top), (left, bottom), BLACK, 1, None);
    for (i, s) in chart.series.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let mut prev: Option<(i64, i64)> = None;
        for &(x, y) in &s.points {
            if !(x.is_finite() && y.is_finite()) {
                prev = None;
                continue;
            }
            let p = (sx(x), sy(y));
            match prev {
                Some(q) => cv.line(q, p, c, 2, None),
                None => cv.line(p, p, c, 3, None),
            }
            prev = Some(p);
        }
        let ly = top + 8 + 14 * i as i64;
        cv.line((left + 10, ly + 4), (left + 30, ly + 4), c, 2, None);
        cv.text(left + 36, ly, &s.label, BLACK, false);
    }
    cv.text(
        (width as i64 - 8 * chart.title.len() as i64) / 2,
        14,
        &chart.title,
        BLACK,
        false,
    );
    cv.text(
        (left + right) / 2 - 4 * chart.x_label.len() as i64,
        height as i64 - 20,
        &chart.x_label,
        BLACK,
        false,
    );
    cv.text(
        14,
        (top + bottom) / 2 + 4 * chart.y_label.len() as i64,
        &chart.y_label,
        BLACK,
        true,
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    cv.img
        .save(path)
        .with_context(|| format!("cannot write plot {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            nice_ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(nice_ticks(3.0, 97.0, 4), vec![20.0, 40.0, 60.0, 80.0]);
        assert_eq!(fmt_tick(0.25), "0.25");
        assert_eq!(fmt_tick(40.0), "40");
    }

    #[test]
    fn draws_series_in_their_colours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reward.png");
        let chart = Chart {
            title: "reward/mean".into(),
            x_label: "step".into(),
            y_label: "reward".into(),
            series: vec![
                Series {
                    label: "FRE".into(),
                    points: (0..20).map(|i| (i as f64, i as f64 / 20.0)).collect(),
                },
                Series {
                    label: "MGT".into(),
                    points: (20..40)
                        .map(|i| (i as f64, 1.0 - i as f64 / 80.0))
                        .collect(),
                },
            ],
            markers: vec![(20.0, "MGT".into())],
        };
        render_png(&chart, &path, 640, 400).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (640, 400));
        let count = |c: Rgb<u8>| img.pixels().filter(|p| **p == c).count();
        // Both series are drawn (well beyond their legend swatches).
        assert!(count(PALETTE[0]) > 200, "{}", count(PALETTE[0]));
        assert!(count(PALETTE[1]) > 200, "{}", count(PALETTE[1]));
        assert!(count(MARK) > 50);
    }
}
