//! Overrides the SDK's entry points above `score`, so that the scores show
//! which one the component's export glue reached and what it saw:
//! `mode = "batch"` overrides `score_groups` (every item knows its call),
//! `mode = "group"` only `score_group` (every item knows its group), and
//! `mode = "short"` returns one result too few for the call.
use lmmhost_sdk::reward::score_each_group;
use lmmhost_sdk::{Completion, Group, Reward, Score, ScoreTable};

enum Overrides {
    Batch,
    Group,
    Short,
}

fn score(total: f64, components: &[(&str, usize)]) -> Score {
    Score {
        total,
        components: components
            .iter()
            .map(|(k, v)| (k.to_string(), *v as f64))
            .collect(),
    }
}

impl Reward for Overrides {
    fn new(config: &str) -> Result<Self, String> {
        match config.trim() {
            "mode = \"batch\"" => Ok(Overrides::Batch),
            "mode = \"group\"" => Ok(Overrides::Group),
            "mode = \"short\"" => Ok(Overrides::Short),
            other => Err(format!("mode must be batch, group or short, not {other:?}")),
        }
    }

    fn score(&self, _c: &Completion) -> Result<Score, String> {
        Ok(score(0.0, &[("by_score", 1)]))
    }

    fn score_group(&self, group: Group) -> Vec<Result<Score, String>> {
        (0..group.len())
            .map(|i| Ok(score(1.0, &[("group_size", group.len()), ("in_group", i)])))
            .collect()
    }

    fn score_groups(&self, groups: Vec<Group>) -> ScoreTable {
        let items: usize = groups.iter().map(Group::len).sum();
        let kept = match self {
            Overrides::Group => return score_each_group(self, groups),
            Overrides::Batch => items,
            Overrides::Short => items.saturating_sub(1),
        };
        let mut table = ScoreTable::with_capacity(items);
        for k in 0..kept {
            table.push(Ok(score(
                2.0,
                &[("groups_in_call", groups.len()), ("in_call", k)],
            )));
        }
        table
    }
}

lmmhost_sdk::export_reward!(Overrides);
