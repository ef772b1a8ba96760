//! The loader: config -> deterministic, random-access samples.

use lmmhost_sdk::{ContentPart, DatasetInfo, ImageSource, Loader, Message, Sample};

use crate::arithmetic::{self, Expr};
use crate::config::{Config, Task};
use crate::rng::{hash_str, mix, Rng};
use crate::shapes::{self, Grid, Slips};
use crate::split::{Split, EVAL_MODULUS};

/// Rejection-sampling budget per sample. The split keeps about 1 in 5 (eval)
/// or 4 in 5 (train) problems and the default knobs keep about half of the
/// arithmetic draws, so this is only reached when a split is (nearly) empty.
const MAX_ATTEMPTS: u32 = 100_000;
/// Larger problem spaces are not enumerated for DatasetInfo.notes.
const ENUMERATION_CAP: u64 = 200_000;
/// Key the streams of the slips' draws (`stop_early`, `swap_color`), apart
/// from the problems' stream, so that a dataset's problems are the same
/// whatever its slips.
const STOP_STREAM: u64 = 0x5354_4F50_4541_524C;
const SWAP_STREAM: u64 = 0x5357_4150_434F_4C52;

/// One generated problem before it becomes a [`Sample`].
struct Generated {
    prompt: String,
    image: Option<Vec<u8>>,
    response: String,
    answer: String,
    metadata: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct SyntheticLoader {
    cfg: Config,
    /// Per (task, split, seed) stream key; sample `i` uses `mix(stream ^ mix(i))`.
    stream: u64,
}

fn kv(k: &str, v: impl ToString) -> (String, String) {
    (k.to_owned(), v.to_string())
}

impl SyntheticLoader {
    pub fn new(cfg: Config) -> Result<(Self, DatasetInfo), String> {
        let notes = describe_splits(&cfg)?;
        let stream =
            mix(hash_str(&format!("{}/{}", cfg.task.name(), cfg.split.name())) ^ mix(cfg.seed));
        let info = DatasetInfo {
            len: cfg.len,
            skipped_rows: 0,
            notes,
        };
        Ok((SyntheticLoader { cfg, stream }, info))
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The weak teacher's slips in sample `index`'s response, each drawn
    /// with its configured share.
    fn slips(&self, index: u64) -> Slips {
        let draw = |share: f64, key: u64| {
            share > 0.0 && Rng::new(mix(self.stream ^ mix(index) ^ key)).chance(share)
        };
        Slips {
            stop_early: draw(self.cfg.stop_early, STOP_STREAM),
            swap_color: draw(self.cfg.swap_color, SWAP_STREAM),
        }
    }

    fn generate(&self, index: u64) -> Result<Generated, String> {
        let mut rng = Rng::new(mix(self.stream ^ mix(index)));
        let split = self.cfg.split;
        let slip = self.slips(index);
        for _ in 0..MAX_ATTEMPTS {
            let g = match self.cfg.task {
                Task::Arithmetic => self.arithmetic(&mut rng, split, slip.stop_early),
                Task::ShapesCount => self.shapes_count(&mut rng, split, slip),
                Task::ShapesDescribe => self.shapes_describe(&mut rng, split),
            };
            if let Some(g) = g {
                return Ok(g);
            }
        }
        Err(format!(
            "loader-synthetic: sample {index}: no {} problem of the {} split found in {MAX_ATTEMPTS} \
             draws; the task knobs leave (almost) no problems in this split",
            self.cfg.task.name(),
            split.name()
        ))
    }

    /// `slip`: the response stops one step early (chains of 3+ terms only:
    /// a single step has no earlier result to stop at).
    fn arithmetic(&self, rng: &mut Rng, split: Split, slip: bool) -> Option<Generated> {
        let k = &self.cfg.arith;
        let e = Expr::random(rng, k);
        let steps = e.steps(k.max_result)?;
        if e.split() != split {
            return None;
        }
        let result = steps.last()?.value;
        let trace = arithmetic::trace(&steps);
        let stopped = slip && steps.len() >= 2;
        let response = if stopped {
            let shown = &steps[..steps.len() - 1];
            let early = shown.last()?.value;
            format!(
                "<think>{}</think><answer>{early}</answer>",
                arithmetic::trace(shown)
            )
        } else {
            format!("<think>{trace}</think><answer>{result}</answer>")
        };
        let expression = e.canonical();
        let operands: Vec<String> = e.operands.iter().map(u32::to_string).collect();
        let ops: String = e.ops.iter().map(|o| o.symbol()).collect();
        Some(Generated {
            prompt: format!("Compute {expression}."),
            image: None,
            response,
            answer: result.to_string(),
            metadata: vec![
                kv("expression", &expression),
                kv("operands", operands.join(",")),
                kv("ops", ops),
                kv("trace", trace),
                kv("result", result),
                kv("stopped_early", stopped),
            ],
        })
    }

    fn random_grid(&self, rng: &mut Rng, split: Split) -> Option<Grid> {
        let g = Grid::random(rng, self.cfg.grid.rows, self.cfg.grid.cols);
        (g.split() == split).then_some(g)
    }

    fn grid_metadata(g: &Grid) -> Vec<(String, String)> {
        vec![
            kv("grid", format!("{}x{}", g.rows, g.cols)),
            kv("cells", g.letters()),
            kv("red", g.count(shapes::Color::Red)),
            kv("blue", g.count(shapes::Color::Blue)),
        ]
    }

    fn shapes_count(&self, rng: &mut Rng, split: Split, slip: Slips) -> Option<Generated> {
        let c = &self.cfg.count;
        let g = self.random_grid(rng, split)?;
        let color = c.colors[rng.below(c.colors.len() as u64) as usize];
        let add = rng.range(c.min_add, c.max_add);
        let (prompt, response, answer) =
            shapes::count_problem(&g, &self.cfg.grid, color, add, slip);
        let mut metadata = Self::grid_metadata(&g);
        metadata.extend([
            kv("color", color.name()),
            kv("count", g.count(color)),
            kv("add", add),
            kv("result", answer),
            kv("stopped_early", slip.stop_early),
            kv("swapped_color", slip.swap_color),
        ]);
        Some(Generated {
            prompt,
            image: Some(g.render_png()),
            response,
            answer: answer.to_string(),
            metadata,
        })
    }

    fn shapes_describe(&self, rng: &mut Rng, split: Split) -> Option<Generated> {
        let g = self.random_grid(rng, split)?;
        let (prompt, response, answer) = shapes::describe_problem(&g, &self.cfg.grid);
        Some(Generated {
            prompt,
            image: Some(g.render_png()),
            response,
            answer,
            metadata: Self::grid_metadata(&g),
        })
    }
}

/// DatasetInfo.notes: what the split holds and why it is disjoint from the other.
/// Fails when the split provably holds no problem.
fn describe_splits(cfg: &Config) -> Result<Vec<String>, String> {
    let (task, split) = (cfg.task.name(), cfg.split.name());
    let mut notes = vec![format!(
        "{task}, {split} split, seed {}: {} samples drawn with repetition; train and eval are \
         disjoint (a problem is eval iff a fixed hash of it is 0 mod {EVAL_MODULUS}, whatever \
         the seed, len or knobs)",
        cfg.seed, cfg.len
    )];
    let pick = |(train, eval): (u64, u64)| match cfg.split {
        Split::Train => train,
        Split::Eval => eval,
    };
    let distinct = match cfg.task {
        Task::Arithmetic => match arithmetic::count_problems(&cfg.arith, ENUMERATION_CAP) {
            Some(tv @ (train, eval)) => {
                notes.push(format!("distinct problems: {train} train, {eval} eval"));
                Some(pick(tv))
            }
            None => {
                notes.push(format!(
                    "more than {ENUMERATION_CAP} distinct problems (not enumerated); about 1 in {EVAL_MODULUS} is eval"
                ));
                None
            }
        },
        Task::ShapesCount | Task::ShapesDescribe => {
            let (rows, cols) = (cfg.grid.rows, cfg.grid.cols);
            let per_layout = if cfg.task == Task::ShapesCount {
                cfg.count.colors.len() as u64 * u64::from(cfg.count.max_add - cfg.count.min_add + 1)
            } else {
                1
            };
            match shapes::count_layouts(rows, cols, ENUMERATION_CAP) {
                Some(tv @ (train, eval)) => {
                    notes.push(format!(
                        "distinct {rows}x{cols} grid layouts (images): {train} train, {eval} eval, \
                         {per_layout} question(s) each; both image tasks split by layout, so no \
                         eval image is in any train split"
                    ));
                    Some(pick(tv) * per_layout)
                }
                None => {
                    notes.push(format!(
                        "3^{} grid layouts (not enumerated); about 1 in {EVAL_MODULUS} is eval, \
                         and both image tasks split by layout",
                        rows * cols
                    ));
                    None
                }
            }
        }
    };
    match distinct {
        Some(0) => {
            return Err(format!(
                "loader-synthetic: the {split} split of {task} holds no problem with these knobs; \
                 widen them"
            ))
        }
        Some(n) if n < cfg.len => notes.push(format!(
            "len {} exceeds the {n} distinct {split} problems: samples repeat",
            cfg.len
        )),
        _ => {}
    }
    Ok(notes)
}

impl Loader for SyntheticLoader {
    fn open(config: &str, files: &[String]) -> Result<(Self, DatasetInfo), String> {
        if !files.is_empty() {
            return Err(format!(
                "loader-synthetic generates its samples and reads no files, but was given {files:?}; \
                 remove `files` from the dataset"
            ));
        }
        SyntheticLoader::new(Config::parse(config)?)
    }

    fn get(&self, index: u64) -> Result<Sample, String> {
        if index >= self.cfg.len {
            return Err(format!(
                "loader-synthetic: index {index} is out of range (len {})",
                self.cfg.len
            ));
        }
        let g = self.generate(index)?;
        let (task, split) = (self.cfg.task.name(), self.cfg.split.name());
        let mut messages = Vec::with_capacity(3);
        if let Some(s) = &self.cfg.system_prompt {
            messages.push(Message {
                role: "system".into(),
                content: vec![ContentPart::Text(s.clone())],
            });
        }
        let mut user = Vec::with_capacity(2);
        if let Some(png) = g.image {
            user.push(ContentPart::Image(ImageSource::Bytes(png)));
        }
        user.push(ContentPart::Text(g.prompt));
        messages.push(Message {
            role: "user".into(),
            content: user,
        });
        messages.push(Message {
            role: "assistant".into(),
            content: vec![ContentPart::Text(g.response)],
        });
        let mut metadata = vec![
            kv("task", task),
            kv("split", split),
            kv("seed", self.cfg.seed),
            kv("index", index),
        ];
        metadata.extend(g.metadata);
        Ok(Sample {
            id: format!("{task}/{split}/{}/{index}", self.cfg.seed),
            messages,
            answer: Some(g.answer),
            metadata,
        })
    }
}
