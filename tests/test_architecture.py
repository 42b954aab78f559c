"""The house rules of the code base (docs/architecture.md), checked on the import graph drawn from the source."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gentok", "recsys")
# Where command lines may be parsed: entry points and scripts, never library modules.
ARGPARSE_HOMES = ("gentok.cli", "recsys.cli")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules imported anywhere in `path` (top level or inside functions), resolved to modules."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(p, m, known) for m, p in mods.items()}


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_import_graph_has_no_cycles():
    # a package's __init__ re-exporting its modules is not a cycle with them: drop edges from a module to its parents
    g = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph().items()}
    assert _cycles(g) == []


def test_gentok_never_imports_recsys():
    bad = {m: sorted(t for t in ts if t.startswith("recsys")) for m, ts in graph().items() if m.startswith("gentok")}
    assert {m: ts for m, ts in bad.items() if ts} == {}


def test_layers_point_down():
    """Generators never import sampling algorithms; the quantizer core and shared layers import no tokenizer or
    generator; the library's core never imports the `gentok.load` front door (`gentok.hub`), which is for users,
    entry points and engines."""
    g = graph()
    rules = [("gentok.generators", "gentok.sampling"),
             ("gentok.quantizers", "gentok.tokenizers"), ("gentok.quantizers", "gentok.generators"),
             ("gentok.nn", "gentok.tokenizers"), ("gentok.nn", "gentok.generators")]
    bad = [(m, t) for m, ts in g.items() for t in ts for lo, hi in rules
           if (m == lo or m.startswith(lo + ".")) and (t == hi or t.startswith(hi + "."))]
    core = ("gentok.checkpoint", "gentok.files", "gentok.pretrained", "gentok.quantizers", "gentok.nn",
            "gentok.tokenizers", "gentok.generators", "gentok.sampling", "gentok.data", "gentok.losses",
            "gentok.metrics", "gentok.training")
    bad += [(m, "gentok.hub") for m, ts in g.items() if "gentok.hub" in ts and m.startswith(core)]
    assert bad == []


def test_no_library_module_parses_command_lines():
    bad = []
    for m, path in _modules().items():
        if m.startswith(ARGPARSE_HOMES):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(n == "argparse" or n.startswith("argparse.") for n in names):
                bad.append(m)
    assert sorted(set(bad)) == []


def test_long_files_say_why():
    """A module over ~400 lines opens with a comment (or docstring line) saying why it is one file."""
    bad = []
    for m, path in _modules().items():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_LINES and "one file because" not in "\n".join(lines[:30]).lower():
            bad.append((m, len(lines)))
    assert bad == []


def test_one_atomic_writer():
    """`os.replace` (the commit step of an atomic write) appears only in gentok/files.py."""
    bad = [m for m, path in _modules().items() if m != "gentok.files" and "os.replace(" in path.read_text()]
    assert bad == []


def test_one_registry():
    """One decorator registers every model type; no second registry of classes."""
    bad = [m for m, path in _modules().items() if "def register_" in path.read_text()]
    assert bad == []
