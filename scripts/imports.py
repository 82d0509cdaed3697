#!/usr/bin/env python3
"""Import graph of src/: which file names which module, and the loops between folders.

Usage: python3 scripts/imports.py [--edges] [--modules]
Exits 1 when a strongly connected component of the file graph spans more than one top-level
module (a folder under src/, or a file directly in src/), or when a file of src/ (binaries
included) is longer than 800 lines. A loop inside one folder is allowed.
Unit-test modules (`#[cfg(test)] mod tests` blocks and files named *tests.rs) are ignored:
tests may look at anything.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_files():
    files = {}
    for dirpath, _, names in os.walk(ROOT):
        rel = os.path.relpath(dirpath, ROOT)
        if rel.startswith("bin"):
            continue
        for n in names:
            if not n.endswith(".rs") or n.endswith("tests.rs"):
                continue
            parts = [] if rel == "." else rel.split(os.sep)
            stem = n[:-3]
            if stem not in ("mod", "lib"):
                parts = parts + [stem]
            files[tuple(parts)] = os.path.normpath(os.path.join(dirpath, n))
    return files


def strip_tests(src):
    # Drop `#[cfg(test)] mod x { ... }` blocks by brace matching.
    out = []
    i = 0
    pat = re.compile(r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod\s+\w+\s*\{")
    while True:
        m = pat.search(src, i)
        if not m:
            out.append(src[i:])
            break
        out.append(src[i : m.start()])
        depth = 1
        j = m.end()
        while j < len(src) and depth:
            if src[j] == "{":
                depth += 1
            elif src[j] == "}":
                depth -= 1
            j += 1
        i = j
    return "".join(out)


def strip_comments(src):
    src = re.sub(r"//[^\n]*", "", src)
    return re.sub(r"/\*.*?\*/", "", src, flags=re.S)


def expand_use(tree):
    """`a::{b, c::{d}}` -> ['a::b', 'a::c::d']"""
    tree = tree.strip()
    m = re.match(r"^(.*?)::\{(.*)\}$", tree, re.S)
    if not m:
        return [tree]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    res = []
    for p in parts:
        p = p.strip()
        if not p:
            continue
        for e in expand_use(p):
            res.append(prefix + "::" + e if e != "self" else prefix)
    return res


def resolve(path, here, files):
    segs = [s.split(" as ")[0].strip() for s in path.split("::")]
    if segs[0] == "crate":
        base = []
        segs = segs[1:]
    elif segs[0] in ("super", "self"):
        # module of this file
        base = list(here)
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
    else:
        return None
    full = base + segs
    for k in range(len(full), 0, -1):
        if tuple(full[:k]) in files:
            return tuple(full[:k])
    return None


def graph():
    files = module_files()
    edges = {}
    for mod, path in files.items():
        src = strip_comments(strip_tests(open(path).read()))
        targets = set()
        for m in re.finditer(r"\buse\s+((?:crate|super|self)::[^;]+);", src):
            for p in expand_use(m.group(1)):
                t = resolve(p, mod, files)
                if t is not None:
                    targets.add(t)
        for m in re.finditer(r"\b((?:crate|super)(?:::[A-Za-z_][A-Za-z0-9_]*)+)", src):
            t = resolve(m.group(1), mod, files)
            if t is not None:
                targets.add(t)
        # Paths relative to this module: `child::Item` names a child module.
        for child in {k[len(mod)] for k in files if len(k) == len(mod) + 1 and k[: len(mod)] == mod}:
            if re.search(r"(?<![:\w])%s::" % re.escape(child), src):
                targets.add(mod + (child,))
        targets.discard(mod)
        # a file importing its own submodule is not an edge upward
        edges[mod] = targets
    return files, edges


def sccs(edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
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
            out.append(comp)

    for v in edges:
        if v not in index:
            strong(v)
    return out


def top(mod):
    return mod[0] if mod else "lib"


def main():
    files, edges = graph()
    name = lambda m: "::".join(m) or "lib"
    if "--edges" in sys.argv:
        for m in sorted(edges):
            print(name(m), "->", ", ".join(sorted(name(t) for t in edges[m] if top(t) != top(m))))
    bad = 0
    for comp in sccs(edges):
        if len({top(m) for m in comp}) > 1 and len(comp) > 1:
            bad += 1
            print("loop across folders (%d files): %s" % (len(comp), ", ".join(sorted(name(m) for m in comp))))
    for dirpath, _, names in os.walk(ROOT):
        for f in names:
            p = os.path.join(dirpath, f)
            n = sum(1 for _ in open(p)) if f.endswith(".rs") else 0
            if n > 800:
                bad += 1
                print("over 800 lines: %s (%d)" % (os.path.relpath(p, os.path.join(ROOT, "..")), n))
    if bad:
        sys.exit(1)
    print("no import loop across folders, no file over 800 lines")


main()
