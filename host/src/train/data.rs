//! Drawing samples from the datasets: by the plan's weights, deterministic
//! given the seed and the step, each dataset read in a seeded shuffled order
//! epoch after epoch. The cursors are all the state a checkpoint needs.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use lmmhost_model::processor::{Conversation, ImageInput, Message, Part, Processor};
use lmmhost_sdk as sdk;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::experiment::SpecialTokens;

/// A seed for one use (`what`) of the run seed, e.g. ("rollout", step).
pub fn derive_seed(seed: u64, what: &str, n: u64) -> u64 {
    let d = Sha256::digest(format!("{seed}/{what}/{n}").as_bytes());
    u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8]))
}

/// Where a dataset's reading order stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    /// Samples taken in this epoch.
    pub pos: u64,
}

pub struct Mixer {
    seed: u64,
    lens: BTreeMap<String, u64>,
    pub cursors: BTreeMap<String, Cursor>,
    /// The current epoch's order per dataset (rebuilt from the cursor).
    orders: BTreeMap<String, (u64, Vec<u64>)>,
}

impl Mixer {
    pub fn new(seed: u64, lens: BTreeMap<String, u64>) -> Mixer {
        let cursors = lens
            .keys()
            .map(|k| (k.clone(), Cursor::default()))
            .collect();
        Mixer {
            seed,
            lens,
            cursors,
            orders: BTreeMap::new(),
        }
    }

    /// Restores cursors saved in a checkpoint (datasets not in it start fresh).
    pub fn restore(&mut self, cursors: &BTreeMap<String, Cursor>) {
        for (k, c) in cursors {
            if self.cursors.contains_key(k) {
                self.cursors.insert(k.clone(), *c);
            }
        }
    }

    fn order(&mut self, name: &str, epoch: u64) -> &[u64] {
        let len = self.lens[name];
        let stale = self.orders.get(name).is_none_or(|(e, _)| *e != epoch);
        if stale {
            let mut order: Vec<u64> = (0..len).collect();
            let mut rng =
                ChaCha8Rng::seed_from_u64(derive_seed(self.seed, &format!("order/{name}"), epoch));
            order.shuffle(&mut rng);
            self.orders.insert(name.to_string(), (epoch, order));
        }
        &self.orders[name].1
    }

    /// Next sample index of dataset `name`.
    fn next(&mut self, name: &str) -> u64 {
        let len = self.lens[name];
        let mut c = self.cursors[name];
        if c.pos >= len {
            c = Cursor {
                epoch: c.epoch + 1,
                pos: 0,
            };
        }
        let idx = self.order(name, c.epoch)[c.pos as usize];
        c.pos += 1;
        self.cursors.insert(name.to_string(), c);
        idx
    }

    /// `count` (dataset, index) pairs for step `step`, each dataset chosen with
    /// probability proportional to its weight.
    pub fn draw(
        &mut self,
        weights: &[(String, f64)],
        count: usize,
        step: u64,
    ) -> Result<Vec<(String, u64)>> {
        let mut names = Vec::new();
        let mut cum = Vec::new();
        let mut total = 0.0;
        for (name, w) in weights {
            if !self.lens.contains_key(name) {
                bail!(
                    "the schedule asks for dataset {name:?}, which is not in [datasets] (have: {})",
                    self.lens.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            if !(w.is_finite() && *w >= 0.0) {
                bail!("the schedule gives dataset {name:?} weight {w}: weights must be >= 0");
            }
            if *w > 0.0 {
                total += w;
                names.push(name.clone());
                cum.push(total);
            }
        }
        if names.is_empty() {
            bail!("the schedule's plan gives no dataset a positive weight");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(self.seed, "mix", step));
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let x: f64 = rng.random::<f64>() * total;
            let i = cum.iter().position(|&c| x < c).unwrap_or(names.len() - 1);
            let name = names[i].clone();
            let idx = self.next(&name);
            out.push((name, idx));
        }
        Ok(out)
    }
}

fn message(m: &sdk::Message) -> Message {
    Message {
        role: m.role.clone(),
        parts: m
            .content
            .iter()
            .map(|p| match p {
                sdk::ContentPart::Text(t) => Part::Text(t.clone()),
                sdk::ContentPart::Image(sdk::ImageSource::Path(p)) => {
                    Part::Image(ImageInput::Path(p.into()))
                }
                sdk::ContentPart::Image(sdk::ImageSource::Bytes(b)) => {
                    Part::Image(ImageInput::Bytes(b.clone()))
                }
            })
            .collect(),
    }
}

/// How errors name a sample: its id, which the core loaders make
/// `file:line` (or `file: row N`) when the row has none of its own.
pub fn sample_name(s: &sdk::Sample) -> String {
    if s.id.is_empty() {
        "sample (no id)".to_string()
    } else {
        format!("sample {}", s.id)
    }
}

/// Refuses what a prompt must not be built from: a role the chat template
/// does not know, and (unless the dataset allows it) text holding one of the
/// model's special tokens, which would forge chat turns or image
/// placeholders. `allow_with` is the setting that lets such text through
/// (named in the refusal).
pub fn check_sample(
    s: &sdk::Sample,
    dataset: &str,
    processor: &Processor,
    special: SpecialTokens,
    allow_with: &str,
) -> Result<()> {
    for (i, m) in s.messages.iter().enumerate() {
        if !sdk::CHAT_ROLES.contains(&m.role.as_str()) {
            bail!(
                "dataset {dataset}, {}: message {i} has role {:?}; expected one of {}",
                sample_name(s),
                m.role,
                sdk::CHAT_ROLES.join(", ")
            );
        }
        if special == SpecialTokens::Tokenize {
            continue;
        }
        for part in &m.content {
            let sdk::ContentPart::Text(text) = part else {
                continue;
            };
            if let Some(token) = processor.special_token_in(text) {
                bail!(
                    "dataset {dataset}, {}: message {i} ({}) contains the special token {token:?}, which would become a control token (a forged chat turn or image placeholder); remove it from the data, or use {allow_with} to tokenise it as written, as transformers does",
                    sample_name(s),
                    m.role
                );
            }
        }
    }
    Ok(())
}

/// The prompt of a sample for generation: its messages without the trailing
/// assistant turn(s) (a loader may ship the worked answer for SFT).
pub fn prompt_conversation(s: &sdk::Sample) -> Result<Conversation> {
    let mut end = s.messages.len();
    while end > 0 && s.messages[end - 1].role == "assistant" {
        end -= 1;
    }
    if end == 0 {
        bail!("sample {}: no user message to prompt with", s.id);
    }
    Ok(s.messages[..end].iter().map(message).collect())
}

/// The whole conversation for SFT; it must end with an assistant turn.
pub fn sft_conversation(s: &sdk::Sample) -> Result<Conversation> {
    let last = s
        .messages
        .last()
        .with_context(|| format!("sample {}: no messages", s.id))?;
    if last.role != "assistant" {
        bail!(
            "sample {}: an SFT sample must end with an assistant message (it ends with {:?})",
            s.id,
            last.role
        );
    }
    Ok(s.messages.iter().map(message).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lens() -> BTreeMap<String, u64> {
        [("a".to_string(), 5u64), ("b".to_string(), 3u64)].into()
    }

    #[test]
    fn every_sample_once_per_epoch_in_a_seeded_order() {
        let mut m = Mixer::new(7, lens());
        let w = vec![("a".to_string(), 1.0)];
        let first: Vec<u64> = m.draw(&w, 5, 0).unwrap().into_iter().map(|x| x.1).collect();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
        let second: Vec<u64> = m.draw(&w, 5, 1).unwrap().into_iter().map(|x| x.1).collect();
        let mut s2 = second.clone();
        s2.sort();
        assert_eq!(s2, vec![0, 1, 2, 3, 4]);
        assert_eq!(m.cursors["a"], Cursor { epoch: 1, pos: 5 });
        // Same seed, same orders.
        let mut again = Mixer::new(7, lens());
        let f2: Vec<u64> = again
            .draw(&w, 5, 0)
            .unwrap()
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(first, f2);
    }

    #[test]
    fn restored_cursors_continue_identically() {
        let w = vec![("a".to_string(), 2.0), ("b".to_string(), 1.0)];
        let mut full = Mixer::new(3, lens());
        let mut seq = Vec::new();
        for step in 0..6 {
            seq.push(full.draw(&w, 4, step).unwrap());
        }
        let mut first = Mixer::new(3, lens());
        for step in 0..3 {
            assert_eq!(first.draw(&w, 4, step).unwrap(), seq[step as usize]);
        }
        let mut resumed = Mixer::new(3, lens());
        resumed.restore(&first.cursors.clone());
        for step in 3..6 {
            assert_eq!(resumed.draw(&w, 4, step).unwrap(), seq[step as usize]);
        }
    }

    #[test]
    fn weights_pick_datasets_in_proportion() {
        let big: BTreeMap<String, u64> =
            [("a".to_string(), 1000u64), ("b".to_string(), 1000u64)].into();
        let mut m = Mixer::new(1, big);
        let w = vec![("a".to_string(), 3.0), ("b".to_string(), 1.0)];
        let d = m.draw(&w, 4000, 0).unwrap();
        let a = d.iter().filter(|x| x.0 == "a").count() as f64 / 4000.0;
        assert!((a - 0.75).abs() < 0.03, "{a}");
        let err = m
            .draw(&[("c".to_string(), 1.0)], 1, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"c\""), "{err}");
        let err = m
            .draw(&[("a".to_string(), 0.0)], 1, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no dataset a positive weight"), "{err}");
    }

    #[test]
    fn prompts_drop_the_worked_answer() {
        let s = sdk::Sample {
            id: "x".into(),
            messages: vec![
                sdk::Message {
                    role: "user".into(),
                    content: vec![sdk::ContentPart::Text("1+1?".into())],
                },
                sdk::Message {
                    role: "assistant".into(),
                    content: vec![sdk::ContentPart::Text("2".into())],
                },
            ],
            answer: Some("2".into()),
            metadata: vec![],
        };
        assert_eq!(prompt_conversation(&s).unwrap().len(), 1);
        assert_eq!(sft_conversation(&s).unwrap().len(), 2);
        let mut p = s.clone();
        p.messages.pop();
        let err = sft_conversation(&p).unwrap_err().to_string();
        assert!(
            err.contains("sample x") && err.contains("\"user\""),
            "{err}"
        );
    }
}
