use super::*;
use lmmhost_sdk::{ContentPart, Message, Sample};

fn completion(meta: &[(&str, &str)], answer: &str, response: &str) -> Completion {
    Completion {
        sample: Sample {
            id: "s/0".into(),
            messages: vec![Message {
                role: "user".into(),
                content: vec![ContentPart::Text("q".into())],
            }],
            answer: Some(answer.into()),
            metadata: meta
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        },
        response: response.into(),
        response_tokens: 0,
    }
}

fn rule() -> TraceReward {
    TraceReward::new("").unwrap()
}

/// (total, supported, trace) of `response`.
fn score(meta: &[(&str, &str)], answer: &str, response: &str) -> (f64, f64, f64) {
    let s = rule().score(&completion(meta, answer, response)).unwrap();
    (
        s.total,
        s.component("supported").unwrap(),
        s.component("trace").unwrap(),
    )
}

// "How many red squares? Add 3." about R.BR: red 2, blue 1, answer 5.
const RED: &[(&str, &str)] = &[("cells", "R.BR"), ("color", "red"), ("add", "3")];
// "Compute 5+5-4."
const ARITH: &[(&str, &str)] = &[("operands", "5,5,4"), ("ops", "+-")];

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn honest_count_earns_everything() {
    let (t, a, tr) = score(
        RED,
        "5",
        "<think>see red . blue red, red=2 2+3=5</think><answer>5</answer>",
    );
    assert!(
        close(t, 2.0) && close(a, 1.0) && close(tr, 0.5),
        "{t} {a} {tr}"
    );
}

#[test]
fn a_fudged_sum_earns_less_than_an_honest_wrong_count() {
    // Right answer reached by counting blue and fudging the sum.
    let fudged = score(
        RED,
        "5",
        "<think>see red . blue red, blue=1 1+3=5</think><answer>5</answer>",
    );
    // Counting the wrong colour honestly: wrong answer, consistent trace.
    let honest_wrong = score(
        RED,
        "5",
        "<think>see red . blue red, blue=1 1+3=4</think><answer>4</answer>",
    );
    assert_eq!(fudged.1, 0.0, "a fudged sum is not supported");
    let s = rule()
        .score(&completion(
            RED,
            "5",
            "<think>see red . blue red, blue=1 1+3=5</think><answer>5</answer>",
        ))
        .unwrap();
    // Accuracy (what evaluation counts) is the answer's alone, and not added.
    assert_eq!(s.component("accuracy"), Some(1.0));
    assert!(close(s.total, fudged.0));
    assert!(fudged.0 < honest_wrong.0, "{fudged:?} {honest_wrong:?}");
    // A count that contradicts the trace's own listing gets no accuracy either.
    let (_, a, _) = score(
        RED,
        "5",
        "<think>see red . blue red, red=1 2+3=5</think><answer>5</answer>",
    );
    assert_eq!(a, 0.0);
    // Nor does a step that ignores the question's number.
    let (_, a, _) = score(
        RED,
        "5",
        "<think>see red . blue red, red=2 2+2=4</think><answer>5</answer>",
    );
    assert_eq!(a, 0.0);
}

#[test]
fn count_partial_credit() {
    // Blue counted where the counts coincide: the right number from a count
    // of the other colour is not supported; the rest of the trace earns.
    let meta = &[("cells", "RB.."), ("color", "red"), ("add", "3")];
    let (t, a, tr) = score(
        meta,
        "4",
        "<think>see red blue . ., blue=1 1+3=4</think><answer>4</answer>",
    );
    assert!(close(a, 0.0) && close(tr, 0.5 * 4.0 / 5.0), "{t} {a} {tr}");
    // A misread cell that makes the count come out right is not supported.
    // (R.BR read as RRB.: two cells wrong, two red all the same.)
    let (_, a, tr) = score(
        RED,
        "5",
        "<think>see red red blue ., red=2 2+3=5</think><answer>5</answer>",
    );
    assert!(close(a, 0.0) && close(tr, 0.5 * 4.5 / 5.0), "{a} {tr}");
    // One cell misread, then counted consistently: 3/4 of the cell check,
    // the answer (wrong) follows from the trace.
    let (_, a, tr) = score(
        RED,
        "5",
        "<think>see red . red red, red=3 3+3=6</think><answer>6</answer>",
    );
    assert!(close(a, 0.0) && close(tr, 0.5 * 4.75 / 5.0), "{a} {tr}");
    // No trace at all: format only.
    let (t, a, tr) = score(RED, "5", "<think></think><answer>5</answer>");
    assert!(close(t, 0.5) && a == 0.0 && tr == 0.0, "{t} {a} {tr}");
}

#[test]
fn arithmetic_steps() {
    let (t, a, tr) = score(ARITH, "6", "<think>5+5=10 10-4=6</think><answer>6</answer>");
    assert!(
        close(t, 2.0) && close(a, 1.0) && close(tr, 0.5),
        "{t} {a} {tr}"
    );
    // First step right, second off by one: 1 of 2 steps, the answer follows.
    let (t, a, tr) = score(ARITH, "6", "<think>5+5=10 10-4=7</think><answer>7</answer>");
    assert!(a == 0.0 && close(tr, 0.5 * 3.0 / 4.0), "{t} {a} {tr}");
    // The right answer after a wrong step gets no accuracy.
    let (_, a, _) = score(ARITH, "6", "<think>5+5=11 10-4=6</think><answer>6</answer>");
    assert_eq!(a, 0.0);
    // The right answer with no trace: format only.
    let (t, a, _) = score(ARITH, "6", "<think></think><answer>6</answer>");
    assert!(close(t, 0.5) && a == 0.0);
    // An extra step loses that check and the accuracy.
    let (_, a, tr) = score(
        ARITH,
        "6",
        "<think>5+5=10 10-4=6 6+0=6</think><answer>6</answer>",
    );
    assert!(a == 0.0 && close(tr, 0.5 * 3.0 / 4.0), "{a} {tr}");
    // Broken format: no format term, the rest as usual.
    let (t, a, _) = score(
        ARITH,
        "6",
        "5+5=10 <think>5+5=10 10-4=6</think><answer>6</answer>",
    );
    assert!(close(a, 1.0) && close(t, 1.5), "{t}");
}

#[test]
fn config_and_errors() {
    let r = TraceReward::new("format = 0.25\nsupported = 2\ntrace = 0").unwrap();
    let s = r
        .score(&completion(
            ARITH,
            "6",
            "<think>5+5=10 10-4=6</think><answer>6</answer>",
        ))
        .unwrap();
    assert!(close(s.total, 2.25), "{s:?}");
    for (cfg, needle) in [("tarce = 1", "tarce"), ("trace = -1", "`trace`")] {
        let e = TraceReward::new(cfg).unwrap_err();
        assert!(e.contains(needle), "{e}");
    }
    let e = rule()
        .score(&completion(&[("grid", "2x2")], "5", "<answer>5</answer>"))
        .unwrap_err();
    assert!(e.contains("s/0") && e.contains("operands"), "{e}");
    let e = rule()
        .score(&completion(ARITH, "six", "<answer>6</answer>"))
        .unwrap_err();
    assert!(e.contains("whole-number reference"), "{e}");
    let e = rule()
        .score(&completion(&[("operands", "5,x"), ("ops", "+")], "6", ""))
        .unwrap_err();
    assert!(e.contains("`operands`"), "{e}");
}
