"""The library's layering, read from the source with ``ast`` (nothing imported): no import cycle between the
packages of ``mdfnet/`` (``mdfnet.X.Y…`` counts as package ``mdfnet.X``; module-level and function-level imports
alike), and no module of ``mdfnet/`` imports kfp (the KFP components in ``components/`` wrap the library)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "mdfnet"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    """Dotted name → file of every module and package of ``mdfnet/``."""
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """Every module that ``name`` imports anywhere in its file (``from P import x``: ``P.x`` when that is a
    module, else ``P``; relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base


def _package(module: str) -> str:
    """``mdfnet.X.Y…`` → ``mdfnet.X``; ``mdfnet.X`` and ``mdfnet`` stay as they are."""
    return ".".join(module.split(".")[:2])


def package_graph() -> dict[str, set[str]]:
    """Package → the packages of ``mdfnet`` it imports (itself left out)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(_package(name), set())
        for target in _imports(name, path, set(modules)):
            if target == "mdfnet" or target.startswith("mdfnet."):
                edges.add(_package(target))
    for pkg, edges in graph.items():
        edges.discard(pkg)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, …, a]`` (depth-first, sorted order: reproducible), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_names_a_cycle_and_accepts_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "mdfnet"
    (pkg / "low").mkdir(parents=True)
    (pkg / "high").mkdir()
    for f in ("__init__.py", "low/__init__.py", "high/__init__.py"):
        (pkg / f).write_text("")
    (pkg / "low" / "a.py").write_text("def f():\n    from mdfnet.high import b\n")
    (pkg / "high" / "b.py").write_text("from ..low import a\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", pkg)
    graph = package_graph()
    assert graph["mdfnet.low"] == {"mdfnet.high"} and graph["mdfnet.high"] == {"mdfnet.low"}
    assert find_cycle(graph) == ["mdfnet.high", "mdfnet.low", "mdfnet.high"]


def test_no_package_level_import_cycle_in_mdfnet():
    graph = package_graph()
    assert {"mdfnet.pipeline", "mdfnet.report", "mdfnet.model"} <= set(graph)  # the scan found the packages
    cycle = find_cycle(graph)
    assert cycle is None, f"package-level import cycle in mdfnet/: {' -> '.join(cycle)}"


def test_mdfnet_never_imports_kfp():
    modules = _modules()
    offenders = sorted(name for name, path in modules.items()
                       if any(t == "kfp" or t.startswith("kfp.") for t in _imports(name, path, set(modules))))
    assert not offenders, f"modules of mdfnet/ that import kfp: {offenders}"


def test_cells_sit_below_the_pipeline_and_the_report_and_import_light():
    """:mod:`mdfnet.cells` ranks for both the compare step and the report: it imports neither, nor torch/MLflow."""
    import subprocess
    import sys

    assert not {"mdfnet.pipeline", "mdfnet.report"} & package_graph()["mdfnet.cells"]
    probe = ("import sys, mdfnet.cells, mdfnet.report.comparison, mdfnet.report.tables; "
             "print(sorted(m for m in ('torch', 'mlflow', 'matplotlib', 'mdfnet.pipeline') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
