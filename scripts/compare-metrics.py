#!/usr/bin/env python3
"""Compares two runs' metrics.jsonl: the same records (step, stage, kind,
stage_step), the same metric names, and every value exactly equal except the
wall-clock ones (time/*, throughput/*). Exits 1 on any difference.

    scripts/compare-metrics.py runs/a/metrics.jsonl runs/b/metrics.jsonl

For checking that a change which should not alter training does not (same
seed, same machine).
"""
import json
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(a_path, b_path):
    a, b = load(a_path), load(b_path)
    problems = []
    if len(a) != len(b):
        problems.append(f"{len(a)} records vs {len(b)}")
    compared = 0
    for i, (x, y) in enumerate(zip(a, b)):
        for k in ("step", "stage", "kind", "stage_step"):
            if x[k] != y[k]:
                problems.append(f"record {i}: {k} {x[k]!r} vs {y[k]!r}")
        xv, yv = x["values"], y["values"]
        if set(xv) != set(yv):
            problems.append(
                f"record {i} (step {x['step']}): only in the first {sorted(set(xv) - set(yv))}, "
                f"only in the second {sorted(set(yv) - set(xv))}"
            )
        for k in sorted(set(xv) & set(yv)):
            if k.startswith(("time/", "throughput/")):
                continue
            compared += 1
            if xv[k] != yv[k]:
                problems.append(f"record {i} (step {x['step']}, {x['kind']}): {k} = {xv[k]!r} vs {yv[k]!r}")
    for p in problems[:50]:
        print(p)
    print(f"{len(a)} records, {compared} values compared, {len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
