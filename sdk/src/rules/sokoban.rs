//! LMM-R1's Sokoban game reward (MGT stage): replay the response's action list
//! in the sample's level and reward the best cumulative game reward reached,
//! plus a format term.
//!
//! Game rewards are those of gym-sokoban (mpSchrader/gym-sokoban,
//! `gym_sokoban/envs/sokoban_env.py`: `penalty_for_step = -0.1`,
//! `reward_box_on_target = 1`, `penalty_box_off_target = -1`,
//! `reward_finished = 10`), the environment LMM-R1's Sokoban data and the
//! VAGEN/RAGEN Sokoban prompts ("One move: -0.1, Box on target: +1.0, All
//! boxes placed: +10.0") are built on. As in the gym, a move into a wall or a
//! push against a wall or a second box leaves the state unchanged but still
//! costs the step penalty, and the episode ends when every box is on a target
//! (later actions are ignored) or after `max_steps` actions. The format term
//! is LMM-R1's: 0.5 for the `<think>..</think><answer>..</answer>` format.
//! LMM-R1's own Sokoban reward file was not available to check against, so
//! the value for an empty or unreadable action list (`invalid_answer`) is ours.
//!
//! # Sample
//!
//! Metadata key `level` (configurable) holds the level as a text grid, one row
//! per line; both the classic XSB symbols and the ones in VAGEN/RAGEN prompts:
//!
//! | cell | symbols |
//! |---|---|
//! | wall | `#` |
//! | floor | space, `_` |
//! | target | `.`, `O` |
//! | box | `$`, `X` |
//! | box on target | `*`, `√` |
//! | player | `@`, `P` |
//! | player on target | `+`, `S` |
//!
//! Cells outside the given rows count as walls. A level has one player and as
//! many targets as boxes.
//!
//! # Response
//!
//! The actions are read from the last `<answer>..</answer>`: `Up`, `Down`,
//! `Left`, `Right` (any case) or `U`/`D`/`L`/`R`, separated by commas, spaces,
//! `|`, `||`, `;` or `->`, optionally as a JSON list (`["Up", "Left"]`);
//! the filler words "and" and "then" are ignored. Any other token makes the
//! list unreadable.
//!
//! # Score
//!
//! Components `format` (the format term), `game` (the best cumulative game
//! reward over all non-empty prefixes of the replay, or `invalid_answer`) and
//! `solved` (1 when every box ended on a target, else 0; logged as a success
//! rate, not added to the total). `total = format + game`.
//!
//! ```toml
//! level_key = "level"
//! step_penalty = -0.1
//! box_on_target = 1.0
//! box_off_target = -1.0
//! finished = 10.0
//! max_steps = 120          # gym-sokoban's default episode length
//! invalid_answer = -1.0    # game reward when there is no readable, non-empty action list
//! format = "r1"            # "none", "r1" or "boxed"
//! format_value = 0.5
//! format_mismatch = 0.0
//! ```

use super::{parse_config, FormatMode};
use crate::answer::tag_content;
use crate::types::{Completion, Score};
use crate::Reward;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_level_key")]
    level_key: String,
    #[serde(default = "default_step_penalty")]
    step_penalty: f64,
    #[serde(default = "one")]
    box_on_target: f64,
    #[serde(default = "minus_one")]
    box_off_target: f64,
    #[serde(default = "ten")]
    finished: f64,
    #[serde(default = "default_max_steps")]
    max_steps: usize,
    #[serde(default = "minus_one")]
    invalid_answer: f64,
    #[serde(default = "r1")]
    format: FormatMode,
    format_value: Option<f64>,
    #[serde(default)]
    format_mismatch: f64,
}

fn default_level_key() -> String {
    "level".to_owned()
}
fn default_step_penalty() -> f64 {
    -0.1
}
fn one() -> f64 {
    1.0
}
fn minus_one() -> f64 {
    -1.0
}
fn ten() -> f64 {
    10.0
}
fn default_max_steps() -> usize {
    120
}
fn r1() -> FormatMode {
    FormatMode::R1
}

/// The Sokoban game reward, configured.
#[derive(Debug, Clone)]
pub struct SokobanReward {
    pub level_key: String,
    pub step_penalty: f64,
    pub box_on_target: f64,
    pub box_off_target: f64,
    pub finished: f64,
    pub max_steps: usize,
    pub invalid_answer: f64,
    pub format: FormatMode,
    pub format_value: f64,
    pub format_mismatch: f64,
}

/// A move direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Up,
    Down,
    Left,
    Right,
}

/// A Sokoban level: walls, targets, boxes and the player on a grid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    width: usize,
    height: usize,
    wall: Vec<bool>,
    target: Vec<bool>,
    boxed: Vec<bool>,
    player: usize,
}

/// What replaying an action list gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Replay {
    /// Best cumulative reward over the non-empty prefixes.
    pub best: f64,
    /// Cumulative reward at the end of the replay.
    pub last: f64,
    /// Actions actually played (the replay stops when solved or at `max_steps`).
    pub steps: usize,
    pub solved: bool,
}

impl Level {
    /// Parses a text grid (symbols in the module docs).
    pub fn parse(text: &str) -> Result<Level, String> {
        let rows: Vec<&str> = text.split('\n').map(|r| r.trim_end_matches('\r')).collect();
        // Leading/trailing blank lines are layout, not rows.
        let first = rows.iter().position(|r| !r.trim().is_empty());
        let last = rows.iter().rposition(|r| !r.trim().is_empty());
        let (Some(first), Some(last)) = (first, last) else {
            return Err("the level is empty".into());
        };
        let rows = &rows[first..=last];
        let height = rows.len();
        let width = rows.iter().map(|r| r.chars().count()).max().unwrap_or(0);
        let n = width * height;
        let mut level = Level {
            width,
            height,
            wall: vec![true; n],
            target: vec![false; n],
            boxed: vec![false; n],
            player: usize::MAX,
        };
        for (y, row) in rows.iter().enumerate() {
            for (x, c) in row.chars().enumerate() {
                let i = y * width + x;
                let (wall, target, boxed, player) = match c {
                    '#' => (true, false, false, false),
                    ' ' | '_' => (false, false, false, false),
                    '.' | 'O' => (false, true, false, false),
                    '$' | 'X' => (false, false, true, false),
                    '*' | '√' => (false, true, true, false),
                    '@' | 'P' => (false, false, false, true),
                    '+' | 'S' => (false, true, false, true),
                    other => {
                        return Err(format!(
                            "unknown symbol {other:?} at row {}, column {}",
                            y + 1,
                            x + 1
                        ))
                    }
                };
                level.wall[i] = wall;
                level.target[i] = target;
                level.boxed[i] = boxed;
                if player {
                    if level.player != usize::MAX {
                        return Err(format!(
                            "a second player at row {}, column {}",
                            y + 1,
                            x + 1
                        ));
                    }
                    level.player = i;
                }
            }
        }
        if level.player == usize::MAX {
            return Err("no player (`@`, `+`, `P` or `S`) in the level".into());
        }
        let boxes = level.boxed.iter().filter(|&&b| b).count();
        let targets = level.target.iter().filter(|&&t| t).count();
        if boxes == 0 || boxes != targets {
            return Err(format!(
                "the level has {boxes} boxes and {targets} targets; it needs as many of each, at least one"
            ));
        }
        Ok(level)
    }

    /// Whether every box is on a target.
    pub fn solved(&self) -> bool {
        self.boxed.iter().zip(&self.target).all(|(&b, &t)| !b || t)
    }

    /// The neighbouring cell in direction `a`, if inside the grid.
    fn step_from(&self, i: usize, a: Action) -> Option<usize> {
        let (x, y) = (i % self.width, i / self.width);
        match a {
            Action::Up => (y > 0).then(|| i - self.width),
            Action::Down => (y + 1 < self.height).then(|| i + self.width),
            Action::Left => (x > 0).then(|| i - 1),
            Action::Right => (x + 1 < self.width).then(|| i + 1),
        }
    }

    /// Plays one action; returns its reward under `r` (as gym-sokoban's `step`).
    fn play(&mut self, a: Action, r: &SokobanReward) -> f64 {
        let mut reward = r.step_penalty;
        let Some(next) = self.step_from(self.player, a) else {
            return reward;
        };
        if self.wall[next] {
            return reward;
        }
        if self.boxed[next] {
            let Some(beyond) = self.step_from(next, a) else {
                return reward;
            };
            if self.wall[beyond] || self.boxed[beyond] {
                return reward; // blocked push: no-op
            }
            self.boxed[next] = false;
            self.boxed[beyond] = true;
            if self.target[beyond] && !self.target[next] {
                reward += r.box_on_target;
            } else if self.target[next] && !self.target[beyond] {
                reward += r.box_off_target;
            }
        }
        self.player = next;
        if self.solved() {
            reward += r.finished;
        }
        reward
    }
}

/// Parses an action list; `None` if empty or any token is not an action.
pub fn parse_actions(text: &str) -> Option<Vec<Action>> {
    let mut out = Vec::new();
    let cleaned: String = text
        .chars()
        .map(|c| match c {
            ',' | '|' | ';' | '[' | ']' | '"' | '\'' | '>' | '→' => ' ',
            c => c,
        })
        .collect();
    for tok in cleaned.split_whitespace() {
        let tok = tok.trim_matches(|c: char| c == '-' || c == '.');
        let a = match tok.to_ascii_lowercase().as_str() {
            "" | "and" | "then" => continue,
            "up" | "u" => Action::Up,
            "down" | "d" => Action::Down,
            "left" | "l" => Action::Left,
            "right" | "r" => Action::Right,
            _ => return None,
        };
        out.push(a);
    }
    (!out.is_empty()).then_some(out)
}

impl SokobanReward {
    /// Replays `actions` from `level` (at most `max_steps` of them).
    pub fn replay(&self, level: &Level, actions: &[Action]) -> Replay {
        let mut state = level.clone();
        let mut cum = 0.0;
        let mut best = f64::NEG_INFINITY;
        let mut steps = 0;
        for &a in actions.iter().take(self.max_steps) {
            cum += state.play(a, self);
            best = best.max(cum);
            steps += 1;
            if state.solved() {
                break;
            }
        }
        Replay {
            best: if steps == 0 { 0.0 } else { best },
            last: cum,
            steps,
            solved: state.solved(),
        }
    }
}

impl Reward for SokobanReward {
    fn new(config: &str) -> Result<Self, String> {
        let c: Config = parse_config("reward-sokoban", config)?;
        if c.max_steps == 0 {
            return Err("reward-sokoban config: `max_steps` must be at least 1".into());
        }
        Ok(SokobanReward {
            level_key: c.level_key,
            step_penalty: c.step_penalty,
            box_on_target: c.box_on_target,
            box_off_target: c.box_off_target,
            finished: c.finished,
            max_steps: c.max_steps,
            invalid_answer: c.invalid_answer,
            format: c.format,
            format_value: c.format_value.unwrap_or(c.format.default_value()),
            format_mismatch: c.format_mismatch,
        })
    }

    fn score(&self, completion: &Completion) -> Result<Score, String> {
        let sample = &completion.sample;
        let text = sample.meta(&self.level_key).ok_or_else(|| {
            format!(
                "sample {:?} has no Sokoban level (metadata `{}`)",
                sample.id, self.level_key
            )
        })?;
        let level = Level::parse(text)
            .map_err(|e| format!("sample {:?}: metadata `{}`: {e}", sample.id, self.level_key))?;
        let response = &completion.response;
        let actions = tag_content(response, "answer").and_then(parse_actions);
        let (game, solved) = match actions {
            Some(actions) => {
                let r = self.replay(&level, &actions);
                (r.best, r.solved)
            }
            None => (self.invalid_answer, false),
        };
        let format = if self.format == FormatMode::None {
            0.0
        } else if self.format.matches(response) {
            self.format_value
        } else {
            self.format_mismatch
        };
        Ok(Score {
            total: format + game,
            components: vec![
                ("format".to_owned(), format),
                ("game".to_owned(), game),
                ("solved".to_owned(), if solved { 1.0 } else { 0.0 }),
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Sample;
    use Action::*;

    // Player left of a box, target two cells right of the player.
    const ONE_BOX: &str = "#####\n#@$.#\n#####";

    fn rule() -> SokobanReward {
        SokobanReward::new("").unwrap()
    }

    fn approx(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn score(level: &str, response: &str) -> Score {
        let c = Completion {
            sample: Sample {
                id: "soko1".into(),
                metadata: vec![("level".into(), level.into())],
                ..Default::default()
            },
            response: response.into(),
            response_tokens: 0,
        };
        rule().score(&c).unwrap()
    }

    #[test]
    fn solving_push_gets_step_box_and_finish() {
        let l = Level::parse(ONE_BOX).unwrap();
        let r = rule().replay(&l, &[Right]);
        // -0.1 step + 1 box on target + 10 finished.
        assert!(approx(r.best, 10.9), "{r:?}");
        assert!(r.solved);
        // Actions after the solution are not played.
        let r = rule().replay(&l, &[Right, Left, Left]);
        assert_eq!(r.steps, 1);
        assert!(approx(r.last, 10.9));
    }

    #[test]
    fn illegal_moves_are_noops_with_penalty() {
        let l = Level::parse(ONE_BOX).unwrap();
        // Up into the wall, Left into the wall, then the solving push.
        let r = rule().replay(&l, &[Up, Left, Right]);
        assert!(approx(r.last, -0.1 - 0.1 + 10.9), "{r:?}");
        assert!(approx(r.best, 10.7));
        // Two boxes in a row cannot be pushed.
        let l2 = Level::parse("######\n#@$$.#\n######").unwrap_err();
        assert!(l2.contains("2 boxes and 1 targets"), "{l2}");
        let l2 = Level::parse("#######\n#@$$..#\n#######").unwrap();
        let r = rule().replay(&l2, &[Right]);
        assert!(approx(r.last, -0.1) && !r.solved);
        assert_eq!(l2.player, 8);
    }

    #[test]
    fn level_validation() {
        // '*' counts as box and target: 2 boxes, 2 targets.
        let l = Level::parse("\n#######\n#@*_.$#\n#######\n").unwrap();
        assert!(!l.solved());
        assert_eq!((l.width, l.height), (7, 3));
        assert!(Level::parse("#####\n#@$.#\n#@  #")
            .unwrap_err()
            .contains("second player"));
        assert!(Level::parse("#####\n# $.#")
            .unwrap_err()
            .contains("no player"));
        assert!(Level::parse("  \n").unwrap_err().contains("empty"));
        // Ragged rows: missing cells are walls, so the player cannot walk off.
        let l = Level::parse("####\n#@$.\n##").unwrap();
        let r = rule().replay(&l, &[Down, Right]);
        assert!(approx(r.last, -0.1 + 10.9) && r.solved, "{r:?}");
    }

    #[test]
    fn best_cumulative_over_prefixes() {
        // Two boxes, two targets: P $ . _ and below P.. use a 2-row level.
        //   #######
        //   #@$._ #   row 1
        //   # $.  #   row 2
        //   #######
        let lvl = "#######\n#@$. ##\n# $.  #\n#######";
        let l = Level::parse(lvl).unwrap();
        // Right: box1 onto target: -0.1 + 1 = 0.9 (not solved).
        // Right again: box1 pushed off its target onto floor: -0.1 - 1 = -1.1 -> cum -0.2.
        let r = rule().replay(&l, &[Right, Right]);
        assert!(approx(r.best, 0.9) && approx(r.last, -0.2), "{r:?}");
        assert!(!r.solved);
    }

    #[test]
    fn full_solution_two_boxes() {
        let lvl = "#######\n#@$. ##\n# $.  #\n#######";
        let l = Level::parse(lvl).unwrap();
        // R: box1 on target (0.9). D: player to (2,2)? no: player at (1,2) moves down
        // onto (2,2) which holds box2 -> pushes it to (3,2) = wall row -> blocked (-0.1).
        // L, D, R: player (1,1)->(2,1), then Right pushes box2 onto (2,3) target: +10.9.
        let r = rule().replay(&l, &[Right, Down, Left, Down, Right]);
        // 0.9 - 0.1 (blocked) - 0.1 (left) - 0.1 (down) + (-0.1 + 1 + 10) = 11.5
        assert!(r.solved, "{r:?}");
        assert!(approx(r.last, 11.5) && approx(r.best, 11.5), "{r:?}");
    }

    #[test]
    fn score_components_and_action_syntaxes() {
        let good = "<think>push right</think><answer>Right</answer>";
        let s = score(ONE_BOX, good);
        assert!(approx(s.total, 0.5 + 10.9), "{s:?}");
        assert_eq!(s.component("solved"), Some(1.0));
        for ans in [
            "R",
            "right",
            "[\"Right\"]",
            "Up, Right",
            "U R",
            "Left || Right",
            "up -> right",
        ] {
            let s = score(ONE_BOX, &format!("<think>x</think><answer>{ans}</answer>"));
            assert_eq!(s.component("solved"), Some(1.0), "{ans}");
        }
        // Unreadable or missing answer: invalid_answer (-1) and no format term for a bare text.
        let s = score(ONE_BOX, "<think>x</think><answer>jump</answer>");
        assert!(approx(s.total, 0.5 - 1.0), "{s:?}");
        let s = score(ONE_BOX, "Right");
        assert!(approx(s.total, -1.0), "{s:?}");
        // VAGEN symbols.
        let s = score("#####\n#PXO#\n#####", "<answer>Right</answer>");
        assert!(approx(s.component("game").unwrap(), 10.9));
    }

    #[test]
    fn max_steps_caps_the_replay() {
        let r = SokobanReward::new("max_steps = 1").unwrap();
        let l = Level::parse("######\n#@_$.#\n######").unwrap();
        // The second Right would solve it, but only one action is played.
        let rep = r.replay(&l, &[Right, Right]);
        assert_eq!(rep.steps, 1);
        assert!(!rep.solved);
        assert!(approx(rep.best, -0.1));
    }

    #[test]
    fn errors_name_sample_and_key() {
        let c = Completion {
            sample: Sample {
                id: "s9".into(),
                ..Default::default()
            },
            response: "<answer>R</answer>".into(),
            response_tokens: 0,
        };
        let e = rule().score(&c).unwrap_err();
        assert!(e.contains("s9") && e.contains("level"), "{e}");
        let e = Level::parse("#####\n#@$?#\n#####").unwrap_err();
        assert!(e.contains("row 2, column 4"), "{e}");
        let e = SokobanReward::new("step = -0.2").unwrap_err();
        assert!(e.contains("step"), "{e}");
    }
}
