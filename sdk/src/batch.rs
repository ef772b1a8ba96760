//! How completions cross the reward boundary: grouped going in ([`Group`]:
//! a prompt's sample once, its responses packed into one string) and as
//! columns coming out ([`ScoreTable`]).
//!
//! Both structs have exactly the shape wit-bindgen generates for the WIT
//! records `group` and `scores`, so the guest lifts and lowers them with no
//! conversion; the host uses the same types.
//!
//! Why packed: a completion that carries its own copy of the sample, and a
//! score that carries its own component names, cost about a dozen
//! allocations per completion across both sides, more than a cheap rule
//! itself. Packed, a call costs a handful of allocations per group.

use crate::types::{Completion, Sample, Score};

/// The responses sampled for one prompt, all scored against `sample`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    pub sample: Sample,
    /// Every response, one after another.
    pub responses: String,
    /// Byte offset in `responses` where each response ends.
    pub ends: Vec<u32>,
    /// Tokens the model generated for each response.
    pub tokens: Vec<u32>,
}

impl Group {
    /// A group with no responses yet.
    pub fn new(sample: Sample) -> Group {
        Group {
            sample,
            ..Group::default()
        }
    }

    /// Appends a response and its token count.
    ///
    /// # Panics
    /// If the packed responses would pass 4 GiB (the offsets are 32-bit, as
    /// on the Wasm side); a training batch is far below that.
    pub fn push(&mut self, response: &str, tokens: u32) {
        self.responses.push_str(response);
        let end = u32::try_from(self.responses.len())
            .unwrap_or_else(|_| panic!("a group's responses exceed 4 GiB"));
        self.ends.push(end);
        self.tokens.push(tokens);
    }

    /// Number of responses.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Response `i`, or `None` when `i` is out of range or the offsets are
    /// not increasing character boundaries of `responses` (a malformed group
    /// from the other side of the boundary).
    pub fn response(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1] as usize,
        };
        self.responses.get(start..end)
    }

    /// Checks the packed layout: one token count per response, end offsets
    /// increasing on character boundaries, the last one at the end of
    /// `responses`. The host checks every group before sending it.
    pub fn validate(&self) -> Result<(), String> {
        if self.tokens.len() != self.ends.len() {
            return Err(format!(
                "{} token counts for {} responses",
                self.tokens.len(),
                self.ends.len()
            ));
        }
        let mut prev = 0;
        for (i, &e) in self.ends.iter().enumerate() {
            let e = e as usize;
            if e < prev || !self.responses.is_char_boundary(e) {
                return Err(format!(
                    "response {i}: end offset {e} is not a character boundary after {prev}"
                ));
            }
            prev = e;
        }
        if prev != self.responses.len() {
            return Err(format!(
                "the responses run past the last end offset ({prev} of {} bytes)",
                self.responses.len()
            ));
        }
        Ok(())
    }

    /// Tokens of response `i` (0 when the group lists fewer counts).
    pub fn tokens(&self, i: usize) -> u32 {
        self.tokens.get(i).copied().unwrap_or(0)
    }

    /// Groups consecutive completions that answer the same sample, in order
    /// (item `k` of the result's flattening is `batch[k]`). Equal samples
    /// that are not adjacent form separate groups.
    pub fn from_completions(batch: &[Completion]) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        for c in batch {
            match groups.last_mut() {
                Some(g) if g.sample == c.sample => g.push(&c.response, c.response_tokens),
                _ => {
                    let mut g = Group::new(c.sample.clone());
                    g.push(&c.response, c.response_tokens);
                    groups.push(g);
                }
            }
        }
        groups
    }

    /// Scores every response with `score`, passing each as a [`Completion`]
    /// that owns the group's sample: the sample is moved, not cloned, and
    /// one response buffer is reused, so a group costs no allocation per
    /// response beyond what the rule itself allocates.
    pub fn score_each(
        self,
        mut score: impl FnMut(&Completion) -> Result<Score, String>,
    ) -> Vec<Result<Score, String>> {
        let n = self.len();
        let mut out = Vec::with_capacity(n);
        let mut c = Completion {
            sample: self.sample,
            response: String::new(),
            response_tokens: 0,
        };
        let mut start = 0usize;
        for i in 0..n {
            let end = self.ends[i] as usize;
            match self.responses.get(start..end) {
                Some(r) => {
                    c.response.clear();
                    c.response.push_str(r);
                    c.response_tokens = self.tokens.get(i).copied().unwrap_or(0);
                    out.push(score(&c));
                }
                None => out.push(Err(format!(
                    "response {i} of group {:?}: end offset {end} is not a character \
                     boundary after {start} in {} bytes of responses",
                    c.sample.id,
                    self.responses.len()
                ))),
            }
            start = end.max(start);
        }
        out
    }
}

/// One named component of one item's score: `name` indexes [`ScoreTable::names`].
///
/// `repr(C)`: the guest bindings copy a `list<component>` as raw memory in
/// the canonical ABI's layout (the name at offset 0, the value at 8).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct ComponentValue {
    pub name: u32,
    pub value: f64,
}

/// The scores of a batch as columns: item `i` has `totals[i]` and the
/// components `components[component_ends[i-1] .. component_ends[i]]`, each
/// naming its component by index into `names`; failed items are listed in
/// `failures` (by item index, with the reason) and have no components.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScoreTable {
    pub names: Vec<String>,
    pub totals: Vec<f64>,
    pub components: Vec<ComponentValue>,
    pub component_ends: Vec<u32>,
    pub failures: Vec<(u32, String)>,
}

impl ScoreTable {
    pub fn with_capacity(items: usize) -> ScoreTable {
        ScoreTable {
            names: Vec::new(),
            totals: Vec::with_capacity(items),
            components: Vec::with_capacity(items * 2),
            component_ends: Vec::with_capacity(items),
            failures: Vec::new(),
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.totals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.totals.is_empty()
    }

    /// Appends one item's result.
    pub fn push(&mut self, result: Result<Score, String>) {
        match result {
            Ok(score) => {
                self.totals.push(score.total);
                for (name, value) in score.components {
                    let name = self.intern(name);
                    self.components.push(ComponentValue { name, value });
                }
            }
            Err(e) => {
                self.failures.push((self.totals.len() as u32, e));
                self.totals.push(0.0);
            }
        }
        self.component_ends.push(self.components.len() as u32);
    }

    /// Appends every item of `other`, in order (moving it when this table
    /// has no items yet, as when a batch's tables are joined).
    pub fn append(&mut self, other: ScoreTable) {
        if self.is_empty() && self.names.is_empty() {
            *self = other;
            return;
        }
        let base = self.totals.len() as u32;
        let (c0, e0) = (self.components.len() as u32, self.component_ends.len());
        let map: Vec<u32> = other.names.into_iter().map(|n| self.intern(n)).collect();
        self.totals.extend(other.totals);
        self.components
            .extend(other.components.into_iter().map(|c| ComponentValue {
                name: map.get(c.name as usize).copied().unwrap_or(u32::MAX),
                value: c.value,
            }));
        self.component_ends
            .extend(other.component_ends.into_iter().map(|e| e + c0));
        debug_assert_eq!(
            self.component_ends.len() - e0,
            self.totals.len() - base as usize
        );
        self.failures
            .extend(other.failures.into_iter().map(|(i, e)| (i + base, e)));
    }

    fn intern(&mut self, name: String) -> u32 {
        match self.names.iter().position(|n| *n == name) {
            Some(k) => k as u32,
            None => {
                self.names.push(name);
                (self.names.len() - 1) as u32
            }
        }
    }

    /// Why item `i` failed, if it did.
    pub fn failure(&self, i: usize) -> Option<&str> {
        let i = u32::try_from(i).ok()?;
        // Failures are pushed in item order; a table from a plugin is
        // checked by `validate` before anyone reads it.
        self.failures
            .binary_search_by_key(&i, |(k, _)| *k)
            .ok()
            .map(|k| self.failures[k].1.as_str())
    }

    /// The total of item `i` (0 for a failed item).
    pub fn total(&self, i: usize) -> f64 {
        self.totals[i]
    }

    /// The named components of item `i`, in the item's own order.
    pub fn components(&self, i: usize) -> impl Iterator<Item = (&str, f64)> + '_ {
        let start = match i {
            0 => 0,
            _ => self.component_ends[i - 1] as usize,
        };
        let end = self.component_ends[i] as usize;
        self.components[start..end]
            .iter()
            .map(|c| (self.names[c.name as usize].as_str(), c.value))
    }

    /// Item `i` as a [`Score`], or the reason it failed.
    pub fn item(&self, i: usize) -> Result<Score, String> {
        match self.failure(i) {
            Some(e) => Err(e.to_string()),
            None => Ok(Score {
                total: self.total(i),
                components: self
                    .components(i)
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            }),
        }
    }

    /// Checks a table that came from the other side of the boundary: `items`
    /// items, offsets increasing and in range, names in range, failures in
    /// item order. Every accessor may index freely afterwards.
    pub fn validate(&self, items: usize) -> Result<(), String> {
        if self.totals.len() != items || self.component_ends.len() != items {
            return Err(format!(
                "{} totals and {} component offsets for {items} items",
                self.totals.len(),
                self.component_ends.len()
            ));
        }
        let mut prev = 0u32;
        for (i, &e) in self.component_ends.iter().enumerate() {
            if e < prev || e as usize > self.components.len() {
                return Err(format!(
                    "item {i}: component offset {e} out of order or past {} components",
                    self.components.len()
                ));
            }
            prev = e;
        }
        if prev as usize != self.components.len() {
            return Err(format!(
                "{} components but the offsets cover {prev}",
                self.components.len()
            ));
        }
        if let Some(c) = self
            .components
            .iter()
            .find(|c| c.name as usize >= self.names.len())
        {
            return Err(format!(
                "component name index {} past {} names",
                c.name,
                self.names.len()
            ));
        }
        let mut last: Option<u32> = None;
        for (i, _) in &self.failures {
            if *i as usize >= items || last.is_some_and(|l| l >= *i) {
                return Err(format!("failure of item {i}: out of range or out of order"));
            }
            last = Some(*i);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ContentPart, Message};

    fn sample(id: &str) -> Sample {
        Sample {
            id: id.into(),
            messages: vec![Message {
                role: "user".into(),
                content: vec![ContentPart::Text(format!("q {id}"))],
            }],
            answer: Some("1".into()),
            metadata: vec![],
        }
    }

    fn completion(id: &str, r: &str, t: u32) -> Completion {
        Completion {
            sample: sample(id),
            response: r.into(),
            response_tokens: t,
        }
    }

    #[test]
    fn groups_pack_and_unpack_responses() {
        let batch = [
            completion("a", "x", 1),
            completion("a", "", 0),
            completion("a", "héllo", 5),
            completion("b", "y", 2),
            completion("a", "z", 3),
        ];
        let groups = Group::from_completions(&batch);
        assert_eq!(groups.len(), 3, "a, b, then a again: adjacency only");
        assert_eq!(groups[0].len(), 3);
        assert_eq!(groups[0].responses, "xhéllo");
        assert_eq!(groups[0].ends, [1, 1, 7]);
        assert_eq!(groups[0].response(2), Some("héllo"));
        assert_eq!(groups[0].response(3), None);
        assert_eq!(groups[0].tokens(2), 5);
        let mut seen = Vec::new();
        let flat: Vec<_> = groups
            .into_iter()
            .flat_map(|g| {
                g.score_each(|c| {
                    seen.push((c.sample.id.clone(), c.response.clone(), c.response_tokens));
                    Ok(Score::default())
                })
            })
            .collect();
        assert_eq!(flat.len(), batch.len());
        let want: Vec<_> = batch
            .iter()
            .map(|c| (c.sample.id.clone(), c.response.clone(), c.response_tokens))
            .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn validate_refuses_malformed_groups() {
        let mut g = Group::default();
        g.push("héllo", 2);
        g.push("x", 1);
        g.validate().unwrap();
        let mut bad = g.clone();
        bad.tokens.pop();
        assert!(bad.validate().unwrap_err().contains("token counts"));
        let mut bad = g.clone();
        bad.ends[0] = 2;
        assert!(bad.validate().unwrap_err().contains("boundary"));
        let mut bad = g;
        bad.responses.push('y');
        assert!(bad.validate().unwrap_err().contains("past the last"));
    }

    #[test]
    fn a_malformed_offset_fails_that_response_only() {
        let lengths = |responses: &str, ends: Vec<u32>| {
            let mut g = Group::new(sample("s"));
            g.responses = responses.into();
            g.ends = ends;
            g.tokens = vec![1];
            g.score_each(|c| {
                Ok(Score {
                    total: c.response.len() as f64,
                    components: vec![],
                })
            })
        };
        // "xhéllo": é is bytes 2..4.
        let out = lengths("xhéllo", vec![2, 1, 7]);
        assert_eq!(
            out[0],
            Ok(Score {
                total: 2.0,
                components: vec![]
            })
        );
        assert!(out[1].is_err(), "an offset going backwards is refused");
        assert_eq!(
            out[2].as_ref().map(|s| s.total),
            Ok(5.0),
            "the next one starts after the last good end"
        );
        let out = lengths("xhéllo", vec![3, 7]);
        assert!(out[0].as_ref().unwrap_err().contains("character boundary"));
        assert!(out[1].is_err());
    }

    fn score(total: f64, comps: &[(&str, f64)]) -> Score {
        Score {
            total,
            components: comps.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn score_table_round_trips_items_in_order() {
        let items = vec![
            Ok(score(1.5, &[("format", 1.0), ("accuracy", 0.5)])),
            Err("bad".to_string()),
            Ok(score(0.0, &[])),
            Ok(score(
                2.0,
                &[("accuracy", 1.0), ("format", 1.0), ("format", 0.0)],
            )),
        ];
        let mut t = ScoreTable::with_capacity(4);
        for r in items.clone() {
            t.push(r);
        }
        t.validate(4).unwrap();
        assert_eq!(t.names, ["format", "accuracy"]);
        for (i, want) in items.iter().enumerate() {
            assert_eq!(&t.item(i), want, "item {i}");
        }
        assert_eq!(t.failure(1), Some("bad"));
        assert_eq!(t.total(1), 0.0);

        let mut u = ScoreTable::default();
        u.push(Ok(score(3.0, &[("length", 0.1), ("format", 1.0)])));
        u.push(Err("worse".into()));
        let mut moved = ScoreTable::default();
        moved.append(t.clone());
        assert_eq!(moved, t, "appending to an empty table is the table");
        let mut all = t.clone();
        all.append(u);
        all.validate(6).unwrap();
        assert_eq!(all.names, ["format", "accuracy", "length"]);
        assert_eq!(
            all.item(4),
            Ok(score(3.0, &[("length", 0.1), ("format", 1.0)]))
        );
        assert_eq!(all.failure(5), Some("worse"));
        assert_eq!(all.item(3), items[3]);
    }

    #[test]
    fn validate_refuses_inconsistent_tables() {
        let mut t = ScoreTable::default();
        t.push(Ok(score(1.0, &[("a", 1.0)])));
        t.push(Err("e".into()));
        t.validate(2).unwrap();
        assert!(t.validate(3).is_err());
        let mut bad = t.clone();
        bad.components[0].name = 7;
        assert!(bad.validate(2).unwrap_err().contains("name index"));
        let mut bad = t.clone();
        bad.component_ends = vec![1, 0];
        assert!(bad.validate(2).is_err());
        let mut bad = t.clone();
        bad.failures.push((0, "again".into()));
        assert!(bad.validate(2).unwrap_err().contains("out of order"));
        let mut bad = t;
        bad.component_ends = vec![0, 0];
        assert!(bad.validate(2).unwrap_err().contains("cover"));
    }
}
