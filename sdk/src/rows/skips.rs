//! `skip_bad_rows` bookkeeping shared by the loaders: the first reasons in
//! full (file and line), and a count per kind of reason.

/// Skipped rows: the first `max_notes` errors and a count per reason class.
#[derive(Debug, Default)]
pub struct SkipTally {
    pub count: u64,
    first: Vec<String>,
    max_first: usize,
    /// (reason class, count), in order of first appearance.
    classes: Vec<(String, u64)>,
}

impl SkipTally {
    pub fn new(max_notes: usize) -> Self {
        SkipTally {
            max_first: max_notes,
            ..SkipTally::default()
        }
    }

    /// Records a skipped row: `location` (`file:line`, `file: row group g,
    /// row r`) and the row's problem.
    pub fn add(&mut self, location: &str, problem: &str) {
        self.count += 1;
        if self.first.len() < self.max_first {
            self.first.push(format!("skipped {location}: {problem}"));
        }
        let class = reason_class(problem);
        match self.classes.iter_mut().find(|(c, _)| *c == class) {
            Some((_, n)) => *n += 1,
            None => self.classes.push((class, 1)),
        }
    }

    /// The notes for `DatasetInfo`: the first rows skipped, then one line per
    /// reason class with its count (most frequent first).
    pub fn notes(&self) -> Vec<String> {
        let mut notes = self.first.clone();
        let mut classes = self.classes.clone();
        classes.sort_by_key(|c| std::cmp::Reverse(c.1));
        for (class, n) in classes {
            let rows = if n == 1 { "row" } else { "rows" };
            notes.push(format!("{n} {rows} skipped: {class}"));
        }
        notes
    }

    /// (reason class, count) pairs, most frequent first.
    pub fn classes(&self) -> Vec<(String, u64)> {
        let mut c = self.classes.clone();
        c.sort_by_key(|c| std::cmp::Reverse(c.1));
        c
    }

    /// The first full reason, for an error when no row is usable.
    pub fn first(&self) -> Option<&str> {
        self.first.first().map(String::as_str)
    }
}

/// A row error with its particulars removed, so that rows failing for the
/// same reason count together: the first backquoted name (the field) is
/// kept with its indices as `[N]`; later backquoted values become `…`,
/// parenthesised details are dropped and numbers become `N`.
pub fn reason_class(problem: &str) -> String {
    let mut out = String::with_capacity(problem.len());
    let mut quoted = 0;
    let mut chars = problem.chars().peekable();
    let mut paren = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '(' => paren += 1,
            ')' if paren > 0 => {
                paren -= 1;
                // Drop the space that preceded the group.
                if paren == 0 && out.ends_with(' ') {
                    out.pop();
                }
            }
            _ if paren > 0 => {}
            '`' => {
                quoted += 1;
                let mut inner = String::new();
                for d in chars.by_ref() {
                    if d == '`' {
                        break;
                    }
                    inner.push(d);
                }
                out.push('`');
                if quoted == 1 || !inner.chars().any(|c| c == '/' || c == ' ') {
                    out.push_str(&digits_to_n(&inner));
                } else {
                    out.push('…');
                }
                out.push('`');
            }
            d if d.is_ascii_digit() => {
                while chars.peek().is_some_and(|x| x.is_ascii_digit()) {
                    chars.next();
                }
                out.push('N');
            }
            other => out.push(other),
        }
    }
    out
}

fn digits_to_n(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_digit = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !prev_digit {
                out.push('N');
            }
            prev_digit = true;
        } else {
            out.push(c);
            prev_digit = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_group_rows_failing_for_the_same_reason() {
        assert_eq!(
            reason_class("missing field `answer`"),
            "missing field `answer`"
        );
        assert_eq!(
            reason_class(
                "`images[3]`: image `a b.png` (/d/a b.png) is outside the granted directories"
            ),
            "`images[N]`: image `…` is outside the granted directories"
        );
        assert_eq!(
            reason_class("invalid JSON: expected value at line 1 column 17"),
            "invalid JSON: expected value at line N column N"
        );
        let mut t = SkipTally::new(1);
        t.add("f.jsonl:2", "missing field `answer`");
        t.add(
            "f.jsonl:5",
            "`problem` has 2 `<image>` placeholders but `images` has 1 entries",
        );
        t.add("f.jsonl:9", "missing field `answer`");
        assert_eq!(t.count, 3);
        assert_eq!(
            t.notes(),
            vec![
                "skipped f.jsonl:2: missing field `answer`".to_owned(),
                "2 rows skipped: missing field `answer`".to_owned(),
                "1 row skipped: `problem` has N `<image>` placeholders but `images` has N entries"
                    .to_owned(),
            ]
        );
    }
}
