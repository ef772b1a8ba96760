//! Line charts as PNG files: axes with 1-2-5 ticks, grid, one curve per
//! series (training curves smoothed over their faint raw points, evaluations
//! as marked points), a legend beside the plot and labelled stage boundaries.

use std::path::Path;

use anyhow::Result;
use image::Rgb;

use super::canvas::{faint, text_width, Canvas, BLACK, CHAR, GRID, MARK, PALETTE};

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// A plain line.
    Line,
    /// The raw points faint, a smoothed line over them (noisy per-step metrics).
    Smoothed,
    /// A line with a square at every point (sparse measurements: evaluations).
    Points,
}

pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub style: Style,
}

pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Vertical markers, e.g. `(120.0, "MGT")` where a stage begins.
    pub markers: Vec<(f64, String)>,
}

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

pub fn fmt_tick(v: f64) -> String {
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

/// Exponential moving average with bias correction (as TensorBoard smooths):
/// the first points are not pulled towards zero. The span grows with the
/// number of points, so short stages stay close to their raw values.
pub fn smooth(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let span = (points.len() as f64 / 10.0).clamp(1.0, 50.0);
    let weight = 1.0 - 2.0 / (span + 1.0);
    let (mut avg, mut norm) = (0.0, 0.0);
    points
        .iter()
        .map(|&(x, y)| {
            avg = avg * weight + (1.0 - weight) * y;
            norm = norm * weight + (1.0 - weight);
            (x, avg / norm)
        })
        .collect()
}

/// The plot area inside the canvas: left, right, top, bottom.
pub struct Frame {
    pub left: i64,
    pub right: i64,
    pub top: i64,
    pub bottom: i64,
}

/// Horizontal grid lines with tick labels for `[y0, y1]`; returns the
/// value-to-pixel map.
pub fn y_axis(cv: &mut Canvas, f: &Frame, (y0, y1): (f64, f64)) -> impl Fn(f64) -> i64 {
    let (top, bottom) = (f.top, f.bottom);
    let sy = move |y: f64| bottom - ((y - y0) / (y1 - y0) * (bottom - top) as f64).round() as i64;
    for t in nice_ticks(y0, y1, 6) {
        cv.line((f.left, sy(t)), (f.right, sy(t)), GRID, 1, None);
        let label = fmt_tick(t);
        cv.text(
            f.left - 8 - text_width(&label),
            sy(t) - CHAR / 2,
            &label,
            BLACK,
            false,
        );
    }
    sy
}

/// Title on top, the axis names and the axes' lines.
pub fn frame_labels(cv: &mut Canvas, f: &Frame, title: &str, x_label: &str, y_label: &str) {
    cv.line((f.left, f.bottom), (f.right, f.bottom), BLACK, 1, None);
    cv.line((f.left, f.top), (f.left, f.bottom), BLACK, 1, None);
    cv.text_centred(cv.width() / 2, 12, title, BLACK);
    cv.text_centred(
        (f.left + f.right) / 2,
        cv.height() - CHAR - 8,
        x_label,
        BLACK,
    );
    cv.text(
        10,
        (f.top + f.bottom) / 2 + text_width(y_label) / 2,
        y_label,
        BLACK,
        true,
    );
}

/// Draws the series' legend to the right of the plot area.
pub fn legend(cv: &mut Canvas, f: &Frame, entries: &[(String, Rgb<u8>)]) {
    for (i, (label, c)) in entries.iter().enumerate() {
        let y = f.top + 8 + (CHAR + 10) * i as i64;
        cv.fill((f.right + 16, y + 2), (f.right + 36, y + CHAR - 3), *c);
        cv.text(f.right + 44, y, label, BLACK, false);
    }
}

/// Width of the legend beside the plot for labels of these lengths.
pub fn legend_width(labels: impl Iterator<Item = usize>) -> i64 {
    56 + CHAR * labels.max().unwrap_or(0) as i64
}

/// Renders `chart` to a PNG at `path`.
pub fn render_png(chart: &Chart, path: &Path, width: u32, height: u32) -> Result<()> {
    let mut cv = Canvas::new(width, height);
    let legend_w = legend_width(chart.series.iter().map(|s| s.label.chars().count()));
    let f = Frame {
        left: 16 + CHAR * 8,
        right: cv.width() - legend_w.min(cv.width() / 3),
        top: 24 + CHAR * 2,
        bottom: cv.height() - 24 - CHAR * 2,
    };
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in chart
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
    {
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
    let sy = y_axis(&mut cv, &f, (y0 - pad, y1 + pad));
    let sx = |x: f64| f.left + ((x - x0) / (x1 - x0) * (f.right - f.left) as f64).round() as i64;
    for t in nice_ticks(x0, x1, 8) {
        cv.line((sx(t), f.top), (sx(t), f.bottom), GRID, 1, None);
        cv.text_centred(sx(t), f.bottom + 8, &fmt_tick(t), BLACK);
    }
    // Stage names alternate between two rows so that short stages stay legible.
    for (i, (x, name)) in chart.markers.iter().enumerate() {
        if (x0..=x1).contains(x) {
            cv.line((sx(*x), f.top), (sx(*x), f.bottom), MARK, 1, Some(4));
            let y = f.top - CHAR - 4 - if i % 2 == 1 { CHAR + 2 } else { 0 };
            cv.text(sx(*x) + 4, y.max(CHAR + 16), name, MARK, false);
        }
    }
    let mut entries = Vec::new();
    for (i, s) in chart.series.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let to_px = |points: &[(f64, f64)]| -> Vec<Option<(i64, i64)>> {
            points
                .iter()
                .map(|&(x, y)| (x.is_finite() && y.is_finite()).then(|| (sx(x), sy(y))))
                .collect()
        };
        match s.style {
            Style::Line => polyline(&mut cv, &to_px(&s.points), c, 2),
            Style::Smoothed => {
                let raw = to_px(&s.points);
                polyline(&mut cv, &raw, faint(c, 0.3), 1);
                let finite: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect();
                polyline(&mut cv, &to_px(&smooth(&finite)), c, 3);
            }
            Style::Points => {
                let px = to_px(&s.points);
                polyline(&mut cv, &px, c, 2);
                for &(x, y) in px.iter().flatten() {
                    cv.fill((x - 4, y - 4), (x + 4, y + 4), c);
                }
            }
        }
        entries.push((s.label.clone(), c));
    }
    legend(&mut cv, &f, &entries);
    frame_labels(&mut cv, &f, &chart.title, &chart.x_label, &chart.y_label);
    cv.save(path)
}

/// Connected runs of points; `None` breaks the line.
fn polyline(cv: &mut Canvas, points: &[Option<(i64, i64)>], c: Rgb<u8>, thick: i64) {
    let mut prev = None;
    for p in points {
        match (prev, p) {
            (Some(q), Some(p)) => cv.line(q, *p, c, thick, None),
            (None, Some(p)) => cv.line(*p, *p, c, thick + 1, None),
            _ => {}
        }
        prev = *p;
    }
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
                    style: Style::Line,
                },
                Series {
                    label: "MGT".into(),
                    points: (20..40)
                        .map(|i| (i as f64, 1.0 - i as f64 / 80.0))
                        .collect(),
                    style: Style::Points,
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

    #[test]
    fn smoothing_keeps_a_constant_and_lags_a_jump() {
        let flat: Vec<(f64, f64)> = (0..30).map(|i| (i as f64, 0.7)).collect();
        for (_, y) in smooth(&flat) {
            assert!((y - 0.7).abs() < 1e-12, "{y}");
        }
        // 100 points: span 10, weight w = 9/11. A jump from 0 to 1 at point 50
        // is reached gradually: (1 - w^k) after k points, over the bias
        // correction 1 - w^(n+1) after n+1 points.
        let jump: Vec<(f64, f64)> = (0..100)
            .map(|i| (i as f64, if i < 50 { 0.0 } else { 1.0 }))
            .collect();
        let s = smooth(&jump);
        let w: f64 = 9.0 / 11.0;
        assert!((s[49].1).abs() < 1e-12);
        assert!((s[50].1 - (1.0 - w) / (1.0 - w.powi(51))).abs() < 1e-12);
        assert!((s[59].1 - (1.0 - w.powi(10)) / (1.0 - w.powi(60))).abs() < 1e-12);
    }

    #[test]
    fn smoothed_series_show_their_raw_points_faintly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acc.png");
        let chart = Chart {
            title: "accuracy".into(),
            x_label: "step".into(),
            y_label: "accuracy".into(),
            series: vec![Series {
                label: "mgt".into(),
                points: (0..60)
                    .map(|i| (i as f64, if i % 2 == 0 { 0.2 } else { 0.8 }))
                    .collect(),
                style: Style::Smoothed,
            }],
            markers: vec![],
        };
        render_png(&chart, &path, 900, 500).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let count = |c: Rgb<u8>| img.pixels().filter(|p| **p == c).count();
        assert!(
            count(faint(PALETTE[0], 0.3)) > 500,
            "{}",
            count(faint(PALETTE[0], 0.3))
        );
        assert!(count(PALETTE[0]) > 500, "{}", count(PALETTE[0]));
    }
}
