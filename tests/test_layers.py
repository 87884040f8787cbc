"""The import graph of ``sdenet/``: no cycle, at module level or inside functions, and lower
layers never import higher ones (laws/fields → schemes → integrate/loop → nn → train →
commands/cli).

Every module under ``sdenet/`` is parsed with ``ast``; every ``import``/``from … import``
anywhere in it (functions included) is an edge, relative imports resolved. A module importing
the package it lives in (``from . import x`` resolves to ``x`` itself) is not an edge to the
package.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "sdenet"

#: layer of each module (by dotted prefix); a module may import its own layer and those below
LAYERS = [
    ("sdenet.errors", 0),
    ("sdenet.laws", 0),
    ("sdenet.fields", 0),
    ("sdenet.additive", 0),
    ("sdenet.schemes", 1),
    ("sdenet.srk", 1),
    ("sdenet.loop", 2),
    ("sdenet.fast", 2),  # LinearSDEField and fast_integrate, a user-facing wrapper of the loop
    ("sdenet.integrate", 2),
    ("sdenet.extrapolation", 2),
    ("sdenet.linear", 2),
    ("sdenet.weak", 2),
    ("sdenet.nn", 3),
    ("sdenet.models", 3),
    ("sdenet.train", 4),
    ("sdenet.commands", 5),
    ("sdenet.cli", 5),
    ("sdenet.__main__", 5),
]

KNOWN: set[tuple[str, str]] = set()


def _modules():
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _targets(mod, node, is_pkg, mods):
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = mod.split(".") if is_pkg else mod.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in mods else prefix for a in node.names]
    for name in names:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        if name and name != mod and not mod.startswith(name + "."):
            yield name


def import_graph():
    mods = _modules()
    graph = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[mod].update(_targets(mod, node, path.name == "__init__.py", mods))
    return graph


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _layer(mod):
    for prefix, rank in LAYERS:
        if mod == prefix or mod.startswith(prefix + "."):
            return rank
    return None


def test_the_graph_sees_function_level_and_relative_imports():
    g = import_graph()
    assert "sdenet.schemes.base" in g["sdenet.schemes.deterministic"]  # from .base import …
    assert "sdenet.laws" in g["sdenet.schemes.base"]  # from ..laws import …
    assert "sdenet.loop" in g["sdenet.fast"]
    assert "sdenet.nn.models" in g["sdenet.train.safe_io"]  # a function-level import
    assert "sdenet.nn.memory" in g["sdenet.nn.stage"]


def test_known_exceptions_still_exist():
    g = import_graph()
    assert all(b in g[a] for a, b in KNOWN), "a known edge is gone: remove it from KNOWN"


def test_no_import_cycle():
    g = import_graph()
    for a, b in KNOWN:
        g[a].discard(b)
    assert _cycles(g) == []
    assert _cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]  # the check itself finds a cycle


def test_lower_layers_do_not_import_higher_ones():
    g = import_graph()
    bad = [
        f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
        for a in sorted(g)
        for b in sorted(g[a])
        if (a, b) not in KNOWN and _layer(a) is not None and _layer(b) is not None and _layer(b) > _layer(a)
    ]
    assert not bad, "\n".join(bad)
