//! The loader's TOML configuration (keys documented in docs/loaders.md).

use serde::Deserialize;

use crate::arithmetic::ArithKnobs;
use crate::shapes::{Color, GridKnobs};
use crate::split::Split;

/// Which generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    Arithmetic,
    ShapesCount,
    ShapesDescribe,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Arithmetic => "arithmetic",
            Task::ShapesCount => "shapes-count",
            Task::ShapesDescribe => "shapes-describe",
        }
    }
}

/// The keys as written; task knobs are optional so a knob given to a task
/// that ignores it can be reported instead of silently dropped.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    task: Task,
    #[serde(default)]
    split: Split,
    len: Option<u64>,
    #[serde(default)]
    seed: u64,
    system_prompt: Option<String>,
    min_terms: Option<u32>,
    max_terms: Option<u32>,
    max_operand: Option<u32>,
    max_result: Option<u32>,
    rows: Option<u32>,
    cols: Option<u32>,
    cells_in_trace: Option<bool>,
    colors: Option<Vec<Color>>,
    min_add: Option<u32>,
    max_add: Option<u32>,
    stop_early: Option<f64>,
    swap_color: Option<f64>,
}

/// Count-task knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountKnobs {
    pub colors: Vec<Color>,
    pub min_add: u32,
    pub max_add: u32,
}

impl Default for CountKnobs {
    fn default() -> Self {
        CountKnobs {
            colors: vec![Color::Red],
            min_add: 1,
            max_add: 5,
        }
    }
}

pub const DEFAULT_LEN: u64 = 1000;
/// Image pixel range of the tiny model's processor (`min_pixels`, `max_pixels`):
/// inside it, a grid of 28 px cells is not resized.
const MIN_CELLS: u32 = 4;
const MAX_CELLS: u32 = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub task: Task,
    pub split: Split,
    pub len: u64,
    pub seed: u64,
    pub system_prompt: Option<String>,
    pub arith: ArithKnobs,
    pub grid: GridKnobs,
    pub count: CountKnobs,
    /// Share of worked responses that stop one step early (a weak teacher's
    /// slip); 0 for a faithful teacher.
    pub stop_early: f64,
    /// Share of counting responses whose trace counts the colour not asked
    /// (a weak teacher's misreading of the question); 0 for a faithful one.
    pub swap_color: f64,
}

fn err(msg: impl std::fmt::Display) -> String {
    format!("loader-synthetic config: {msg}")
}

impl Config {
    pub fn parse(text: &str) -> Result<Self, String> {
        let r: Raw = toml::from_str(text).map_err(|e| err(e.message()))?;
        let task = r.task;
        let only = |key: &str, given: bool, tasks: &[Task]| -> Result<(), String> {
            if given && !tasks.contains(&task) {
                let names: Vec<&str> = tasks.iter().map(|t| t.name()).collect();
                return Err(err(format!(
                    "key `{key}` applies to task {} only, not to task \"{}\"",
                    names.join(" / "),
                    task.name()
                )));
            }
            Ok(())
        };
        use Task::*;
        only("min_terms", r.min_terms.is_some(), &[Arithmetic])?;
        only("max_terms", r.max_terms.is_some(), &[Arithmetic])?;
        only("max_operand", r.max_operand.is_some(), &[Arithmetic])?;
        only("max_result", r.max_result.is_some(), &[Arithmetic])?;
        only("rows", r.rows.is_some(), &[ShapesCount, ShapesDescribe])?;
        only("cols", r.cols.is_some(), &[ShapesCount, ShapesDescribe])?;
        let cit = r.cells_in_trace.is_some();
        only("cells_in_trace", cit, &[ShapesCount, ShapesDescribe])?;
        only("colors", r.colors.is_some(), &[ShapesCount])?;
        only("min_add", r.min_add.is_some(), &[ShapesCount])?;
        only("max_add", r.max_add.is_some(), &[ShapesCount])?;
        only(
            "stop_early",
            r.stop_early.is_some(),
            &[Arithmetic, ShapesCount],
        )?;
        only("swap_color", r.swap_color.is_some(), &[ShapesCount])?;

        let len = r.len.unwrap_or(DEFAULT_LEN);
        if len == 0 {
            return Err(err("`len` must be at least 1"));
        }

        let d = ArithKnobs::default();
        let arith = ArithKnobs {
            min_terms: r.min_terms.unwrap_or(d.min_terms),
            max_terms: r.max_terms.unwrap_or(d.max_terms),
            max_operand: r.max_operand.unwrap_or(d.max_operand),
            max_result: r.max_result.unwrap_or(d.max_result),
        };
        if !(2..=8).contains(&arith.min_terms) || !(2..=8).contains(&arith.max_terms) {
            return Err(err(format!(
                "`min_terms` ({}) and `max_terms` ({}) must be in 2..=8",
                arith.min_terms, arith.max_terms
            )));
        }
        if arith.min_terms > arith.max_terms {
            return Err(err(format!(
                "`min_terms` ({}) is larger than `max_terms` ({})",
                arith.min_terms, arith.max_terms
            )));
        }
        if !(1..=999).contains(&arith.max_operand) {
            return Err(err(format!(
                "`max_operand` ({}) must be in 1..=999",
                arith.max_operand
            )));
        }
        if !(1..=9999).contains(&arith.max_result) {
            return Err(err(format!(
                "`max_result` ({}) must be in 1..=9999",
                arith.max_result
            )));
        }

        let dg = GridKnobs::default();
        let grid = GridKnobs {
            rows: r.rows.unwrap_or(dg.rows),
            cols: r.cols.unwrap_or(dg.cols),
            cells_in_trace: r.cells_in_trace.unwrap_or(dg.cells_in_trace),
        };
        let cells = grid.rows.saturating_mul(grid.cols);
        if grid.rows == 0 || grid.cols == 0 || !(MIN_CELLS..=MAX_CELLS).contains(&cells) {
            return Err(err(format!(
                "`rows` x `cols` = {} x {} must be {MIN_CELLS} to {MAX_CELLS} cells (images of \
                 28 px cells inside the processor's 3136..=50176 pixels, so none is resized)",
                grid.rows, grid.cols
            )));
        }

        let dc = CountKnobs::default();
        let count = CountKnobs {
            colors: r.colors.unwrap_or(dc.colors),
            min_add: r.min_add.unwrap_or(dc.min_add),
            max_add: r.max_add.unwrap_or(dc.max_add),
        };
        if count.colors.is_empty() {
            return Err(err("`colors` must list at least one of \"red\", \"blue\""));
        }
        if count.colors.len() == 2 && count.colors[0] == count.colors[1] {
            return Err(err("`colors` lists the same colour twice"));
        }
        if count.min_add > count.max_add || count.max_add > 999 {
            return Err(err(format!(
                "`min_add` ({}) must not exceed `max_add` ({}), which must be at most 999",
                count.min_add, count.max_add
            )));
        }

        let share = |key: &str, v: Option<f64>| -> Result<f64, String> {
            let v = v.unwrap_or(0.0);
            if !(0.0..=1.0).contains(&v) {
                return Err(err(format!(
                    "`{key}` ({v}) is a share of the samples: it must be in 0..=1"
                )));
            }
            Ok(v)
        };
        let stop_early = share("stop_early", r.stop_early)?;
        let swap_color = share("swap_color", r.swap_color)?;

        Ok(Config {
            task,
            split: r.split,
            len,
            seed: r.seed,
            system_prompt: r.system_prompt,
            arith,
            grid,
            count,
            stop_early,
            swap_color,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::parse("task = \"arithmetic\"").unwrap();
        assert_eq!(c.split, Split::Train);
        assert_eq!(c.len, 1000);
        assert_eq!(c.seed, 0);
        assert_eq!(c.arith, ArithKnobs::default());
        assert_eq!(c.arith.max_result, 18);
        let c =
            Config::parse("task = \"shapes-count\"\nsplit = \"eval\"\nlen = 50\nseed = 9").unwrap();
        assert_eq!(
            (c.task, c.split, c.len, c.seed),
            (Task::ShapesCount, Split::Eval, 50, 9)
        );
        assert_eq!(
            (c.grid.rows, c.grid.cols, c.grid.cells_in_trace),
            (2, 2, true)
        );
        assert_eq!(c.count, CountKnobs::default());
    }

    #[test]
    fn all_keys() {
        let c = Config::parse(
            "task = \"shapes-count\"\nrows = 3\ncols = 4\ncells_in_trace = false\n\
             colors = [\"blue\", \"red\"]\nmin_add = 0\nmax_add = 9\nsystem_prompt = \"S\"",
        )
        .unwrap();
        assert_eq!(
            (c.grid.rows, c.grid.cols, c.grid.cells_in_trace),
            (3, 4, false)
        );
        assert_eq!(c.count.colors, vec![Color::Blue, Color::Red]);
        assert_eq!((c.count.min_add, c.count.max_add), (0, 9));
        assert_eq!(c.system_prompt.as_deref(), Some("S"));
        let c = Config::parse(
            "task = \"arithmetic\"\nmin_terms = 3\nmax_terms = 4\nmax_operand = 20\nmax_result = 50",
        )
        .unwrap();
        assert_eq!(
            c.arith,
            ArithKnobs {
                min_terms: 3,
                max_terms: 4,
                max_operand: 20,
                max_result: 50
            }
        );
    }

    #[test]
    fn errors_name_the_key() {
        for (text, needle) in [
            ("", "task"),
            ("task = \"algebra\"", "algebra"),
            ("task = \"arithmetic\"\nsplit = \"test\"", "test"),
            ("task = \"arithmetic\"\nlenght = 5", "lenght"),
            ("task = \"arithmetic\"\nlen = 0", "len"),
            (
                "task = \"arithmetic\"\nrows = 3",
                "`rows` applies to task shapes-count",
            ),
            ("task = \"shapes-describe\"\nmax_add = 3", "`max_add`"),
            ("task = \"shapes-count\"\nmax_operand = 3", "`max_operand`"),
            ("task = \"arithmetic\"\nmin_terms = 1", "min_terms"),
            (
                "task = \"arithmetic\"\nmin_terms = 4",
                "larger than `max_terms`",
            ),
            ("task = \"arithmetic\"\nmax_operand = 0", "max_operand"),
            ("task = \"shapes-count\"\nrows = 1\ncols = 2", "1 x 2"),
            ("task = \"shapes-count\"\nrows = 9\ncols = 8", "9 x 8"),
            ("task = \"shapes-count\"\ncolors = []", "colors"),
            (
                "task = \"shapes-count\"\ncolors = [\"red\", \"red\"]",
                "twice",
            ),
            ("task = \"shapes-count\"\ncolors = [\"green\"]", "green"),
            (
                "task = \"arithmetic\"\nstop_early = 1.5",
                "`stop_early` (1.5)",
            ),
            (
                "task = \"shapes-describe\"\nstop_early = 0.5",
                "`stop_early`",
            ),
            (
                "task = \"shapes-count\"\nswap_color = -0.1",
                "`swap_color` (-0.1)",
            ),
            ("task = \"arithmetic\"\nswap_color = 0.5", "`swap_color`"),
            (
                "task = \"shapes-count\"\nmin_add = 4\nmax_add = 2",
                "min_add",
            ),
        ] {
            let e = Config::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(e.starts_with("loader-synthetic config"), "{e}");
        }
    }
}
