//! Numbers written as English words ("seven", "twenty-one", "one hundred
//! and five"), for answers a model spells out.

const UNITS: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 8] = [
    "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// The value of a whole answer written in words (`\text{}` and a final
/// full stop allowed), up to the millions; `None` for anything else.
pub fn number_from_words(s: &str) -> Option<u64> {
    let mut t = s.trim().trim_matches('$').trim();
    if let Some(inner) = t.strip_prefix("\\text{").and_then(|x| x.strip_suffix('}')) {
        t = inner.trim();
    }
    let t = t.trim_end_matches('.').to_ascii_lowercase();
    if t.is_empty()
        || t.len() > 80
        || !t
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c == b' ' || c == b'-')
    {
        return None;
    }
    let (mut total, mut current) = (0u64, 0u64);
    let mut any = false;
    let mut number = false;
    for w in t.split([' ', '-']).filter(|w| !w.is_empty() && *w != "and") {
        number |= w != "a";
        if let Some(v) = UNITS.iter().position(|u| *u == w) {
            current += v as u64;
        } else if let Some(v) = TENS.iter().position(|u| *u == w) {
            current += 20 + 10 * v as u64;
        } else {
            match w {
                "a" if !any => current = current.max(1),
                "hundred" => current = current.max(1) * 100,
                "thousand" => {
                    total += current.max(1) * 1_000;
                    current = 0;
                }
                "million" => {
                    total += current.max(1) * 1_000_000;
                    current = 0;
                }
                _ => return None,
            }
        }
        any = true;
    }
    (any && number).then_some(total + current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelled_numbers() {
        for (s, v) in [
            ("seven", 7),
            ("Seven.", 7),
            ("\\text{seven}", 7),
            ("$five$", 5),
            ("twenty-one", 21),
            ("one hundred and five", 105),
            ("a hundred", 100),
            ("two thousand three hundred", 2300),
            ("zero", 0),
        ] {
            assert_eq!(number_from_words(s), Some(v), "{s}");
        }
        for s in ["", "seven apples", "x", "and", "a", "7"] {
            assert_eq!(number_from_words(s), None, "{s}");
        }
    }
}
