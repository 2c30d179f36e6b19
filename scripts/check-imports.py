#!/usr/bin/env python3
"""Finds import circles between the files of each crate.

A file depends on another when its code (tests excluded) names a path into it:
`use crate::a::b::X`, `crate::a::f()`, `super::X`, `self::sub::Y`, or, in a module with
child modules, `sub::Y`. `mod x;` declarations are structure, not imports, and so are
re-exports (`pub use`, `pub(crate) use`): a module's facade. The crate root (lib.rs,
main.rs) is all facade; an item reached through a facade (`crate::Result`) is an edge to
the file holding the facade. Each file is a node (`src/a.rs`, `src/a/mod.rs`); a path is
resolved to the deepest file it reaches. A circle is a strongly connected component of
more than one file, or a file that reaches itself.

Usage: scripts/check-imports.py [crate dir ...]   (default: every crates/*)
Exit status 1 when any crate has a circle; each one is printed with its files.
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def strip(src: str) -> str:
    """Removes comments, string and char literals (kept as empty quotes)."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', src[i : i + 10]) and not re.match(r"\w", src[i - 1 : i] or " "):
            m = re.match(r'r(#*)"', src[i:])
            end = src.find('"' + m.group(1), i + len(m.group(0)))
            out.append('""')
            i = n if end < 0 else end + 1 + len(m.group(1))
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append('""')
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x..'", src[i : i + 12]):
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\x..|\\.|[^\\'])'", src[i:])
            out.append("' '")
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def drop_test_modules(src: str) -> str:
    """Removes `#[cfg(test)] mod name { ... }` blocks."""
    pat = re.compile(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{")
    while True:
        m = pat.search(src)
        if not m:
            return src
        depth, j = 1, m.end()
        while j < len(src) and depth:
            depth += {"{": 1, "}": -1}.get(src[j], 0)
            j += 1
        src = src[: m.start()] + src[j:]


def use_paths(src: str):
    """Every path a file names, as lists of segments (group imports expanded); re-exports
    are left out."""
    paths = []
    for m in re.finditer(r"(\bpub(?:\([^)]*\))?\s+)?\buse\s+([^;]+);", src):
        if m.group(1):
            continue
        paths.extend(expand(re.sub(r"\s+", "", m.group(2))))
    # Paths in code: crate::a::b, super::a, self::a (outside `use`).
    body = re.sub(r"\buse\s+[^;]+;", "", src)
    for m in re.finditer(r"\b((?:crate|super|self)(?:::(?:super|\w+))+)", body):
        paths.append(m.group(1).split("::"))
    return paths


def expand(tree: str):
    """`a::{b, c::{d, e}}` -> [[a, b], [a, c, d], [a, c, e]]."""
    tree = re.sub(r"\bas\w+", "", tree.replace(" as ", " as"))
    i = tree.find("{")
    if i < 0:
        return [tree.split("::")]
    prefix = tree[: i].rstrip(":").split("::") if i else []
    inner = tree[i + 1 : tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for c in inner:
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(c, 0)
        cur += c
    parts.append(cur)
    out = []
    for p in filter(None, parts):
        for sub in expand(p):
            out.append(prefix + [s for s in sub if s])
    return out


def module_of(src_dir: pathlib.Path, path: pathlib.Path):
    """Module segments of a file under src/ (lib.rs / main.rs: [])."""
    rel = path.relative_to(src_dir).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod" or (len(parts) == 1 and parts[0] in ("lib", "main")):
        parts = parts[:-1]
    return parts


def file_of(src_dir: pathlib.Path, modules: dict, segs):
    """The deepest file the module path `segs` reaches."""
    for k in range(len(segs), -1, -1):
        f = modules.get(tuple(segs[:k]))
        if f is not None:
            return f
    return None


def crate_graph(crate: pathlib.Path):
    src_dir = crate / "src"
    files = [p for p in src_dir.rglob("*.rs")]
    # Only files that are modules of the library or binary (not src/bin helpers).
    modules = {tuple(module_of(src_dir, f)): f for f in files}
    graph = {f: set() for f in files}
    for f in files:
        me = module_of(src_dir, f)
        code = drop_test_modules(strip(f.read_text()))
        is_root = not me
        children = set(re.findall(r"\bmod\s+(\w+)\s*;", code))
        paths = use_paths(code)
        if children and not is_root:
            body = re.sub(r"\buse\s+[^;]+;", "", code)
            for m in re.finditer(r"(?<![\w:])((?:%s)(?:::\w+)+)" % "|".join(children), body):
                paths.append(m.group(1).split("::"))
        for segs in paths:
            if not segs:
                continue
            if is_root:
                continue
            if segs[0] in children:
                target = me + segs
            elif segs[0] == "crate":
                target = segs[1:]
            elif segs[0] in ("super", "self"):
                base = list(me)
                k = 0
                while k < len(segs) and segs[k] in ("super", "self"):
                    if segs[k] == "super":
                        base = base[:-1]
                    k += 1
                target = base + segs[k:]
            else:
                continue
            t = file_of(src_dir, modules, target)
            if t is not None and t != f:
                graph[f].add(t)
    return graph


def circles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main(argv):
    crates = [pathlib.Path(a) for a in argv] or sorted((ROOT / "crates").iterdir())
    bad = 0
    for crate in crates:
        if not (crate / "src").is_dir():
            continue
        graph = crate_graph(crate)
        for comp in circles(graph):
            bad += 1
            names = [str(p.relative_to(crate / "src")) for p in comp]
            print(f"{crate.name}: import circle among {', '.join(names)}")
            for p in comp:
                deps = sorted(str(d.relative_to(crate / "src")) for d in graph[p] if d in comp)
                print(f"    {p.relative_to(crate / 'src')} -> {', '.join(deps)}")
    if bad:
        print(f"{bad} import circle(s)")
        return 1
    print(f"no import circles in {len([c for c in crates if (c / 'src').is_dir()])} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
