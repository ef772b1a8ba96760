//! Grids of coloured squares: each 28 px cell is empty or holds a solid red or
//! blue square. 28 px is one merged vision token of Qwen2.5-VL (patch 14,
//! merge 2), so a `rows x cols` grid becomes exactly `rows * cols` image
//! tokens, one per cell, and the processor never resizes it.

use serde::Deserialize;

use crate::png;
use crate::rng::Rng;
use crate::split::Split;

/// Side of one cell in pixels: one merged vision token.
pub const CELL_PX: u32 = 28;
/// Empty border around the square inside its cell.
pub const MARGIN_PX: u32 = 4;
pub const BACKGROUND: [u8; 3] = [255, 255, 255];
pub const RED: [u8; 3] = [220, 40, 40];
pub const BLUE: [u8; 3] = [40, 80, 220];

/// A square's colour (config values "red", "blue").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Red,
    Blue,
}

impl Color {
    pub fn name(self) -> &'static str {
        match self {
            Color::Red => "red",
            Color::Blue => "blue",
        }
    }

    pub fn other(self) -> Color {
        match self {
            Color::Red => Color::Blue,
            Color::Blue => Color::Red,
        }
    }

    pub fn rgb(self) -> [u8; 3] {
        match self {
            Color::Red => RED,
            Color::Blue => BLUE,
        }
    }
}

/// Grid knobs (config keys `rows`, `cols`, `cells_in_trace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridKnobs {
    pub rows: u32,
    pub cols: u32,
    /// Whether the `<think>` trace first lists every cell (`see red . blue red,`).
    pub cells_in_trace: bool,
}

impl Default for GridKnobs {
    fn default() -> Self {
        GridKnobs {
            rows: 2,
            cols: 2,
            cells_in_trace: true,
        }
    }
}

/// A grid layout: row-major cells, `None` for an empty cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grid {
    pub rows: u32,
    pub cols: u32,
    pub cells: Vec<Option<Color>>,
}

impl Grid {
    /// Each cell empty, red or blue with probability 1/3: uniform over layouts.
    pub fn random(rng: &mut Rng, rows: u32, cols: u32) -> Grid {
        let cells = (0..rows * cols)
            .map(|_| match rng.below(3) {
                0 => None,
                1 => Some(Color::Red),
                _ => Some(Color::Blue),
            })
            .collect();
        Grid { rows, cols, cells }
    }

    /// Layout number `code` in base 3 (digit 0 empty, 1 red, 2 blue; cell 0 lowest).
    pub fn from_code(rows: u32, cols: u32, mut code: u64) -> Grid {
        let cells = (0..rows * cols)
            .map(|_| {
                let d = code % 3;
                code /= 3;
                match d {
                    0 => None,
                    1 => Some(Color::Red),
                    _ => Some(Color::Blue),
                }
            })
            .collect();
        Grid { rows, cols, cells }
    }

    /// Row-major cell letters: `R.BR` (`.` empty).
    pub fn letters(&self) -> String {
        self.cells
            .iter()
            .map(|c| match c {
                None => '.',
                Some(Color::Red) => 'R',
                Some(Color::Blue) => 'B',
            })
            .collect()
    }

    /// The split key. Both image tasks split by the layout alone, so no eval
    /// image ever appears in training, whatever the question asked about it.
    pub fn split(&self) -> Split {
        Split::of(&format!(
            "grid:{}x{}:{}",
            self.rows,
            self.cols,
            self.letters()
        ))
    }

    pub fn count(&self, color: Color) -> u32 {
        self.cells.iter().filter(|&&c| c == Some(color)).count() as u32
    }

    /// `red . blue red`: the cells in reading order.
    pub fn cell_words(&self) -> String {
        self.cells
            .iter()
            .map(|c| c.map_or(".", Color::name))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn width_px(&self) -> u32 {
        self.cols * CELL_PX
    }

    pub fn height_px(&self) -> u32 {
        self.rows * CELL_PX
    }

    /// The image as raw RGB bytes, row-major.
    pub fn render_rgb(&self) -> Vec<u8> {
        let (w, h) = (self.width_px(), self.height_px());
        let mut rgb = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                let cell = (y / CELL_PX) * self.cols + x / CELL_PX;
                let (cx, cy) = (x % CELL_PX, y % CELL_PX);
                let inside = (MARGIN_PX..CELL_PX - MARGIN_PX).contains(&cx)
                    && (MARGIN_PX..CELL_PX - MARGIN_PX).contains(&cy);
                let px = match self.cells[cell as usize] {
                    Some(c) if inside => c.rgb(),
                    _ => BACKGROUND,
                };
                rgb.extend_from_slice(&px);
            }
        }
        rgb
    }

    pub fn render_png(&self) -> Vec<u8> {
        png::encode_rgb(self.width_px(), self.height_px(), &self.render_rgb())
    }
}

/// `see red . blue red, ` when cells are listed, else nothing.
fn cells_prefix(grid: &Grid, k: &GridKnobs) -> String {
    if k.cells_in_trace {
        format!("see {}, ", grid.cell_words())
    } else {
        String::new()
    }
}

/// A weak teacher's slips in a counting response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slips {
    /// The trace ends at the count, and answers it.
    pub stop_early: bool,
    /// The trace counts the colour not asked.
    pub swap_color: bool,
}

/// The counting question's (prompt, response, answer). The response is the
/// worked trace, with `slips` (a weak teacher's) where any are set;
/// `answer` is always the true result.
pub fn count_problem(
    grid: &Grid,
    k: &GridKnobs,
    color: Color,
    add: u32,
    slips: Slips,
) -> (String, String, u32) {
    let answer = grid.count(color) + add;
    let asked = color.name();
    let prompt = format!("How many {asked} squares? Add {add}.");
    let counted = if slips.swap_color {
        color.other()
    } else {
        color
    };
    let (name, n) = (counted.name(), grid.count(counted));
    let cells = cells_prefix(grid, k);
    let response = if slips.stop_early {
        format!("<think>{cells}{name}={n}</think><answer>{n}</answer>")
    } else {
        let sum = n + add;
        format!("<think>{cells}{name}={n} {n}+{add}={sum}</think><answer>{sum}</answer>")
    };
    (prompt, response, answer)
}

/// The description's (prompt, response, answer). Its trace is the first half
/// of the counting trace (cells, then `red=2`), so describing teaches the
/// perception the counting task builds on.
pub fn describe_problem(grid: &Grid, k: &GridKnobs) -> (String, String, String) {
    let (r, b) = (grid.count(Color::Red), grid.count(Color::Blue));
    let answer = format!("{r} red {b} blue");
    let response = format!(
        "<think>{}red={r} blue={b}</think><answer>{answer}</answer>",
        cells_prefix(grid, k)
    );
    ("Describe the image.".to_owned(), response, answer)
}

/// Distinct layouts per split (train, eval), or `None` when there are more
/// than `cap` (then they are not enumerated).
pub fn count_layouts(rows: u32, cols: u32, cap: u64) -> Option<(u64, u64)> {
    let total = 3u64.checked_pow(rows * cols)?;
    if total > cap {
        return None;
    }
    let eval = (0..total)
        .filter(|&c| Grid::from_code(rows, cols, c).split() == Split::Eval)
        .count() as u64;
    Some((total - eval, eval))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(letters: &str) -> Grid {
        let cells = letters
            .chars()
            .map(|c| match c {
                'R' => Some(Color::Red),
                'B' => Some(Color::Blue),
                _ => None,
            })
            .collect();
        Grid {
            rows: 2,
            cols: 2,
            cells,
        }
    }

    #[test]
    fn traces() {
        let g = grid("R.BR");
        let k = GridKnobs::default();
        let (p, r, a) = count_problem(&g, &k, Color::Red, 3, Slips::default());
        assert_eq!(p, "How many red squares? Add 3.");
        assert_eq!(
            r,
            "<think>see red . blue red, red=2 2+3=5</think><answer>5</answer>"
        );
        assert_eq!(a, 5);
        let (_, r, a) = count_problem(&g, &k, Color::Blue, 4, Slips::default());
        assert_eq!(
            r,
            "<think>see red . blue red, blue=1 1+4=5</think><answer>5</answer>"
        );
        assert_eq!(a, 5);
        let plain = GridKnobs {
            cells_in_trace: false,
            ..k
        };
        let (_, r, _) = count_problem(&g, &plain, Color::Red, 3, Slips::default());
        assert_eq!(r, "<think>red=2 2+3=5</think><answer>5</answer>");
        // A slip: the trace stops at the count, and answers it.
        let stop = Slips {
            stop_early: true,
            swap_color: false,
        };
        let (_, r, a) = count_problem(&g, &k, Color::Red, 3, stop);
        assert_eq!(
            r,
            "<think>see red . blue red, red=2</think><answer>2</answer>"
        );
        assert_eq!(a, 5);
        // The other slip: the trace counts blue when asked about red.
        let swap = Slips {
            stop_early: false,
            swap_color: true,
        };
        let (p, r, a) = count_problem(&g, &k, Color::Red, 3, swap);
        assert_eq!(p, "How many red squares? Add 3.");
        assert_eq!(
            r,
            "<think>see red . blue red, blue=1 1+3=4</think><answer>4</answer>"
        );
        assert_eq!(a, 5);
        let (p, r, a) = describe_problem(&g, &k);
        assert_eq!(p, "Describe the image.");
        assert_eq!(
            r,
            "<think>see red . blue red, red=2 blue=1</think><answer>2 red 1 blue</answer>"
        );
        assert_eq!(a, "2 red 1 blue");
    }

    #[test]
    fn codes_cover_every_layout_once() {
        let mut seen = std::collections::HashSet::new();
        for c in 0..81 {
            assert!(seen.insert(Grid::from_code(2, 2, c).letters()));
        }
        assert_eq!(Grid::from_code(2, 2, 1 + 2 * 3 + 27).letters(), "RB.R");
        let (train, eval) = count_layouts(2, 2, 1000).unwrap();
        assert_eq!(train + eval, 81);
        assert!(eval > 5 && train > 50, "{train}/{eval}");
        assert!(count_layouts(4, 4, 1000).is_none());
    }
}
