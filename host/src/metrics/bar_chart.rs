//! Grouped bar charts as PNG files: one group per moment of a run (the start,
//! after each stage), one bar per series (dataset) with its value written on it.

use std::path::Path;

use anyhow::Result;

use super::canvas::{text_width, Canvas, BLACK, CHAR, PALETTE};
use super::plot::{frame_labels, legend, legend_width, y_axis, Frame};

pub struct BarChart {
    pub title: String,
    pub y_label: String,
    /// Group names under the axis; a `\n` splits one into two lines.
    pub groups: Vec<String>,
    /// (label, one value per group; `None` where the series has none).
    pub series: Vec<(String, Vec<Option<f64>>)>,
    /// The axis' top (at least the largest value); e.g. 1 for accuracies.
    pub y_max: f64,
}

/// Renders `chart` to a PNG at `path`.
pub fn render_bars(chart: &BarChart, path: &Path, width: u32, height: u32) -> Result<()> {
    let mut cv = Canvas::new(width, height);
    let legend_w = legend_width(chart.series.iter().map(|s| s.0.chars().count()));
    let f = Frame {
        left: 16 + CHAR * 5,
        right: cv.width() - legend_w.min(cv.width() / 3),
        top: 24 + CHAR * 3,
        bottom: cv.height() - 32 - CHAR * 3,
    };
    let top_value = chart
        .series
        .iter()
        .flat_map(|s| s.1.iter().flatten())
        .fold(chart.y_max, |a, &b| a.max(b));
    let sy = y_axis(&mut cv, &f, (0.0, top_value * 1.08));
    let n_groups = chart.groups.len().max(1) as i64;
    let group_w = (f.right - f.left) / n_groups;
    let n_bars = chart.series.len().max(1) as i64;
    let bar_w = (group_w * 3 / 4 / n_bars).max(2);
    let mut entries = Vec::new();
    for (i, (label, values)) in chart.series.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        for (g, value) in values.iter().enumerate() {
            let Some(v) = value.filter(|v| v.is_finite()) else {
                continue;
            };
            let x = f.left + group_w * g as i64 + group_w / 8 + bar_w * i as i64;
            cv.fill((x + 1, sy(v)), (x + bar_w - 2, f.bottom - 1), c);
            let text = format!("{v:.2}");
            if text_width(&text) <= bar_w + 4 {
                cv.text_centred(x + bar_w / 2, sy(v) - CHAR - 4, &text, BLACK);
            }
        }
        entries.push((label.clone(), c));
    }
    for (g, name) in chart.groups.iter().enumerate() {
        let centre = f.left + group_w * g as i64 + group_w / 2;
        for (line, part) in name.split('\n').enumerate() {
            cv.text_centred(
                centre,
                f.bottom + 10 + (CHAR + 4) * line as i64,
                part,
                BLACK,
            );
        }
    }
    legend(&mut cv, &f, &entries);
    frame_labels(&mut cv, &f, &chart.title, "", &chart.y_label);
    cv.save(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// The height in pixels of the tallest run of `c` in column `x`.
    fn bar_height(img: &image::RgbImage, x: u32, c: Rgb<u8>) -> u32 {
        (0..img.height())
            .filter(|&y| *img.get_pixel(x, y) == c)
            .count() as u32
    }

    #[test]
    fn bars_are_as_tall_as_their_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.png");
        let chart = BarChart {
            title: "Held-out accuracy after each stage".into(),
            y_label: "accuracy".into(),
            groups: vec![
                "start".into(),
                "after\ncold-start".into(),
                "after\nmgt".into(),
            ],
            series: vec![
                ("image".into(), vec![Some(0.0), Some(0.2), Some(0.8)]),
                ("text".into(), vec![Some(0.1), None, Some(0.4)]),
            ],
            y_max: 1.0,
        };
        render_bars(&chart, &path, 1000, 600).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        // Find each bar's column from the layout used above.
        let (left, right) = (16 + CHAR * 5, 1000 - (56 + CHAR * 5));
        let group_w = (right - left) / 3;
        let bar_w = group_w * 3 / 4 / 2;
        let column =
            |g: i64, i: i64| (left + group_w * g + group_w / 8 + bar_w * i + bar_w / 2) as u32;
        let image_after_mgt = bar_height(&img, column(2, 0), PALETTE[0]);
        let image_after_cold = bar_height(&img, column(1, 0), PALETTE[0]);
        let text_after_mgt = bar_height(&img, column(2, 1), PALETTE[1]);
        assert!(image_after_cold > 20, "{image_after_cold}");
        // 0.8 / 0.2 and 0.8 / 0.4, within a pixel or two of rounding.
        let ratio = f64::from(image_after_mgt) / f64::from(image_after_cold);
        assert!((ratio - 4.0).abs() < 0.1, "{ratio}");
        let ratio = f64::from(image_after_mgt) / f64::from(text_after_mgt);
        assert!((ratio - 2.0).abs() < 0.05, "{ratio}");
        // A missing value draws no bar.
        assert_eq!(bar_height(&img, column(1, 1), PALETTE[1]), 0);
    }
}
