#!/usr/bin/env python3
"""Transcribe Math-Verify's published test cases into data.

Source: the tests/ folder of Math-Verify's own sdist on PyPI,
math_verify-0.9.0.tar.gz (`pip download --no-binary :all: --no-deps
math-verify==0.9.0`), MIT licence, (c) The HuggingFace Team.
Only the (gold, pred, expected) triples of `@pytest.mark.parametrize` tables
are read (with `ast.literal_eval`, nothing is executed); the test code itself
is not copied.

Usage: transcribe_upstream.py PATH/TO/math_verify-0.9.0/tests > upstream_cases.jsonl
"""
import ast
import json
import pathlib
import sys

SOURCE = "math-verify==0.9.0 sdist"


def main() -> None:
    tests = pathlib.Path(sys.argv[1])
    for path in sorted(tests.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            for deco in fn.decorator_list:
                if not (isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "parametrize"):
                    continue
                names = [n.strip() for n in ast.literal_eval(deco.args[0]).split(",")]
                try:
                    rows = ast.literal_eval(deco.args[1])
                except ValueError:
                    print(f"skipped (not a literal table): {path.name}::{fn.name}", file=sys.stderr)
                    continue
                if "gold" not in names or "pred" not in names:
                    continue
                want = "expected" if "expected" in names else "result"
                for row in rows:
                    rec = dict(zip(names, row))
                    print(json.dumps({
                        "reference": rec["gold"],
                        "prediction": rec["pred"],
                        "upstream_expected": bool(rec[want]),
                        "source": f"huggingface/Math-Verify ({SOURCE}) tests/{path.name}::{fn.name}",
                    }, ensure_ascii=False))


if __name__ == "__main__":
    main()
