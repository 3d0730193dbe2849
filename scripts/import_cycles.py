#!/usr/bin/env python3
"""Lists import cycles between the files of a Rust crate's `src` (default dogpile-core/src).

A file imports another when its code (not its comments) names a path into it:
`crate::a::b` (the file of module `a::b`, or of `a` when `b` is an item), `super::x`,
or, in a `mod.rs`/`lib.rs`, `pub use child::...` of its own child. Declaring a child
module (`mod child;`) is not an import. Exits 1 when there is a cycle.
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "dogpile-core/src"


def module_of(path):
    rel = os.path.relpath(path, root)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib"):
        rel = rel[:-1]
    return rel


files = {}
for dirpath, _, names in os.walk(root):
    for name in names:
        if name.endswith(".rs"):
            path = os.path.join(dirpath, name)
            files[tuple(module_of(path))] = path
# `#[path = ...]` modules: `__private` lives in private/.
if ("private",) in files:
    files[("__private",)] = files.pop(("private",))
    for key in [k for k in files if k[:1] == ("private",)]:
        files[("__private",) + key[1:]] = files.pop(key)


def resolve(segments):
    """The file holding the deepest module named by `segments`."""
    for n in range(len(segments), -1, -1):
        if tuple(segments[:n]) in files:
            return files[tuple(segments[:n])]
    return None


def code_of(path):
    text = open(path).read()
    text = re.sub(r"//[^\n]*", "", text)
    # Unit tests may reach anywhere; they are not part of the module graph.
    text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
    return text


edges = {}
for module, path in files.items():
    code = code_of(path)
    targets = set()
    is_dir_module = os.path.basename(path) in ("mod.rs", "lib.rs")
    here = list(module) if is_dir_module else list(module[:-1])
    for match in re.finditer(r"\b(crate|super)((?:::\w+)+)", code):
        segs = match.group(2).split("::")[1:]
        if match.group(1) == "crate":
            full = segs
        else:
            full = (list(module[:-1]) if is_dir_module else list(module[:-2] if len(module) > 1 else [])) + segs
            full = (here[:-1] if not is_dir_module else here[:-1]) + segs if False else (list(module)[:-1] + segs)
        target = resolve(full)
        if target and target != path:
            targets.add(target)
    # `use` of a child or sibling module by a relative path (`use child::X`, `pub use child::X`).
    for match in re.finditer(r"\buse\s+(?:self::)?(\w+)::", code):
        first = match.group(1)
        if first in ("crate", "super", "std", "core", "alloc", "self"):
            continue
        target = resolve(here + [first]) if tuple(here + [first]) in files else None
        if target and target != path:
            targets.add(target)
    edges[path] = targets

# Find cycles (Tarjan's strongly connected components).
index, low, stack, on_stack, result = {}, {}, [], set(), []
counter = [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        component = []
        while True:
            w = stack.pop()
            on_stack.discard(w)
            component.append(w)
            if w == v:
                break
        if len(component) > 1:
            result.append(component)


sys.setrecursionlimit(10000)
for v in list(edges):
    if v not in index:
        visit(v)

pairs = sorted(
    (os.path.relpath(a, root), os.path.relpath(b, root))
    for a in edges
    for b in edges[a]
    if a in edges.get(b, ()) and a < b
)
for a, b in pairs:
    print(f"mutual: {a} <-> {b}")
for component in result:
    print("cycle:", " ".join(sorted(os.path.relpath(p, root) for p in component)))
if not result:
    print(f"no import cycles among {len(files)} files")
sys.exit(1 if result else 0)
