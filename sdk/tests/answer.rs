//! Answer extraction helpers: boxed, tags, format checks, choice letters.

use lmmhost_sdk::answer::{
    choice_letter, extract_answer, is_boxed_format, is_r1_format, is_r1_spaced_format, last_boxed,
    tag_content, Extractor,
};

#[test]
fn boxed_takes_the_last_and_matches_nested_braces() {
    assert_eq!(
        last_boxed(r"so \boxed{1} then \boxed{\frac{1}{2}}"),
        Some(r"\frac{1}{2}")
    );
    assert_eq!(
        last_boxed(r"\boxed{\sqrt{\frac{a}{b}}} done."),
        Some(r"\sqrt{\frac{a}{b}}")
    );
    assert_eq!(last_boxed(r"$\boxed{\{1, 2\}}$"), Some(r"\{1, 2\}"));
    assert_eq!(last_boxed(r"\fbox{7}"), Some("7"));
    assert_eq!(last_boxed(r"\boxed{3} and \fbox{4}"), Some("4"));
    assert_eq!(last_boxed(r"\boxed {12}"), Some("12"));
    assert_eq!(last_boxed(r"\boxed 5$"), Some("5"));
    assert_eq!(last_boxed(r"\boxed{}"), Some(""));
    // Nested boxes: the innermost (last) one.
    assert_eq!(last_boxed(r"\boxed{\boxed{9}}"), Some("9"));
    // Other commands (backslashes) after, between and inside the boxes.
    assert_eq!(
        last_boxed(r"\fbox{1} \quad \boxed{\sqrt{2}} \text{ cm} \\ done"),
        Some(r"\sqrt{2}")
    );
    assert_eq!(last_boxed(r"\boxed{5} \fbo \boxe \\boxed"), Some("5"));
    assert_eq!(last_boxed(r"\\\\"), None);
}

#[test]
fn boxed_skips_unclosed_and_reports_absence() {
    assert_eq!(last_boxed(r"\boxed{2} and then \boxed{3"), Some("2"));
    assert_eq!(last_boxed(r"\boxed{"), None);
    assert_eq!(last_boxed("no box here"), None);
    assert_eq!(last_boxed(""), None);
    assert_eq!(last_boxed(r"\boxed"), None);
    // Multi-byte text around and inside.
    assert_eq!(last_boxed("答案是 \\boxed{π/2} 。"), Some("π/2"));
}

#[test]
fn tag_content_takes_the_last_pair() {
    let t = "<think>a</think><answer> 42 </answer>";
    assert_eq!(tag_content(t, "answer"), Some(" 42 "));
    assert_eq!(tag_content(t, "think"), Some("a"));
    assert_eq!(
        tag_content("<answer>1</answer> <answer>2</answer>", "answer"),
        Some("2")
    );
    assert_eq!(tag_content("<answer>unclosed", "answer"), None);
    assert_eq!(tag_content("</answer><answer>", "answer"), None);
    assert_eq!(tag_content("<answer></answer>", "answer"), Some(""));
    assert_eq!(tag_content("x", ""), None);
}

#[test]
fn r1_format_requires_exactly_one_of_each_tag_in_order() {
    assert!(is_r1_format("<think>reason</think><answer>4</answer>"));
    // LMM-R1 strips the response, and its regex allows nothing between
    // `</think>` and `<answer>`, not even a newline (R1-V's rule does).
    assert!(is_r1_format(
        "  <think>\nreason\n</think><answer>4</answer>\n"
    ));
    assert!(!is_r1_format("<think>reason</think>\n\n<answer>4</answer>"));
    assert!(!is_r1_format("<think>reason</think> <answer>4</answer>"));
    assert!(is_r1_spaced_format(
        "<think>reason</think>\n\n<answer>4</answer>"
    ));
    assert!(!is_r1_spaced_format(
        " <think>reason</think><answer>4</answer>"
    ));
    assert!(!is_r1_spaced_format(
        "<think>r</think> so <answer>4</answer>"
    ));
    // LMM-R1 counts only the opening tags: a stray `</think>` in the answer passes.
    assert!(is_r1_format("<think>r</think><answer>4 </think></answer>"));
    assert!(is_r1_format("<think></think><answer></answer>"));
    // A `<` that opens no tag, multi-byte text next to it.
    assert!(is_r1_format(
        "<think>a < b, 答<案</think><answer>x<4</answer>"
    ));
    assert!(!is_r1_format(
        "<think>a <think> b</think><answer>4</answer>"
    ));
    // Text between the blocks, before or after: rejected.
    assert!(!is_r1_format("<think>r</think> so <answer>4</answer>"));
    assert!(!is_r1_format("Sure! <think>r</think><answer>4</answer>"));
    assert!(!is_r1_format("<think>r</think><answer>4</answer> bye"));
    // Repeated or missing tags.
    assert!(!is_r1_format(
        "<think>r</think><think>s</think><answer>4</answer>"
    ));
    assert!(!is_r1_format(
        "<think>r</think><answer>4</answer><answer>5</answer>"
    ));
    assert!(!is_r1_format(
        "<think>r <answer>x</answer></think><answer>4</answer>"
    ));
    assert!(!is_r1_format("<answer>4</answer><think>r</think>"));
    assert!(!is_r1_format("<think>r</think>"));
    assert!(!is_r1_format(""));
}

#[test]
fn boxed_format_follows_easyr1() {
    assert!(is_boxed_format(
        "<think>r</think> The answer is \\boxed{4}."
    ));
    assert!(is_boxed_format(" <think>r</think>\\boxed{x}"));
    assert!(!is_boxed_format("<think>r</think> The answer is 4."));
    assert!(!is_boxed_format("\\boxed{4}<think>r</think>"));
    assert!(!is_boxed_format("<think>r \\boxed{4}</think>"));
    assert!(!is_boxed_format("reasoning </think> \\boxed{4}"));
    assert!(!is_boxed_format("<think>r</think> \\boxed{4"));
}

#[test]
fn choice_letter_handles_common_phrasings() {
    let cases: &[(&str, Option<char>)] = &[
        ("B", Some('B')),
        ("(B)", Some('B')),
        ("B.", Some('B')),
        ("B)", Some('B')),
        ("b", Some('B')),
        ("(c) 42 cm", Some('C')),
        ("The answer is B", Some('B')),
        ("the answer is (d).", Some('D')),
        ("Answer: C", Some('C')),
        ("**Answer:** A", Some('A')),
        ("So the final answer is \\boxed{B}.", Some('B')),
        ("\\boxed{\\text{(C)}}", Some('C')),
        (
            "<think>A looks wrong, (B) too</think><answer>D</answer>",
            Some('D'),
        ),
        (
            "<think>hmm</think><answer>The answer is C. 12 apples</answer>",
            Some('C'),
        ),
        ("The correct option is B: 42 cm", Some('B')),
        ("B. 42 cm", Some('B')),
        ("Comparing (A) and (C), we pick (C)", Some('C')),
        ("**B**", Some('B')),
        ("Option (C)", Some('C')),
        ("The answer is: **C**", Some('C')),
        ("Answer: (A) 12 cm, because the base is 6 cm", Some('A')),
        ("$\\boxed{\\text{D}}$", Some('D')),
        ("<answer>(b)</answer>", Some('B')),
        // Out of range for 4 options.
        ("The answer is E", None),
        ("(E)", None),
        // Words starting with a letter are not answers.
        ("Because the angle is right", None),
        ("the answer is a triangle", None),
        ("no letter here 42", None),
        ("", None),
    ];
    for (text, want) in cases {
        assert_eq!(choice_letter(text, 4), *want, "text: {text:?}");
    }
    assert_eq!(choice_letter("The answer is E", 5), Some('E'));
    assert_eq!(choice_letter("A", 0), None);
}

#[test]
fn extract_answer_follows_the_order() {
    use Extractor::*;
    let t = "<think>3 or 4?</think><answer>\\boxed{4} apples</answer>";
    assert_eq!(extract_answer(t, &[Boxed, AnswerTag]), Some("4"));
    assert_eq!(
        extract_answer(t, &[AnswerTag, Boxed]),
        Some("\\boxed{4} apples")
    );
    assert_eq!(
        extract_answer("<answer> 7 </answer>", &[Boxed, AnswerTag]),
        Some("7")
    );
    assert_eq!(extract_answer("nothing", &[Boxed, AnswerTag]), None);
    assert_eq!(
        extract_answer("  just 12  ", &[Boxed, Whole]),
        Some("just 12")
    );
    assert_eq!(
        extract_answer("<think>1</think> it is 12", &[Whole]),
        Some("it is 12")
    );
    // Empty boxed content falls through to the next extractor.
    assert_eq!(
        extract_answer("\\boxed{ } <answer>5</answer>", &[Boxed, AnswerTag]),
        Some("5")
    );
    assert_eq!(
        extract_answer("", &[Boxed, AnswerTag, LastNumber, Whole]),
        None
    );
}

#[test]
fn last_number_extractor() {
    use Extractor::LastNumber;
    let cases: &[(&str, Option<&str>)] = &[
        ("the total is 1,234.5 dollars", Some("1,234.5")),
        ("x went from 3 to -7.", Some("-7")),
        ("ratio 2/3", Some("2/3")),
        ("about .5", Some(".5")),
        ("<think>99</think> answer 4", Some("4")),
        ("x-3", Some("3")),
        ("1,2,3", Some("3")),
        ("none", None),
    ];
    for (text, want) in cases {
        assert_eq!(extract_answer(text, &[LastNumber]), *want, "text: {text:?}");
    }
}

#[test]
fn extractor_names_deserialize() {
    #[derive(serde::Deserialize)]
    struct C {
        order: Vec<Extractor>,
    }
    let c: C =
        toml::from_str(r#"order = ["boxed", "answer_tag", "last_number", "whole"]"#).unwrap();
    assert_eq!(
        c.order,
        vec![
            Extractor::Boxed,
            Extractor::AnswerTag,
            Extractor::LastNumber,
            Extractor::Whole
        ]
    );
    assert!(toml::from_str::<C>(r#"order = ["regex"]"#).is_err());
    assert_eq!("answer_tag".parse::<Extractor>(), Ok(Extractor::AnswerTag));
    assert!("Boxed".parse::<Extractor>().is_err());
}

#[test]
fn helpers_never_panic_on_garbage() {
    let nasty = [
        "\\",
        "\\boxed",
        "\\boxed{",
        "}}}}{{{{",
        "<answer>",
        "</answer><answer>",
        "<think><think></think>",
        "\\boxed{\\}",
        "é\\boxed{é",
        "(",
        "(B",
        "answer",
        "answer is",
        "\u{0}\u{ffff}",
        "\\fbox{\\boxed{}",
    ];
    let many_unclosed = "\\boxed{".repeat(5000);
    assert_eq!(last_boxed(&many_unclosed), None);
    let deep = format!("\\boxed{{{}x{}}}", "{".repeat(10_000), "}".repeat(10_000));
    for t in nasty.iter().copied().chain([deep.as_str()]) {
        let _ = last_boxed(t);
        let _ = tag_content(t, "answer");
        let _ = is_r1_format(t);
        let _ = is_boxed_format(t);
        let _ = choice_letter(t, 5);
        let _ = extract_answer(
            t,
            &[
                Extractor::Boxed,
                Extractor::AnswerTag,
                Extractor::LastNumber,
                Extractor::Whole,
            ],
        );
    }
    assert_eq!(last_boxed(&deep).map(str::len), Some(20_001));
}
