//! An RGB drawing surface for the PNG plots: lines, filled boxes and text in
//! the public-domain 8x8 bitmap font scaled up by whole pixels, so plots need
//! no font files or system libraries.

use std::path::Path;

use anyhow::{Context, Result};
use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

pub const PALETTE: [Rgb<u8>; 6] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
];
pub const BLACK: Rgb<u8> = Rgb([30, 30, 30]);
pub const GRID: Rgb<u8> = Rgb([225, 225, 225]);
pub const MARK: Rgb<u8> = Rgb([150, 150, 150]);

/// Pixels per font pixel: 16-pixel glyphs read well at the plots' size.
pub const TEXT_SCALE: i64 = 2;
/// Width (and height) of one character in pixels.
pub const CHAR: i64 = 8 * TEXT_SCALE;

/// `c` at `alpha` over white: the faint version of a series' colour.
pub fn faint(c: Rgb<u8>, alpha: f64) -> Rgb<u8> {
    Rgb(c
        .0
        .map(|v| (f64::from(v) * alpha + 255.0 * (1.0 - alpha)).round() as u8))
}

/// Width in pixels of `s` in the plot font.
pub fn text_width(s: &str) -> i64 {
    CHAR * s.chars().count() as i64
}

pub struct Canvas {
    pub img: RgbImage,
}

impl Canvas {
    pub fn new(width: u32, height: u32) -> Canvas {
        Canvas {
            img: RgbImage::from_pixel(width, height, Rgb([255, 255, 255])),
        }
    }

    pub fn width(&self) -> i64 {
        i64::from(self.img.width())
    }

    pub fn height(&self) -> i64 {
        i64::from(self.img.height())
    }

    pub fn put(&mut self, x: i64, y: i64, c: Rgb<u8>) {
        if x >= 0 && y >= 0 && (x as u32) < self.img.width() && (y as u32) < self.img.height() {
            self.img.put_pixel(x as u32, y as u32, c);
        }
    }

    /// The box from (x0, y0) to (x1, y1), both corners included.
    pub fn fill(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>) {
        for x in x0.min(x1)..=x0.max(x1) {
            for y in y0.min(y1)..=y0.max(y1) {
                self.put(x, y, c);
            }
        }
    }

    pub fn line(
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
    pub fn text(&mut self, x: i64, y: i64, s: &str, c: Rgb<u8>, vertical: bool) {
        for (i, ch) in s.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS
                .get(ch)
                .or_else(|| font8x8::BASIC_FONTS.get('?'))
                .unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) == 0 {
                        continue;
                    }
                    let (gx, gy) = (i as i64 * CHAR + col * TEXT_SCALE, row as i64 * TEXT_SCALE);
                    for ox in 0..TEXT_SCALE {
                        for oy in 0..TEXT_SCALE {
                            if vertical {
                                self.put(x + gy + oy, y - gx - ox, c);
                            } else {
                                self.put(x + gx + ox, y + gy + oy, c);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Text centred horizontally on `x`.
    pub fn text_centred(&mut self, x: i64, y: i64, s: &str, c: Rgb<u8>) {
        self.text(x - text_width(s) / 2, y, s, c, false);
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        self.img
            .save(path)
            .with_context(|| format!("cannot write plot {}", path.display()))
    }
}
