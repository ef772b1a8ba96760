//! Inputs of the reward benchmarks, shared by the host's `lmmhost bench
//! reward` and the in-guest ceiling measurement (`examples/rule_ceiling.rs`),
//! so every path scores exactly the same completions.

use crate::types::{Completion, ContentPart, Message, Sample};

/// A deterministic set of math completions with `chars`-character responses
/// in the R1 format, a third of them wrong, answers of several shapes.
/// Consecutive runs of `group` completions answer the same sample, as the
/// `group` responses of one GRPO prompt do (`group = 1`: one sample each).
pub fn synthetic_completions(n: usize, chars: usize, group: usize) -> Vec<Completion> {
    let answers = [
        "42",
        "\\frac{3}{4}",
        "2\\sqrt{3}",
        "0.25",
        "x^2-1",
        "(1, 2)",
        "12\\%",
        "7",
    ];
    let wrongs = [
        "41",
        "\\frac{4}{3}",
        "3\\sqrt{2}",
        "0.3",
        "x^2+1",
        "(2, 1)",
        "13\\%",
        "8",
    ];
    let group = group.max(1);
    (0..n)
        .map(|i| {
            let s = i / group;
            let k = s % answers.len();
            let given = if i % 3 == 0 { wrongs[k] } else { answers[k] };
            let head =
                format!("<think>Step {i}: we compute the quantity carefully, checking each term. ");
            let tail = format!("</think><answer>The answer is \\boxed{{{given}}}</answer>");
            let filler = "Then we simplify and verify the result against the constraints. ";
            let mut body = head;
            while body.len() + tail.len() < chars {
                body.push_str(filler);
            }
            body.truncate(chars.saturating_sub(tail.len()).max(1));
            let response = body + &tail;
            Completion {
                sample: Sample {
                    id: format!("bench-{s}"),
                    messages: vec![Message {
                        role: "user".into(),
                        content: vec![ContentPart::Text(format!(
                            "Problem {s}: compute the value."
                        ))],
                    }],
                    answer: Some(answers[k].to_string()),
                    metadata: vec![],
                },
                response,
                response_tokens: (chars / 4) as u32,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_have_the_length_asked_and_groups_share_a_sample() {
        let batch = synthetic_completions(40, 300, 8);
        assert!(batch.iter().all(|c| c.response.len() == 300));
        assert!(batch.iter().all(|c| c.response.ends_with("</answer>")));
        for (i, c) in batch.iter().enumerate() {
            assert_eq!(c.sample, batch[i / 8 * 8].sample, "item {i}");
        }
        assert_ne!(batch[7].sample, batch[8].sample);
        // One sample per completion: every id differs.
        let single = synthetic_completions(16, 300, 1);
        assert_eq!(single[5].sample.id, "bench-5");
        assert_ne!(single[0].sample, single[1].sample);
        // Every third response gives a wrong answer.
        let wrong = single
            .iter()
            .filter(|c| {
                !c.response
                    .contains(&format!("{{{}}}", c.sample.answer.as_deref().unwrap_or("")))
            })
            .count();
        assert_eq!(wrong, 6);
    }
}
