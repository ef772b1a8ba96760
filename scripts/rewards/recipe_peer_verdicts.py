#!/usr/bin/env python3
"""Records the verdicts of the recipe rewards lmmhost reproduces, computed by
each project's own code (loaded from a checkout outside this repository,
never copied here), into sdk/tests/fixtures/recipe_reward_verdicts.jsonl;
sdk/tests/recipe_rewards.rs checks every native rule against them:

- LMM-R1's Sokoban reward (`openrlhf/models/remote_rm/sokoban_verifier.py`):
  its format check, then its `verify_sokoban` worker on the level saved as
  gym-sokoban's room (`.npy`), combined as its `/get_reward` route does;
- ReVisual-R1's length-budget term (`length_reward_l1_max` of
  `examples/reward_function/math.py`, called with its defaults);
- EasyR1's boxed format reward (`format_reward` of
  `examples/reward_function/math.py` after `compute_score`'s clean-up).

Levels come from gym-sokoban's own generator (seeded), responses from a
seeded mix of solutions (breadth-first search), random walks, malformed
answers, long and repetitive lists and long reasoning.

Run in a venv with gym==0.26.2, gym-sokoban, numpy<2, flask, Levenshtein and
mathruler==0.1.0 (docs/rewards.md, "Recipe rewards"):

  python scripts/rewards/recipe_peer_verdicts.py --lmm-r1 lmm-r1/openrlhf/models/remote_rm/sokoban_verifier.py \
      --revisual Revisual-R1/examples/reward_function/math.py --easyr1 EasyR1/examples/reward_function/math.py
"""
import argparse
import collections
import importlib.util
import json
import multiprocessing
import pathlib
import random
import re
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "sdk" / "tests" / "fixtures" / "recipe_reward_verdicts.jsonl"
SYMBOLS = {0: "#", 1: " ", 2: ".", 3: "*", 4: "$", 5: "@"}
MOVES = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def level_text(room):
    return "\n".join("".join(SYMBOLS[int(c)] for c in row) for row in room)


def solve(room, limit=20000):
    """Shortest push sequence (breadth-first over player and box cells)."""
    walls = room == 0
    targets = set(map(tuple, np.argwhere((room == 2) | (room == 3))))
    boxes = frozenset(map(tuple, np.argwhere((room == 3) | (room == 4))))
    start = (tuple(np.argwhere(room == 5)[0]), boxes)
    seen, queue = {start}, collections.deque([(start, [])])
    while queue and len(seen) < limit:
        (player, boxes), path = queue.popleft()
        if boxes and all(b in targets for b in boxes):
            return path
        for name, (dy, dx) in MOVES.items():
            nxt = (player[0] + dy, player[1] + dx)
            if walls[nxt]:
                continue
            new_boxes = boxes
            if nxt in boxes:
                beyond = (nxt[0] + dy, nxt[1] + dx)
                if walls[beyond] or beyond in boxes:
                    continue
                new_boxes = (boxes - {nxt}) | {beyond}
            state = (nxt, new_boxes)
            if state not in seen:
                seen.add(state)
                queue.append((state, path + [name]))
    return None


def sokoban_cases(rng):
    """(level room, response) pairs."""
    from gym_sokoban.envs.room_utils import generate_room

    rooms = []
    for i in range(40):
        random.seed(1000 + i)
        np.random.seed(1000 + i)
        boxes = 1 if i < 28 else 2
        try:
            _, state, _ = generate_room(dim=(7, 7), num_steps=20, num_boxes=boxes)
        except (RuntimeError, RuntimeWarning):
            continue
        rooms.append(state.astype(np.int64))
    # LMM-R1's room quirks: a box that starts on its target, a target with
    # nothing to fill it.
    rooms.append(np.array([[0] * 7, [0, 5, 3, 1, 4, 2, 0], [0, 1, 1, 1, 1, 1, 0], [0] * 7]))
    rooms.append(np.array([[0] * 6, [0, 5, 1, 4, 2, 0], [0, 1, 1, 1, 2, 0], [0] * 6]))
    thoughts = [
        "The box is right of me, the target below it, so I push it down",
        "Plan: walk around the wall then push the box onto the red target",
        "a b c",
        " ".join(["step"] * 250),
    ]
    cases = []
    for room in rooms:
        solution = solve(room)
        lists = []
        if solution:
            lists.append(solution)
            lists.append(solution + ["left", "up"])
            lists.append(solution[:-1])
        for n in (1, 5, 19, 20, 25, 49, 60):
            lists.append([rng.choice(list(MOVES)) for _ in range(n)])
        lists.append(["up"] * 8)
        lists.append(["up", "left"] * 8)
        for acts in lists:
            think = rng.choice(thoughts)
            sep = rng.choice([",", ", ", " , "])
            words = [a.capitalize() if rng.random() < 0.5 else a for a in acts]
            cases.append((room, f"<think>{think}</think><answer>{sep.join(words)}</answer>"))
        cases.append((room, "<think>x</think><answer>Right Left</answer>"))
        cases.append((room, "<think>x</think><answer>R, L</answer>"))
        cases.append((room, "<answer>right</answer>"))
        cases.append((room, "<think>a</think><think>b</think><answer>up</answer>"))
        cases.append((room, "  <think>spaces</think>\n<answer> down , up </answer>\n"))
    return cases


def sokoban_verdicts(verifier, cases):
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (room, response) in enumerate(cases):
            path = f"{tmp}/level_{i}.npy"
            np.save(path, room)
            # `/get_reward`: the response as `get_response_from_query` leaves it.
            text = response.strip()
            format_ok = float(all(verifier.verify_format(text)))
            total, game = 0.0, 0.0
            if format_ok > 0.1:
                q_in, q_out = multiprocessing.Queue(), multiprocessing.Queue()
                q_in.put((i, text, path, ""))
                q_in.put(None)
                verifier.verify_sokoban(q_in, q_out)
                _, game, acts, thinking, _, _ = q_out.get()
                total = game + format_ok * 0.5 + acts + thinking
            out.append({
                "kind": "sokoban",
                "level": level_text(room),
                "response": response,
                "total": total,
                "game": game,
            })
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmm-r1", required=True, help="TideDra/lmm-r1's sokoban_verifier.py")
    ap.add_argument("--revisual", required=True, help="ReVisual-R1's examples/reward_function/math.py")
    ap.add_argument("--easyr1", required=True, help="EasyR1's examples/reward_function/math.py")
    args = ap.parse_args()
    rng = random.Random(16)
    rows = sokoban_verdicts(load(args.lmm_r1, "lmm_r1_sokoban"), sokoban_cases(rng))

    revisual = load(args.revisual, "revisual_math")
    for budget in (100, 4096, 8192):
        for n in sorted({0, 1, budget - 200, budget - 100, budget - 99, budget - 37, budget,
                         budget + 1, budget + 50, budget + 99, budget + 100, budget + 1000}):
            if n < 0:
                continue
            rows.append({"kind": "length", "budget": budget, "tokens": n,
                         "value": revisual.length_reward_l1_max(n, budget)})

    easyr1 = load(args.easyr1, "easyr1_math")
    responses = [
        "<think>sum</think> so \\boxed{3}",
        "< think >sum</ think > the answer is \\boxed{3}.",
        "<think >sum</think >\\boxed{3",
        "  <think>sum</think>\n\n**Answer** \\boxed{\\frac{1}{2}}",
        "<think>sum</think> no box here",
        "\\boxed{3} <think>late</think>",
        "<think>a</think><think>b</think>\\boxed{x}",
        "<think>no end \\boxed{3}",
        "<think>\nmulti\nline\n</think>\n\\boxed{\n4\n}",
        "text <think>x</think>\\boxed{1}",
        "<think>x< /think>\\boxed{1}",
        "<think>x</think>\\boxed {1}",
        "<thinking>x</thinking>\\boxed{1}",
        "<think>x</think>\\boxed{}",
    ]
    for r in responses:
        s = easyr1.compute_score([{"response": r, "ground_truth": "3"}])[0]
        rows.append({"kind": "easyr1-format", "response": r, "format": s["format"]})

    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts = collections.Counter(r["kind"] for r in rows)
    print(f"wrote {len(rows)} verdicts to {OUT.relative_to(ROOT)}: {dict(counts)}")


if __name__ == "__main__":
    main()
