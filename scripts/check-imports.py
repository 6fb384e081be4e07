#!/usr/bin/env python3
"""Checks the import graph between the files of each workspace crate.

Every `crate::…` and `super::…` path outside comments and test modules is an
arrow from the file that names it to the file of the module it names. The
check fails (exit 1) when the arrows of a crate close a circle, printing it.
A crate root (lib.rs, main.rs) may declare and re-export its modules; a module
that names the root (`crate::Item` defined or re-exported there) is an arrow
back to it, so the roots stay facades.

Between crates, Cargo itself refuses circles; this script also checks that
every crate's `[dependencies]` point down the layers of ARCHITECTURE.md
(`LAYERS` below), and that the dev-only test kit is never a normal
dependency.

Usage: scripts/check-imports.py [CRATE_DIR ...] (default: every crate of the
workspace with a src/ folder).
"""

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# The workspace's crates, lowest layer first: a crate may depend on crates of
# lower layers only (ARCHITECTURE.md, "Crates and layers").
LAYERS = [
    ["palisade-host-api"],
    ["palisade-sdk", "palisade-backtest"],
    ["palisade-run"],
    ["palisade-sandbox", "palisade-live"],
    ["palisade-study", "palisade-testkit", "palisade-deployment"],
    ["palisade-document"],
    ["palisade-service"],
    ["palisade"],
]
DEV_ONLY = {"palisade-testkit"}


def layering():
    """Problems with the crates' dependencies, as text lines."""
    level = {name: i for i, names in enumerate(LAYERS) for name in names}
    problems = []
    for toml in sorted(ROOT.glob("*/Cargo.toml")) + sorted(ROOT.glob("runtime/*/Cargo.toml")):
        manifest = tomllib.loads(toml.read_text())
        name = manifest.get("package", {}).get("name")
        if name is None:
            continue
        deps = manifest.get("dependencies", {})
        for dep in deps:
            if dep in DEV_ONLY:
                problems.append(f"{name} depends on {dep}, which is for tests and benches only")
            if name in level and dep in level and level[dep] >= level[name]:
                problems.append(f"{name} (layer {level[name]}) depends on {dep} (layer {level[dep]}): an arrow up or across")
        if name.startswith("palisade") and name in ("palisade-tests", "palisade-benches"):
            continue
        if name.startswith("palisade") and name not in level:
            problems.append(f"{name} is not in a layer of scripts/check-imports.py")
    return problems


def crates(args):
    if args:
        return [Path(a).resolve() for a in args]
    found = []
    for toml in sorted(ROOT.glob("*/Cargo.toml")) + sorted(ROOT.glob("runtime/*/Cargo.toml")):
        if (toml.parent / "src").is_dir():
            found.append(toml.parent)
    return found


def module_of(src: Path, file: Path):
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts in (["lib"], ["main"]):
        return ()
    if parts[-1] == "mod":
        parts = parts[:-1]
    return tuple(parts)


def strip(text: str) -> str:
    """The code without comments, string literals and `#[cfg(test)]` items."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#+".*?"#+', '""', text, flags=re.S)
    text = re.sub(r'"(\\.|[^"\\])*"', '""', text, flags=re.S)
    lines = [re.sub(r"//.*", "", line) for line in text.split("\n")]
    out, skip_depth, depth, pending = [], None, 0, False
    for line in lines:
        if skip_depth is None and re.match(r"\s*#\[cfg\(test\)\]", line):
            pending = True
            continue
        opens, closes = line.count("{"), line.count("}")
        if pending and skip_depth is None:
            if re.match(r"\s*(pub(\(crate\))?\s+)?(mod|fn|impl|use)\b", line):
                if line.rstrip().endswith(";"):
                    pending = False
                    continue
                if opens:
                    skip_depth = depth
                    depth += opens - closes
                    pending = False
                    if depth <= skip_depth:
                        skip_depth = None
                    continue
        if skip_depth is not None:
            depth += opens - closes
            if depth <= skip_depth:
                skip_depth = None
            continue
        depth += opens - closes
        out.append(line)
    return "\n".join(out)


def use_paths(code: str):
    """Every path rooted at `crate` or `super`, with `use` groups expanded."""
    paths = []
    for m in re.finditer(r"\buse\s+((?:crate|super)(?:::\w+)*)::\{([^;]*)\}\s*;", code, flags=re.S):
        base = m.group(1)
        for item in re.split(r",(?![^{]*\})", m.group(2)):
            name = item.strip().split("::")[0].split(" as ")[0].strip().strip("{")
            if name and name != "self":
                paths.append(f"{base}::{name}")
            elif name == "self":
                paths.append(base)
    for m in re.finditer(r"(?<!\$)\b((?:crate|super)(?:::\w+)+)", code):
        paths.append(m.group(1))
    return paths


def resolve(path: str, here, modules):
    parts = path.split("::")
    if parts[0] == "crate":
        base, rest = (), parts[1:]
    else:
        base = here
        while parts and parts[0] == "super":
            base = base[:-1]
            parts = parts[1:]
        rest = parts
    # The longest prefix that is a module file.
    for n in range(len(rest), -1, -1):
        cand = base + tuple(rest[:n])
        if cand in modules:
            return cand
    return None


def cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def main(argv):
    failed = False
    checked = 0
    for crate in crates(argv[1:]):
        src = crate / "src"
        files = [f for f in src.rglob("*.rs") if "bin" not in f.relative_to(src).parts]
        modules = {module_of(src, f): f for f in files}
        graph = {}
        for mod, file in modules.items():
            code = strip(file.read_text())
            for path in use_paths(code):
                target = resolve(path, mod, modules)
                if target is not None and target != mod:
                    graph.setdefault(mod, set()).add(target)
        found = cycle(graph)
        checked += 1
        if found:
            failed = True
            names = [str(modules[m].relative_to(ROOT)) for m in found]
            print(f"{crate.relative_to(ROOT)}: import circle: {' -> '.join(names)}")
    for problem in layering():
        failed = True
        print(f"crate layers: {problem}")
    if not failed:
        print(f"import graph: no circle in {checked} crates; every crate depends only on lower layers")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
