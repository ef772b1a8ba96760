use super::*;
use crate::types::Sample;

fn completion(answer: Option<&str>, response: &str) -> Completion {
    Completion {
        sample: Sample {
            id: "s7".into(),
            answer: answer.map(str::to_owned),
            ..Default::default()
        },
        response: response.to_owned(),
        response_tokens: 10,
    }
}

#[test]
fn default_is_boxed_then_answer_tag() {
    let r = MathAccuracy::new("").unwrap();
    let s = r
        .score(&completion(
            Some("$\\boxed{60}$"),
            "so the answer is \\boxed{60}.",
        ))
        .unwrap();
    assert_eq!(s.total, 1.0);
    assert_eq!(s.components, vec![("accuracy".to_owned(), 1.0)]);
    // Falls back to <answer> when there is no \boxed.
    let s = r
        .score(&completion(
            Some("0.5"),
            "<think>x</think><answer>1/2</answer>",
        ))
        .unwrap();
    assert_eq!(s.total, 1.0);
    // Wrong, and no extractable answer: both `wrong`.
    assert_eq!(
        r.score(&completion(Some("3"), "\\boxed{4}")).unwrap().total,
        0.0
    );
    assert_eq!(
        r.score(&completion(Some("3"), "it is 3")).unwrap().total,
        0.0
    );
}

#[test]
fn last_number_extraction_when_configured() {
    let r = MathAccuracy::new("extract = [\"last_number\"]").unwrap();
    assert_eq!(
        r.score(&completion(Some("3"), "it is 3")).unwrap().total,
        1.0
    );
}

#[test]
fn format_plus_accuracy_lmm_r1() {
    let r = MathAccuracy::new("format = \"r1\"").unwrap();
    let good = "<think>6*10</think><answer>60</answer>";
    let s = r.score(&completion(Some("60"), good)).unwrap();
    assert_eq!(s.total, 1.5);
    assert_eq!(
        s.components,
        vec![("format".to_owned(), 0.5), ("accuracy".to_owned(), 1.0)]
    );
    // Right answer, broken format.
    let s = r
        .score(&completion(Some("60"), "<answer>60</answer>"))
        .unwrap();
    assert_eq!(s.total, 1.0);
    assert_eq!(s.component("format"), Some(0.0));
}

#[test]
fn easyr1_weights() {
    let r = MathAccuracy::new("correct = 0.9\nformat = \"boxed\"").unwrap();
    let s = r
        .score(&completion(Some("2"), "<think>1+1</think> \\boxed{2}"))
        .unwrap();
    assert!((s.total - 1.0).abs() < 1e-12, "{s:?}");
    let s = r.score(&completion(Some("2"), "\\boxed{3}")).unwrap();
    assert_eq!(s.total, 0.0);
}

#[test]
fn missing_reference_is_an_error_naming_the_sample() {
    let r = MathAccuracy::new("").unwrap();
    let e = r.score(&completion(None, "\\boxed{1}")).unwrap_err();
    assert!(e.contains("s7") && e.contains("answer"), "{e}");
    // One bad item does not sink the batch.
    let out = crate::reward::score_completions(
        &r,
        &[completion(None, "x"), completion(Some("1"), "\\boxed{1}")],
    );
    assert!(out[0].is_err());
    assert_eq!(out[1].as_ref().unwrap().total, 1.0);
}

#[test]
fn config_errors() {
    let e = MathAccuracy::new("extract = [\"boxd\"]").unwrap_err();
    assert!(e.contains("boxd"), "{e}");
    let e = MathAccuracy::new("extract = []").unwrap_err();
    assert!(e.contains("extract"), "{e}");
    let e = MathAccuracy::new("corect = 1.0").unwrap_err();
    assert!(e.contains("corect"), "{e}");
}

#[test]
fn any_of_several_answers_from_metadata() {
    let r = MathAccuracy::new("").unwrap();
    let mut c = completion(Some("2"), "\\boxed{-2}");
    assert_eq!(r.score(&c).unwrap().total, 0.0);
    c.sample.metadata = vec![("answers".into(), "[\"2\",\"-2\"]".into())];
    assert_eq!(r.score(&c).unwrap().total, 1.0);
    c.response = "\\boxed{3}".into();
    assert_eq!(r.score(&c).unwrap().total, 0.0);
}

#[test]
fn presets_and_overrides() {
    let r = MathAccuracy::new("preset = \"dapo\"").unwrap();
    assert_eq!(
        r.score(&completion(Some("5"), "so\nAnswer: 5"))
            .unwrap()
            .total,
        1.0
    );
    assert_eq!(
        r.score(&completion(Some("5"), "\\boxed{5}")).unwrap().total,
        -1.0
    );
    // Every key overrides the preset.
    let r = MathAccuracy::new("preset = \"dapo\"\nwrong = 0.0\ncompare = \"equivalent\"").unwrap();
    assert_eq!(
        r.score(&completion(Some("0.5"), "Answer: 1/2"))
            .unwrap()
            .total,
        1.0
    );
    assert_eq!(
        r.score(&completion(Some("5"), "nothing")).unwrap().total,
        0.0
    );
    let e = MathAccuracy::new("preset = \"verl\"").unwrap_err();
    assert!(e.contains("verl") && e.contains("preset"), "{e}");
    // The strict default reads neither the reasoning nor spelled numbers' absence.
    let r = MathAccuracy::new("").unwrap();
    let think = "<think>\\boxed{7}</think><answer>seven</answer>";
    assert_eq!(r.score(&completion(Some("7"), think)).unwrap().total, 1.0);
    let r = MathAccuracy::new("number_words = false").unwrap();
    assert_eq!(r.score(&completion(Some("7"), think)).unwrap().total, 0.0);
    let r = MathAccuracy::new("think = true").unwrap();
    assert_eq!(
        r.score(&completion(Some("7"), "<think>\\boxed{7}</think>"))
            .unwrap()
            .total,
        1.0
    );
}
