#!/usr/bin/env python3
"""Writes sdk/tests/fixtures/reward_cases.jsonl: realistic completions of a
vision-language math model, each with its reference answer as a dataset
stores it and a hand label (`truth`: is the final answer right?).

The completions are built from an answer bank (each problem's reference, the
ways a model writes a right answer, and typical wrong answers) and templates
of how the RL recipes ask models to answer: the R1 tags (LMM-R1, R1-V),
`\\boxed{}` after the reasoning (EasyR1, ReVisual-R1, RL with cold start),
an `Answer:` line (DAPO), sentences inside `<answer>`, several boxes, and
the failure modes RL produces (answers only in the reasoning, truncation,
whitespace between the tags). Deterministic; rerun after changing the bank.

Then record each peer's verdicts: scripts/rewards/peer_verdicts.py.
"""
import json
import pathlib
import random

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "sdk" / "tests" / "fixtures" / "reward_cases.jsonl"

# (reference, right renderings, wrong renderings)
BANK = [
    ("60", ["60", "60^\\circ", "60^{\\circ}", "60.0"], ["30", "120", "61"]),
    ("7", ["7", "seven", "7.0", "\\text{7}"], ["8", "6", "17"]),
    ("12", ["12", "12 \\text{ cm}^2", "12.00"], ["24", "21", "6"]),
    ("42", ["42", "42 apples", "\\$42"], ["40", "44", "24"]),
    ("\\frac{1}{2}", ["\\frac{1}{2}", "\\dfrac{1}{2}", "0.5", "1/2"], ["\\frac{1}{3}", "2", "0.25"]),
    ("\\frac{3}{4}", ["\\frac{3}{4}", "0.75", "\\frac{6}{8}"], ["\\frac{4}{3}", "0.34", "\\frac{1}{4}"]),
    ("-3", ["-3", "-3.0", "x=-3"], ["3", "-\\frac{1}{3}", "-2"]),
    ("2\\sqrt{3}", ["2\\sqrt{3}", "\\sqrt{12}", "2\\sqrt3"], ["3\\sqrt{2}", "\\sqrt{6}", "4\\sqrt{3}"]),
    ("\\frac{\\sqrt{2}}{2}", ["\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt2}{2}"], ["\\sqrt{2}", "\\frac{1}{2}", "2\\sqrt{2}"]),
    ("9\\pi", ["9\\pi", "9 \\pi", "\\pi \\cdot 9"], ["3\\pi", "9", "18\\pi"]),
    ("25\\%", ["25\\%", "25"], ["75\\%", "2.5\\%", "52\\%"]),
    ("B", ["B", "(B)", "\\text{B}"], ["A", "C", "D"]),
    ("C", ["C", "\\text{(C)}", "C"], ["B", "D", "A"]),
    ("(2, 3)", ["(2, 3)", "(2,3)", "\\left(2, 3\\right)"], ["(3, 2)", "(2, 4)", "(1, 3)"]),
    ("[0, 1)", ["[0, 1)", "[0,1)"], ["(0, 1]", "[0, 1]", "(0, 1)"]),
    ("x^2+2x+1", ["x^2+2x+1", "(x+1)^2", "1+2x+x^2"], ["x^2+1", "(x-1)^2", "x^2+2x"]),
    ("\\{1, 2\\}", ["\\{1, 2\\}", "\\{2, 1\\}", "1, 2"], ["\\{1, 3\\}", "\\{1\\}", "\\{1, 2, 3\\}"]),
    ("1000", ["1000", "1,000", "1000.0"], ["100", "10000", "1001"]),
    ("0.25", ["0.25", "\\frac{1}{4}", ".25"], ["0.52", "0.2", "4"]),
    ("15", ["15", "15 \\text{ dollars}", "15.0"], ["16", "51", "5"]),
    ("5", ["5", "five", "x = 5"], ["6", "4", "25"]),
    ("3", ["3", "three", "3.00"], ["4", "9", "2"]),
    ("\\frac{5}{2}", ["\\frac{5}{2}", "2.5", "2\\frac{1}{2}"], ["\\frac{2}{5}", "5", "0.4"]),
    ("100", ["100", "100.0", "10^2"], ["10", "99", "1000"]),
    ("\\sqrt{5}", ["\\sqrt{5}", "5^{1/2}", "\\sqrt 5"], ["5", "\\sqrt{3}", "25"]),
    ("36", ["36", "36 \\text{ square units}", "6^2"], ["30", "63", "6"]),
    ("\\pi/3", ["\\frac{\\pi}{3}", "\\pi/3", "\\frac{1}{3}\\pi"], ["\\frac{\\pi}{6}", "\\frac{\\pi}{2}", "3\\pi"]),
    ("8", ["8", "eight", "8.0"], ["9", "16", "4"]),
    ("A", ["A", "(A)", "A"], ["B", "E", "C"]),
    ("2", ["2", "two", "2.0"], ["1", "3", "-2"]),
]

THOUGHTS = [
    "Looking at the figure, the two marked angles are equal, so I set up an equation and solve it step by step.",
    "First I read the values from the chart. Then I compute the requested quantity and check the units.",
    "Let me count the objects in the image carefully, row by row, then apply the operation in the question.",
    "The triangle is isosceles, so the base angles are equal; using the angle sum of 180 degrees gives the result.",
]


def templates():
    # (name, template, truth_from_answer): {t} thought, {a} the answer text.
    return [
        ("r1-tags", "<think>{t}</think><answer>{a}</answer>"),
        ("r1-tags-dollar", "<think>{t}</think><answer>${a}$</answer>"),
        ("r1-tags-boxed", "<think>{t}</think><answer>\\boxed{{{a}}}</answer>"),
        ("r1-tags-lmm-r1-style", "<think>{t}</think><answer>The answer is $\\boxed{{{a}}}$</answer>"),
        ("r1-tags-sentence", "<think>{t}</think><answer>The answer is {a}.</answer>"),
        ("r1-space-between", "<think>{t}</think>\n<answer>{a}</answer>"),
        ("r1-space-between-boxed", "<think>{t}</think> <answer>$\\boxed{{{a}}}$</answer>"),
        ("easyr1-boxed", "<think>{t}</think>\nTherefore, the final answer is \\boxed{{{a}}}."),
        ("easyr1-boxed-dollar", "<think>{t}</think> So the answer is $\\boxed{{{a}}}$."),
        ("boxed-no-think", "{t} Hence the answer is \\boxed{{{a}}}."),
        ("final-answer-bold", "{t}\n\n**Final Answer**\n\\[\n\\boxed{{{a}}}\n\\]"),
        ("answer-line", "{t}\nAnswer: {a}"),
        ("answer-line-dollar", "{t}\n\nAnswer: ${a}$"),
        ("final-answer-is-dollar", "{t} The final answer is ${a}$."),
        ("prose-dollar-last", "{t} So we get ${a}$."),
    ]


HACKS = [
    # (name, template, truth): the answer appears only where it must not count, or twice.
    ("answer-only-in-think", "<think>{t} The answer is \\boxed{{{a}}}.</think><answer></answer>", False),
    ("answer-only-in-think-tags", "<think>{t} so it is {a}.</think>", False),
    ("truncated-in-think", "<think>{t} Let me compute: the value is \\boxed{{{a}", False),
    ("truncated-after-answer-open", "<think>{t}</think><answer>", False),
    ("two-boxed-wrong-last", "<think>{t}</think> It could be \\boxed{{{a}}} or maybe \\boxed{{{w}}}.", None),
    ("two-boxed-right-last", "<think>{t}</think> First I thought \\boxed{{{w}}}, but actually \\boxed{{{a}}}.", None),
    ("boxed-then-answer-tag", "<think>{t}</think><answer>\\boxed{{{w}}}</answer> \\boxed{{{a}}}", None),
]


def main() -> None:
    rng = random.Random(20)
    cases = []
    names = templates()
    for pi, (ref, rights, wrongs) in enumerate(BANK):
        ref_styles = [ref, f"${ref}$", f"$\\boxed{{{ref}}}$"]
        for k in range(12):
            name, tpl = names[(pi * 5 + k) % len(names)]
            right = k % 3 != 2
            a = rng.choice(rights) if right else rng.choice(wrongs)
            t = THOUGHTS[(pi + k) % len(THOUGHTS)]
            cases.append({
                "id": f"{pi:02d}-{k:02d}-{name}",
                "reference": ref_styles[(pi + k) % 3],
                "response": tpl.format(t=t, a=a),
                "truth": right,
                "kind": name,
            })
        for hi, (name, tpl, truth) in enumerate(HACKS):
            if (pi + hi) % 3:
                continue
            a, w = rights[0], wrongs[0]
            t = THOUGHTS[(pi + hi) % len(THOUGHTS)]
            if truth is None:
                # Several boxes: the last one is what a reward should read;
                # a set-reading verifier may differ (docs/rewards.md).
                truth = name != "two-boxed-wrong-last"
            cases.append({
                "id": f"{pi:02d}-h{hi}-{name}",
                "reference": ref_styles[pi % 3],
                "response": tpl.format(t=t, a=a, w=w),
                "truth": truth,
                "kind": name,
            })
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        for c in cases:
            f.write(json.dumps(c, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} cases to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
