//! LMM-R1's Sokoban reward (its MGT stage on the game), computed as its
//! repository computes it: `openrlhf/models/remote_rm/sokoban_verifier.py`
//! in TideDra/lmm-r1, which replays the answer in gym-sokoban's `SokobanEnv`
//! (mpSchrader/gym-sokoban) loaded from the level's saved room. The verdicts
//! of that code on recorded cases are in `sdk/tests/fixtures/` and
//! `sdk/tests/sokoban_lmm_r1.rs` compares every one.
//!
//! # Score
//!
//! The response (trimmed) must have exactly one `<think>`, `</think>`,
//! `<answer>` and `</answer>`, and the text between the first `<answer>` and
//! the `</answer>` after it must be a comma-separated list of `left`,
//! `right`, `up`, `down` (any case, spaces around each allowed). Otherwise
//! every component is 0. Otherwise:
//!
//! - `format` = 0.5;
//! - `game` = the best cumulative game reward over the replay, starting from
//!   0 (so never negative): the first 50 actions are played as gym-sokoban's
//!   push actions (each costs 0.1; +1 when a box reaches a target, -1 when
//!   one leaves it, +10 when no target is left uncovered, which ends the
//!   replay);
//! - `actions` = 0.05 per action below 20 actions, else
//!   `1 - 0.2 * ((n - 20) / 30)^2`; a list that repeats one k-gram (k <= 5
//!   words) more than 7 times in a row gets `min(0, actions - 0.2)` instead;
//! - `thinking` = 0.001 per space-separated token of more than one character
//!   in the `<think>` block, at most 0.2;
//!
//! `total = format + game + actions + thinking`. `solved` (1 when the replay
//! covered every target) is logged, not added.
//!
//! LMM-R1 loads the room its generator saved (gym-sokoban's `room_state`):
//! boxes count only where they stand off a target, the player's cell becomes
//! floor (a target under the player is lost), and a box that starts on a
//! target leaves a box-on-target mark behind when pushed away. These quirks
//! are reproduced: they are part of the reward its runs trained on.
//!
//! # Sample
//!
//! Metadata key `level` (configurable) holds the room as text rows, one row
//! per line (loader-jsonl writes it from LMM-R1's `.npy` levels):
//!
//! | cell | symbols | room code |
//! |---|---|---|
//! | wall | `#` | 0 |
//! | floor | space, `_` | 1 |
//! | target | `.`, `O` | 2 |
//! | box on target | `*`, `√` | 3 |
//! | box | `$`, `X` | 4 |
//! | player | `@`, `P`, `+`, `S` | 5 (a target under the player is lost, as above) |
//!
//! Cells outside the given rows count as walls. A level has one player.
//!
//! ```toml
//! level_key = "level"
//! ```

use std::collections::HashMap;

use super::parse_config;
use crate::types::{Completion, Score};
use crate::Reward;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_level_key")]
    level_key: String,
}

fn default_level_key() -> String {
    "level".to_owned()
}

/// LMM-R1's weight of the format term.
const FORMAT: f64 = 0.5;
/// Actions LMM-R1 plays at most.
const MAX_ACTIONS: usize = 50;
/// gym-sokoban's episode length in LMM-R1's environment.
const MAX_STEPS: usize = 120;

const WALL: u8 = 0;
const FLOOR: u8 = 1;
const TARGET: u8 = 2;
const BOX_ON_TARGET: u8 = 3;
const BOX: u8 = 4;
const PLAYER: u8 = 5;

/// The Sokoban game reward, configured.
#[derive(Debug, Clone)]
pub struct SokobanReward {
    pub level_key: String,
}

/// A move direction (gym-sokoban's push actions 1-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Up,
    Down,
    Left,
    Right,
}

/// A level as LMM-R1's environment holds it after `reset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    width: usize,
    height: usize,
    /// gym-sokoban's `room_state` and `room_fixed`, row-major.
    state: Vec<u8>,
    fixed: Vec<u8>,
    player: usize,
    /// Boxes off a target in the saved room (`np.sum(room == 4)`).
    num_boxes: i64,
}

/// What replaying an action list gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Replay {
    /// Best cumulative reward, starting from 0.
    pub best: f64,
    /// Cumulative reward at the end of the replay.
    pub last: f64,
    /// Actions played.
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
        let mut room = vec![WALL; width * height];
        let mut player = None;
        for (y, row) in rows.iter().enumerate() {
            for (x, c) in row.chars().enumerate() {
                let code = match c {
                    '#' => WALL,
                    ' ' | '_' => FLOOR,
                    '.' | 'O' => TARGET,
                    '*' | '√' => BOX_ON_TARGET,
                    '$' | 'X' => BOX,
                    '@' | 'P' | '+' | 'S' => PLAYER,
                    other => {
                        return Err(format!(
                            "unknown symbol {other:?} at row {}, column {}",
                            y + 1,
                            x + 1
                        ))
                    }
                };
                let i = y * width + x;
                if code == PLAYER {
                    if player.is_some() {
                        return Err(format!(
                            "a second player at row {}, column {}",
                            y + 1,
                            x + 1
                        ));
                    }
                    player = Some(i);
                }
                room[i] = code;
            }
        }
        let Some(player) = player else {
            return Err("no player (`@`, `+`, `P` or `S`) in the level".into());
        };
        // LMM-R1's reset: boxes and the player leave floor in `room_fixed`.
        let num_boxes = room.iter().filter(|&&c| c == BOX).count() as i64;
        let state = room.clone();
        let mut fixed = room;
        for c in fixed.iter_mut() {
            if *c == BOX {
                *c = FLOOR;
            }
        }
        fixed[player] = FLOOR;
        Ok(Level {
            width,
            height,
            state,
            fixed,
            player,
            num_boxes,
        })
    }

    /// The neighbouring cell in direction `a`: `Err(true)` past the bottom or
    /// right edge, `Err(false)` past the top or left edge (numpy's index
    /// checks differ on the two sides).
    fn next(&self, i: usize, a: Action) -> Result<usize, bool> {
        let (x, y) = (i % self.width, i / self.width);
        match a {
            Action::Up if y > 0 => Ok(i - self.width),
            Action::Down if y + 1 < self.height => Ok(i + self.width),
            Action::Left if x > 0 => Ok(i - 1),
            Action::Right if x + 1 < self.width => Ok(i + 1),
            Action::Up | Action::Left => Err(false),
            Action::Down | Action::Right => Err(true),
        }
    }

    /// gym-sokoban's `_move`.
    fn walk(&mut self, a: Action) {
        if let Ok(next) = self.next(self.player, a) {
            if matches!(self.state[next], FLOOR | TARGET) {
                self.state[next] = PLAYER;
                self.state[self.player] = self.fixed[self.player];
                self.player = next;
            }
        }
    }

    /// gym-sokoban's `_push`: pushes a box when one is in front and the
    /// cell behind it is free, else moves.
    fn push(&mut self, a: Action) {
        let next = self.next(self.player, a);
        let beyond = next.and_then(|n| self.next(n, a));
        // Past the bottom/right edge gym-sokoban does nothing at all.
        if beyond == Err(true) || next == Err(true) {
            return;
        }
        if let (Ok(next), Ok(beyond)) = (next, beyond) {
            let can = matches!(self.state[next], BOX_ON_TARGET | BOX)
                && matches!(self.state[beyond], FLOOR | TARGET);
            if can {
                self.state[next] = PLAYER;
                self.state[self.player] = self.fixed[self.player];
                self.player = next;
                self.state[beyond] = if self.fixed[beyond] == TARGET {
                    BOX_ON_TARGET
                } else {
                    BOX
                };
                return;
            }
        }
        self.walk(a);
    }

    /// Targets nobody covers (empty, or hidden by the player), as
    /// gym-sokoban counts them.
    fn open_targets(&self) -> i64 {
        self.state
            .iter()
            .zip(&self.fixed)
            .filter(|&(&s, &f)| s == TARGET || (f == TARGET && s == PLAYER))
            .count() as i64
    }
}

/// Replays `actions` in `level` as LMM-R1 does: at most 50 push actions,
/// stopping when the game is won (or gym-sokoban's 120-step episode ends).
pub fn replay(level: &Level, actions: &[Action]) -> Replay {
    let mut env = level.clone();
    let mut on_target = 0i64;
    let (mut cum, mut best) = (0.0f64, 0.0f64);
    let mut steps = 0;
    let mut solved = false;
    for &a in actions.iter().take(MAX_ACTIONS) {
        steps += 1;
        env.push(a);
        // gym-sokoban's `_calc_reward`.
        let mut r = -0.1;
        let open = env.open_targets();
        let current = env.num_boxes - open;
        if current > on_target {
            r += 1.0;
        } else if current < on_target {
            r += -1.0;
        }
        let won = open == 0;
        if won {
            r += 10.0;
        }
        on_target = current;
        cum += r;
        if cum > best {
            best = cum;
        }
        solved |= won;
        if won || steps == MAX_STEPS || r > 3.0 {
            break;
        }
    }
    Replay {
        best,
        last: cum,
        steps,
        solved,
    }
}

/// The text between the first `open` and the `close` after it (to the end
/// without one), as Python's `s.split(open)[1].split(close)[0]`.
fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let rest = s.split(open).nth(1)?;
    rest.split(close).next()
}

/// The answer's actions when LMM-R1's format check passes.
fn formatted_actions(response: &str) -> Option<Vec<Action>> {
    let once = |tag: &str| response.matches(tag).count() == 1;
    if !(once("<think>") && once("</think>") && once("<answer>") && once("</answer>")) {
        return None;
    }
    between(response, "<answer>", "</answer>")?
        .split(',')
        .map(|a| match a.trim().to_lowercase().as_str() {
            "up" => Some(Action::Up),
            "down" => Some(Action::Down),
            "left" => Some(Action::Left),
            "right" => Some(Action::Right),
            _ => None,
        })
        .collect()
}

/// Words as Python's `re.findall(r"\b\w[\w']*\b", text)` finds them: a run
/// of word characters and apostrophes that starts and ends with a word
/// character.
fn words(text: &str) -> Vec<String> {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        let w = cur.trim_end_matches('\'');
        if !w.is_empty() {
            out.push(w.to_owned());
        }
        cur.clear();
    };
    for c in text.chars() {
        if word(c) || (c == '\'' && !cur.is_empty()) {
            cur.push(c);
        } else {
            flush(&mut cur, &mut out);
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// LMM-R1's `check_repeated_substrings(text, n, max_k)`: some k-gram
/// (k <= `max_k` words) occurs more than `n` times back to back.
fn repeats(text: &str, n: usize, max_k: usize) -> bool {
    let words = words(&text.to_lowercase());
    for k in 1..=max_k {
        // k-gram -> (start of its last occurrence, occurrences back to back).
        let mut seen: HashMap<&[String], (usize, usize)> = HashMap::new();
        for s in 0..words.len().saturating_sub(k - 1) {
            let gram = &words[s..s + k];
            let count = match seen.get(gram) {
                Some(&(last, c)) if last + k == s => c + 1,
                _ => 1,
            };
            seen.insert(gram, (s, count));
            if count > n {
                return true;
            }
        }
    }
    false
}

/// LMM-R1's action-length term for `n` actions.
fn actions_term(n: usize, repeated: bool) -> f64 {
    let v = if n < 20 {
        n as f64 * 0.05
    } else {
        20.0 * 0.05 - ((n as f64 - 20.0) / 30.0).powi(2) * 0.2
    };
    if repeated {
        (v - 0.2).min(0.0)
    } else {
        v
    }
}

/// LMM-R1's thinking-length term.
fn thinking_term(response: &str) -> f64 {
    let think = between(response, "<think>", "</think>")
        .unwrap_or_default()
        .trim();
    let tokens = think.split(' ').filter(|t| t.chars().count() > 1).count();
    tokens.min(200) as f64 * 0.001
}

impl Reward for SokobanReward {
    fn new(config: &str) -> Result<Self, String> {
        let c: Config = parse_config("reward-sokoban", config)?;
        Ok(SokobanReward {
            level_key: c.level_key,
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
        let response = completion.response.trim();
        let components = match formatted_actions(response) {
            None => [0.0; 5],
            Some(actions) => {
                let listed = between(response, "<answer>", "</answer>")
                    .unwrap_or_default()
                    .trim();
                let r = replay(&level, &actions);
                [
                    FORMAT,
                    r.best,
                    actions_term(actions.len(), repeats(listed, 7, 5)),
                    thinking_term(response),
                    if r.solved { 1.0 } else { 0.0 },
                ]
            }
        };
        let [format, game, acts, thinking, solved] = components;
        Ok(Score {
            total: format + game + acts + thinking,
            components: vec![
                ("format".to_owned(), format),
                ("game".to_owned(), game),
                ("actions".to_owned(), acts),
                ("thinking".to_owned(), thinking),
                ("solved".to_owned(), solved),
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
        SokobanReward::new("").unwrap().score(&c).unwrap()
    }

    #[test]
    fn solving_push_gets_step_box_and_finish() {
        let l = Level::parse(ONE_BOX).unwrap();
        // -0.1 step + 1 box on target + 10 finished; later actions are not played.
        let r = replay(&l, &[Right, Left, Left]);
        assert!(approx(r.best, 10.9) && r.solved && r.steps == 1, "{r:?}");
    }

    #[test]
    fn best_starts_at_zero_and_blocked_moves_cost_a_step() {
        let l = Level::parse(ONE_BOX).unwrap();
        // Up and Left hit walls: -0.2, then the solving push.
        let r = replay(&l, &[Up, Left, Right]);
        assert!(approx(r.last, 10.7) && approx(r.best, 10.7), "{r:?}");
        // Only penalties: the best stays 0.
        let r = replay(&l, &[Up, Up]);
        assert!(approx(r.best, 0.0) && approx(r.last, -0.2));
    }

    #[test]
    fn score_components_and_format() {
        let s = score(
            ONE_BOX,
            "<think>push it right</think><answer>Right</answer>",
        );
        // format 0.5 + game 10.9 + 1 action * 0.05 + 3 thinking tokens * 0.001.
        assert!(approx(s.total, 0.5 + 10.9 + 0.05 + 0.003), "{s:?}");
        assert_eq!(s.component("solved"), Some(1.0));
        // Anything but a comma list of the four words fails the format: all 0.
        for bad in [
            "<think>x</think><answer>R</answer>",
            "<think>x</think><answer>Up Right</answer>",
            "<think>x</think><answer></answer>",
            "<answer>Right</answer>",
            "<think>a</think><think>b</think><answer>Right</answer>",
        ] {
            let s = score(ONE_BOX, bad);
            assert_eq!(s.total, 0.0, "{bad}");
            assert!(s.components.iter().all(|(_, v)| *v == 0.0), "{bad}");
        }
    }

    #[test]
    fn action_and_thinking_lengths() {
        assert!(approx(actions_term(3, false), 0.15));
        assert!(approx(actions_term(20, false), 1.0));
        // 50 actions: 1 - 0.2 * (30/30)^2.
        assert!(approx(actions_term(50, false), 0.8));
        // Repeated lists: min(0, term - 0.2).
        assert!(approx(actions_term(3, true), -0.05));
        assert!(approx(actions_term(20, true), 0.0));
        let long = format!("<think>{}</think>", "ab ".repeat(300));
        assert!(approx(thinking_term(&long), 0.2));
        // Single characters and empty strings between spaces do not count.
        assert!(approx(thinking_term("<think>a  bb c dd</think>"), 0.002));
    }

    #[test]
    fn repeated_kgrams_back_to_back() {
        assert!(!repeats(&"up, ".repeat(7), 7, 5));
        assert!(repeats(&"up, ".repeat(8), 7, 5));
        assert!(repeats(&"up, left, ".repeat(8), 7, 5));
        // Interrupted runs start over.
        let s = format!("{}down, {}", "up, ".repeat(5), "up, ".repeat(5));
        assert!(!repeats(&s, 7, 5));
        assert_eq!(words("it's ok''; don't"), vec!["it's", "ok", "don't"]);
    }

    #[test]
    fn lmm_r1_room_quirks() {
        // A box that starts on its target, pushed away, costs no penalty and
        // leaves a box-on-target mark behind once the player walks off.
        let start = Level::parse("#######\n#@*_$.#\n#######").unwrap();
        assert_eq!(start.num_boxes, 1);
        let r = replay(&start, &[Right]);
        assert!(approx(r.last, -0.1) && !r.solved, "{r:?}");
        let mut env = start.clone();
        env.push(Right);
        env.push(Left);
        assert_eq!((env.state[9], env.state[10]), (BOX_ON_TARGET, BOX));
        // A target under the player is lost: one box and no target left to
        // fill, so the first step already counts a box on target and wins.
        let l = Level::parse("#####\n#+$_#\n#####").unwrap();
        let r = replay(&l, &[Up]);
        assert!(approx(r.best, -0.1 + 1.0 + 10.0) && r.solved, "{r:?}");
    }

    #[test]
    fn level_validation_and_errors() {
        assert!(Level::parse("#####\n#@$.#\n#@  #")
            .unwrap_err()
            .contains("second player"));
        assert!(Level::parse("#####\n# $.#")
            .unwrap_err()
            .contains("no player"));
        assert!(Level::parse("  \n").unwrap_err().contains("empty"));
        let e = Level::parse("#####\n#@$?#\n#####").unwrap_err();
        assert!(e.contains("row 2, column 4"), "{e}");
        let c = Completion {
            sample: Sample {
                id: "s9".into(),
                ..Default::default()
            },
            response: "<answer>R</answer>".into(),
            response_tokens: 0,
        };
        let e = SokobanReward::new("").unwrap().score(&c).unwrap_err();
        assert!(e.contains("s9") && e.contains("level"), "{e}");
        let e = SokobanReward::new("step_penalty = -0.2").unwrap_err();
        assert!(e.contains("step_penalty"), "{e}");
    }
}
