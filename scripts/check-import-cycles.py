#!/usr/bin/env python3
"""Import cycles between the modules of Rust crates, read from the source text.

    scripts/check-import-cycles.py host/src host/model/src host/plugin-host/src

A module A imports B when a path in A's file, outside its `#[cfg(test)]`
module, names B or an item inside B: `crate::b::x`, `super::b`, `self::b`, or
a bare `b::x` for a child module b (`pub use b::X` in a parent is an import
of the child; `mod b;` alone is not). A path to an item of the crate root
(`crate::Item`) counts as an import of the root. Prints each cycle with the
edges that form it (`-v`: every module's imports); exits 1 when there is one.
Macro-generated paths are not seen.
"""
import os
import re
import sys


def modules(root):
    """Module path (tuple) -> file, for one crate's src/ folder (main.rs left out)."""
    mods = {}
    for d, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(d, f), root)[:-3].split(os.sep)
            if rel == ["main"]:
                continue
            if rel[-1] in ("mod", "lib"):
                rel = rel[:-1]
            mods[tuple(rel)] = os.path.join(d, f)
    return mods


def without_tests(text):
    m = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    return text[: m.start()] if m else text


def expand_use(body):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    body = body.strip()
    m = re.match(r"^(.*?)::\{(.*)\}$", body, re.S)
    if not m:
        return [body]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [prefix + "::" + q for p in parts if p.strip() for q in expand_use(p.strip())]


def resolve(mods, cur, segs):
    """The module a path from module `cur` lands in (its longest module prefix)."""
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    elif segs[0] == "super":
        base, rest = cur, segs
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    elif segs[0] == "self":
        base, rest = cur, segs[1:]
    elif cur + (segs[0],) in mods:
        base, rest = cur, segs
    else:
        return None
    path = base
    for s in rest:
        if path + (s,) not in mods:
            break
        path += (s,)
    return path


def imports(mods):
    edges = {m: set() for m in mods}
    for m, f in mods.items():
        with open(f) as fh:
            text = re.sub(r"//.*", "", without_tests(fh.read()))
        paths = []
        for u in re.finditer(r"\buse\s+([^;]+);", text):
            paths += expand_use(u.group(1))
        paths += re.findall(r"\b((?:crate|super|self)(?:::\w+)+)", text)
        for p in paths:
            segs = [s.split(" as ")[0].strip() for s in p.split("::") if s.strip()]
            target = resolve(mods, m, segs) if segs else None
            if target is not None and target != m:
                edges[m].add(target)
    return edges


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, on, stack, out, n = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def main(args):
    verbose = "-v" in args
    roots = [a for a in args if a != "-v"]
    if not roots:
        sys.exit(__doc__)
    found = 0
    for root in roots:
        mods = modules(root)
        edges = imports(mods)
        name = lambda m: "::".join(m) or "crate"
        if verbose:
            for m in sorted(edges):
                print(f"{root}: {name(m)} -> {', '.join(sorted(name(t) for t in edges[m]))}")
        comps = cycles(edges)
        for comp in comps:
            print(f"{root}: cycle: {' <-> '.join(sorted(name(m) for m in comp))}")
            for a in comp:
                for b in comp:
                    if b in edges[a]:
                        print(f"    {name(a)} -> {name(b)}")
        n_edges = sum(len(e) for e in edges.values())
        print(f"{root}: {len(mods)} modules, {n_edges} imports, {len(comps)} cycle(s)")
        found += len(comps)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
