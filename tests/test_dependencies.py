"""The dependency rules of btsys, checked by parsing every import (function-level ones too).

Layers, top to bottom (a module may import its own layer and the layers below, never above):

* entry points: ``btsys/__main__.py``, ``btsys.load`` (``loader``), ``help``, ``hydra_outputs``,
  ``jobs/*.py``;
* the stage layer: ``pipeline`` (the stage graph) and ``stages/`` (one module per stage);
* the pure packages: ``data``, ``bars``, ``features``, ``signals``, ``backtest``, ``report``,
  ``universe`` -- importing each other without a cycle, and with the rules below;
* the ground: ``config``, ``errors``, ``redact``, ``logs``, ``failpoint``, ``storage``, ``spark``.

``python tests/test_dependencies.py`` prints the package graph these tests check (CONTRIBUTING.md).
"""

from __future__ import annotations

import ast
import os
from collections import defaultdict

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LAYERS = {
    "entry": {"btsys", "__main__", "loader", "help", "hydra_outputs", "jobs"},
    "stage": {"pipeline", "stages"},
    "pure": {"data", "bars", "features", "signals", "backtest", "report", "universe"},
    "ground": {"config", "errors", "redact", "logs", "failpoint", "storage", "spark"},
}
RANK = {"entry": 3, "stage": 2, "pure": 1, "ground": 0}

#: Edges between pure packages that the design forbids (docs/DESIGN.md, "Dependency rules").
FORBIDDEN = {
    ("backtest", "report"): "the engine knows no tracking store",
    ("backtest", "data"): "the engine takes arrays, not files",
    ("backtest", "storage"): "the engine takes arrays, not files",
    ("backtest", "spark"): "the engine takes arrays, not Spark jobs",
    ("features", "signals"): "features know no strategy",
    ("features", "backtest"): "features know no backtest",
    ("bars", "backtest"): "bars know no backtest",
    ("bars", "signals"): "bars know no strategy",
    ("bars", "features"): "bars know no features",
    ("data", "bars"): "the lake knows no bars",
}


def _modules() -> dict[str, str]:
    """``{module name: file}`` of the btsys package and of ``jobs/`` (as ``jobs.<name>``)."""
    out = {}
    for base in ("btsys", "jobs"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, base)):
            for f in files:
                if not f.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(dirpath, f)
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The btsys module ``name`` stands for (a module, or the package whose attribute it is)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """The btsys modules ``module`` imports, at the top or inside functions."""
    tree = ast.parse(open(MODULES[module], encoding="utf-8").read())
    is_pkg = MODULES[module].endswith("__init__.py")
    out = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
                base = ".".join(parts + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" for a in node.names]
        for n in names:
            if n.split(".")[0] == "btsys":
                target = _resolve(n)
                if target and target != module:
                    out.add(target)
    return out


def unit(module: str) -> str:
    """The package or top-level module a module belongs to (``btsys.stages.bars`` -> ``stages``)."""
    parts = module.split(".")
    if parts[0] == "jobs":
        return "jobs"
    return parts[1] if len(parts) > 1 else "btsys"


def layer(u: str) -> str:
    for name, units in LAYERS.items():
        if u in units:
            return name
    raise AssertionError(f"{u} is in no layer: add it to LAYERS in tests/test_dependencies.py")


def package_graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = defaultdict(set)
    for m in MODULES:
        for t in imports(m):
            if unit(t) != unit(m):
                g[unit(m)].add(unit(t))
    return g


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of nodes that import each other, directly or through others (mutual reachability)."""

    def reach(v: str) -> set[str]:
        seen, todo = set(), [v]
        while todo:
            for w in graph.get(todo.pop(), ()):
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return seen

    r = {v: reach(v) for v in graph}
    groups = {tuple(sorted({v} | {w for w in r[v] if v in r.get(w, ())})) for v in graph if v in r[v]}
    return sorted(list(g) for g in groups)


def test_every_unit_has_a_layer():
    for m in MODULES:
        layer(unit(m))


def test_nothing_imports_a_layer_above_its_own():
    bad = [
        f"{m} ({layer(unit(m))}) imports {t} ({layer(unit(t))})"
        for m in sorted(MODULES)
        for t in sorted(imports(m))
        if RANK[layer(unit(t))] > RANK[layer(unit(m))]
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("edge", sorted(FORBIDDEN))
def test_forbidden_edges_between_packages(edge):
    src, dst = edge
    found = [
        f"{m} imports {t}" for m in sorted(MODULES) if unit(m) == src for t in imports(m) if unit(t) == dst
    ]
    assert not found, f"{src} must not import {dst} ({FORBIDDEN[edge]}): " + "; ".join(found)


def test_no_import_cycles_between_packages_or_modules():
    assert _cycles(package_graph()) == []
    modules = {m: imports(m) for m in MODULES}
    # a package's __init__ re-exporting its modules is not a cycle of the code
    assert _cycles({m: {t for t in ts if not m.startswith(t + ".")} for m, ts in modules.items()}) == []


def test_only_the_stage_layer_drives_spark():
    """Spark jobs (``sparkContext``) are started by the stage modules; the pure packages provide
    the functions their tasks run."""
    bad = []
    for m, path in MODULES.items():
        if layer(unit(m)) in ("stage", "entry") or unit(m) == "spark":
            continue
        tree = ast.parse(open(path, encoding="utf-8").read())
        if any(isinstance(n, ast.Attribute) and n.attr == "sparkContext" for n in ast.walk(tree)):
            bad.append(m)
    assert not bad, f"modules outside btsys.stages drive Spark: {bad}"


def test_the_checker_sees_real_edges():
    """The parser finds imports of every form (absolute, relative, inside functions)."""
    assert "btsys.stages.cache" in imports("btsys.stages.bars")
    assert "btsys.bars.lake" in imports("btsys.stages.bars")
    assert "btsys.pipeline" in imports("btsys.__main__")  # imported inside main()
    assert "btsys.backtest.metrics" in imports("btsys.report.stats")
    graph = package_graph()
    assert {"stages", "storage"} <= graph["pipeline"] and "report" in graph["stages"]


if __name__ == "__main__":
    for u, deps in sorted(package_graph().items(), key=lambda kv: (-RANK[layer(kv[0])], kv[0])):
        print(f"{layer(u):6s} {u:14s} -> {', '.join(sorted(deps))}")
