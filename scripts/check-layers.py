#!/usr/bin/env python3
"""The structure rules of docs/architecture.md ("Layers"), checked on the source text.

1. No import circle between the source files of a crate (a parent module declaring its
   children is not an import).
2. In the coordinator binary (orchestrator/src), a folder uses only the folders below it:
       main.rs -> cmd/ -> coordinator/, fetch/, evaluate/, notify/ -> worker/ -> outdir/ -> npz/ -> job/ -> sys/
   (and the fidshard-core crate under all of them).
3. A file in cmd/ (one verb) never uses another file of cmd/.
4. fidshard-core depends on neither binary's crate, and neither binary's crate on the other.

Imports are read from `crate::` and `super::` paths, `use` groups included; code after
`#[cfg(test)]` and test-only files (`tests.rs`, `*_tests.rs`) are left out: a test may reach
across layers. Exit status 1 and one line per finding when a rule is broken (2 when its own
self-test on a made-up tree fails); `make test` runs
this before cargo. Usage: scripts/check-layers.py [REPO_ROOT]
"""
import re
import sys
from pathlib import Path

# Rank of each top-level folder of orchestrator/src: a file may use only lower ranks (or its own
# folder). main.rs is above everything.
ORCHESTRATOR_LAYERS = ["sys", "job", "npz", "outdir", "worker", "coordinator|fetch|evaluate|notify", "cmd"]
RANK = {name: i for i, group in enumerate(ORCHESTRATOR_LAYERS) for name in group.split("|")}

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{")
TEST_CUT = re.compile(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{")


def module_of(src, f):
    parts = list(f.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "main", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def is_dir_module(f):
    return f.name in ("mod.rs", "main.rs", "lib.rs")


def strip(text):
    """The code of `text` without comments, string and char literals, and inline test modules."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == "r" and re.match(r'r#*"', text[i:]) and not (i and re.match(r"\w", text[i - 1])):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            out.append('""')
            i = n if end < 0 else end + 1 + len(hashes)
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            out.append('""')
            i += 1
        elif c == "'" and re.match(r"'(\\.[^']*|[^\\'])'", text[i:]):
            i += len(re.match(r"'(\\.[^']*|[^\\'])'", text[i:]).group(0))
            out.append("' '")
        else:
            out.append(c)
            i += 1
    code = "".join(out)
    cut = TEST_CUT.search(code)
    return code[: cut.start()] if cut else code


def group_items(text, start):
    """The paths inside the `{...}` that opens at `start` (nested groups flattened)."""
    depth, i, out, prefix, cur = 0, start, [], [], ""
    while i < len(text):
        c = text[i]
        if c == "{":
            depth += 1
            prefix.append(cur.strip().rstrip(":").strip())
            cur = ""
        elif c == "}":
            if cur.strip():
                out.append("::".join(p for p in prefix if p) + "::" + cur.strip())
            depth -= 1
            prefix.pop()
            cur = ""
            if depth == 0:
                break
        elif c == ",":
            if cur.strip():
                out.append("::".join(p for p in prefix if p) + "::" + cur.strip())
            cur = ""
        else:
            cur += c
        i += 1
    return [o.split(" as ")[0].strip(":").strip() for o in out]


def resolve(me, root, rest):
    """Absolute module path of `root::rest` written in module `me`."""
    parts = [p for p in rest.split("::") if p]
    base = [] if root == "crate" else list(me) if root == "self" else list(me[:-1])
    while parts and parts[0] == "super":
        base, parts = base[:-1], parts[1:]
    return tuple(base + parts)


def imports(src, f, mods):
    me, is_dir = module_of(src, f), is_dir_module(f)
    text = strip(f.read_text(errors="replace"))
    paths = [(m.group(1), m.group(2)) for m in PATH.finditer(text)]
    for m in GROUP.finditer(text):
        for item in group_items(text, m.end() - 1):
            item = "" if item == "self" else item
            paths.append((m.group(1), m.group(2) + "::" + item))
    found = set()
    for root, rest in paths:
        target = resolve(me, root, rest)
        # The longest prefix that is a module of this crate is the file imported.
        while target and target not in mods:
            target = target[:-1]
        if not target or target == me:
            continue
        if is_dir and target[:-1] == me:
            continue  # a parent module declaring (or re-exporting) its own child
        found.add(mods[target])
    return found


def circles(edges):
    """Strongly connected groups of two or more files (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

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
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def source_files(src):
    for f in sorted(src.rglob("*.rs")):
        rel = f.relative_to(src).parts
        if f.name == "tests.rs" or f.name.endswith("_tests.rs") or rel[0] == "bin":
            continue  # src/bin/NAME/ is a crate of its own, checked on its own
        yield f


def check_crate(repo, src, problems):
    files = list(source_files(src))
    mods = {module_of(src, f): f for f in files}
    edges = {f: imports(src, f, mods) for f in files}
    for group in circles(edges):
        names = ", ".join(str(f.relative_to(repo)) for f in group)
        problems.append(f"import circle: {names}")
    if src.parent.name != "orchestrator":
        return
    for f, targets in edges.items():
        mine = module_of(src, f)
        for t in targets:
            theirs = module_of(src, t)
            if not mine or not theirs:
                continue  # main.rs may use everything; nothing names main.rs
            a, b = mine[0], theirs[0]
            where = f"{f.relative_to(repo)} uses {t.relative_to(repo)}"
            if a == "cmd" and b == "cmd" and len(mine) > 1 and len(theirs) > 1:
                problems.append(f"verb imports verb: {where}")
            elif a != b and a in RANK and b in RANK and RANK[b] >= RANK[a]:
                problems.append(f"layer {a}/ is not above {b}/: {where}")


def findings(repo):
    """Every broken rule in the checkout at `repo`, one line each."""
    problems = []
    for entry in sorted(repo.glob("*/src")):
        if (entry / "lib.rs").exists() or (entry / "main.rs").exists():
            check_crate(repo, entry, problems)
        for binary in sorted((entry / "bin").glob("*/main.rs")):
            check_crate(repo, binary.parent, problems)
    core_toml = (repo / "core" / "Cargo.toml").read_text()
    if re.search(r"^\s*fidshard(-worker)?\s*=", core_toml, re.M):
        problems.append("core/Cargo.toml depends on a binary's crate: core uses nothing of the rest")
    for crate, other in (("orchestrator", "fidshard-worker"), ("worker", "fidshard")):
        toml = (repo / crate / "Cargo.toml").read_text()
        if re.search(rf"^\s*{other}\s*=", toml, re.M):
            problems.append(f"{crate}/Cargo.toml depends on {other}: the binaries share only fidshard-core")
    return problems


def self_test():
    """The checker finds what it must on a small made-up checkout, so a clean result means
    something: one finding of each kind, and none in a tree that keeps the rules."""
    import tempfile

    files = {
        "core/Cargo.toml": "[dependencies]\n",
        "core/src/lib.rs": "pub mod a;\npub mod b;\n",
        "core/src/a.rs": "use crate::b::B;\n",
        "core/src/b.rs": "use crate::a::A; // a circle\n",
        "worker/Cargo.toml": "[dependencies]\nfidshard-core = {}\n",
        "worker/src/lib.rs": "",
        "orchestrator/Cargo.toml": "[dependencies]\nfidshard-core = {}\n",
        "orchestrator/src/main.rs": "mod cmd;\nmod sys;\nmod outdir;\n",
        "orchestrator/src/cmd/mod.rs": "pub mod run;\npub mod status;\n",
        "orchestrator/src/cmd/run.rs": "use crate::outdir::Out;\n",
        "orchestrator/src/cmd/status.rs": "use super::run::helper;\n",
        "orchestrator/src/outdir/mod.rs": "use crate::sys::Time;\n",
        "orchestrator/src/sys/mod.rs": "use crate::outdir::{Out, Lock};\n",
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        got = findings(root)
        expect = [
            "import circle: core/src/a.rs, core/src/b.rs",
            "import circle: orchestrator/src/outdir/mod.rs, orchestrator/src/sys/mod.rs",
            "verb imports verb: orchestrator/src/cmd/status.rs uses orchestrator/src/cmd/run.rs",
            "layer sys/ is not above outdir/: orchestrator/src/sys/mod.rs uses orchestrator/src/outdir/mod.rs",
        ]
        missing = [e for e in expect if e not in got]
        (root / "core/src/b.rs").write_text("pub struct B;\n")
        (root / "orchestrator/src/sys/mod.rs").write_text("pub struct Time;\n")
        (root / "orchestrator/src/cmd/status.rs").write_text("use crate::outdir::Out;\n")
        left = findings(root)
    if missing or left:
        print(f"check-layers: self-test failed: missing {missing}, unexpected {left}")
        sys.exit(2)


def main():
    self_test()
    repo = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    problems = findings(repo)
    for p in problems:
        print(f"check-layers: {p}")
    if problems:
        print(f"check-layers: {len(problems)} finding(s); the rules are in docs/architecture.md")
        sys.exit(1)
    print("check-layers: no import circle, layers and verbs kept")


if __name__ == "__main__":
    main()
