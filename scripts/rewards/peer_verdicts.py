#!/usr/bin/env python3
"""Records the verdicts of the reward code lmmhost's presets mimic, run the
way each project's reward manager calls it, on
sdk/tests/fixtures/reward_cases.jsonl (scripts/rewards/make_cases.py),
into sdk/tests/fixtures/reward_peer_verdicts.jsonl (per case and peer: the
total and, where the peer reports them, its format and accuracy components). sdk/tests/reward_presets.rs
compares every preset with these verdicts (and the `math-verify` preset with
Math-Verify on its own test tables, recorded by scripts/math-verify/compare.py).

Nothing of the peers is copied into this repository: their files are loaded
from checkouts you pass on the command line.

Set-up (a venv outside the repo):
    python3 -m venv /work/venvs/peers
    /work/venvs/peers/bin/pip install math-verify==0.9.0 mathruler==0.1.0 flask loguru tqdm
    git clone https://github.com/TideDra/lmm-r1      # LMM-R1 (openrlhf/models/remote_rm/math_verifier.py)
    git clone https://github.com/hiyouga/EasyR1       # examples/reward_function/{math,r1v,dapo}.py
    git clone https://github.com/volcengine/verl      # verl/utils/reward_score/math_dapo.py
Run (from the repository root):
    /work/venvs/peers/bin/python scripts/rewards/peer_verdicts.py \\
        --lmm-r1 ../lmm-r1 --easyr1 ../EasyR1 --verl ../verl

Peers and how they are called:
  lmm-r1      LMM-R1's remote reward server (math_verifier.py), through its
              Flask route /get_reward with a chatml query, as OpenRLHF posts
              it: 0.5 * format + accuracy (Math-Verify, LaTeX only, boxed first).
  easyr1      EasyR1 examples/reward_function/math.py compute_score (mathruler;
              0.9 * accuracy + 0.1 * format). ReVisual-R1 and RL with cold
              start ship the same rule.
  r1v         EasyR1 examples/reward_function/r1v.py compute_score
              (0.5 * accuracy + 0.5 * format).
  dapo        verl verl/utils/reward_score/math_dapo.py compute_score (+1/-1).
  math-verify verl verl/utils/reward_score/math_verify.py compute_score
              (Math-Verify's math_metric; the reference wrapped in \\boxed{}).
"""
import argparse
import importlib.util
import json
import pathlib
import re
import sys
from concurrent import futures

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIX = ROOT / "sdk" / "tests" / "fixtures"


def load(path: pathlib.Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def lmm_r1_server(repo: pathlib.Path):
    path = repo / "openrlhf/models/remote_rm/math_verifier.py"
    mod = load(path, "lmm_r1_math_verifier")
    # What the server's __main__ sets from `--prompt-template chatml`: the
    # format regex is read from the file, not restated here.
    src = path.read_text()
    mod.format_pattern = re.search(r'format_pattern = (r".*")', src).group(1)
    mod.format_pattern = eval(mod.format_pattern)  # a raw string literal from the file
    mod.response_prefix = r"<\|im_start\|>assistant\n"
    mod.enable_format_reward = True
    mod.math_verify_executor = futures.ProcessPoolExecutor(max_workers=2)
    client = mod.app.test_client()

    def score(response: str, reference: str) -> dict:
        query = f"<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n{response}<|im_end|>"
        r = client.post("/get_reward", json={"query": [query], "prompts": ["Q"], "labels": [reference]}).get_json()
        return {"total": r["rewards"][0], "format": r["format_rewards"][0], "accuracy": r["acc_rewards"][0]}

    return score


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmm-r1", type=pathlib.Path, required=True)
    ap.add_argument("--easyr1", type=pathlib.Path, required=True)
    ap.add_argument("--verl", type=pathlib.Path, required=True)
    args = ap.parse_args()

    import logging

    logging.disable(logging.WARNING)
    import math_verify

    easy_math = load(args.easyr1 / "examples/reward_function/math.py", "easyr1_math")
    easy_r1v = load(args.easyr1 / "examples/reward_function/r1v.py", "easyr1_r1v")
    dapo = load(args.verl / "verl/utils/reward_score/math_dapo.py", "verl_math_dapo")
    verl_mv = load(args.verl / "verl/utils/reward_score/math_verify.py", "verl_math_verify")
    lmm = lmm_r1_server(args.lmm_r1)

    def mv(response: str, reference: str) -> dict:
        ok = float(verl_mv.compute_score(response, reference))
        return {"total": ok, "accuracy": ok}

    def easyr1(mod, batch: bool):
        def score(response: str, reference: str) -> dict:
            inp = {"response": response, "response_length": 1, "ground_truth": reference}
            r = mod.compute_score([inp])[0] if batch else mod.compute_score(inp)
            return {"total": r["overall"], "format": r["format"], "accuracy": r["accuracy"]}

        return score

    def verl_dapo(response: str, reference: str) -> dict:
        r = dapo.compute_score(response, reference)
        return {"total": r["score"], "accuracy": r["score"]}

    peers = {
        "lmm-r1": lmm,
        "easyr1": easyr1(easy_math, True),
        "r1v": easyr1(easy_r1v, False),
        "dapo": verl_dapo,
        "math-verify": mv,
    }
    out = FIX / "reward_peer_verdicts.jsonl"
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        f.write(json.dumps({"_comment": "generated by scripts/rewards/peer_verdicts.py", "math_verify": math_verify.__version__
                            if hasattr(math_verify, "__version__") else "0.9.0"}) + "\n")
        with open(FIX / "reward_cases.jsonl", encoding="utf-8") as cases:
            for line in cases:
                c = json.loads(line)
                rec = {"set": "cases", "id": c["id"]}
                for name, fn in peers.items():
                    rec[name] = {k: round(float(v), 6) for k, v in fn(c["response"], c["reference"]).items()}
                f.write(json.dumps(rec) + "\n")
                n += 1
    print(f"wrote {n} verdict records to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
