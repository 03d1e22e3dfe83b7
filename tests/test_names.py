"""One owner per name, checked on the source with ``ast`` (nothing imported): every MLflow tag name the project
writes is spelled only in :mod:`mdfnet.tracking_names`, and every file name of a run folder (``config.yaml``,
``metrics.jsonl``, ``checkpoints/``, ``last.pt``, ``best.pt``, ``.sha256``) only in
:mod:`mdfnet.training.run_folder`.

The rule, stated so that it can be checked honestly:

- the code scanned is every ``.py`` file of ``mdfnet/``, ``components/``, ``pipelines/`` and ``benchmarks/``
  (tests may spell names where they assert the stored contract);
- a *tag literal* is a string constant (also a piece of an f-string) that is exactly ``mdfnet.<name>``,
  ``mlflow.<name>``, ``kfp.<name>`` or ``image.``; two kinds of such strings are not tags and are let through:
  the argument of a ``getLogger(...)`` call (a logger name, e.g. ``"mdfnet.train"``) and the dotted name of a
  module, or of a package followed by a dot (``"mdfnet.training"``, ``f"mdfnet.training.{name}"``: it can be
  imported);
- a *run-folder literal* is a string constant, docstrings left out, that contains ``last.pt``, ``best.pt``,
  ``.sha256``, ``config.yaml`` (not as the end of another name, e.g. ``preprocess_config.yaml``) or
  ``metrics.jsonl``, or that is ``checkpoints`` or starts with ``checkpoints/``.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("mdfnet", "components", "pipelines", "benchmarks")
TAG_OWNER = ROOT / "mdfnet" / "tracking_names.py"
RUN_FOLDER_OWNER = ROOT / "mdfnet" / "training" / "run_folder.py"

TAG = re.compile(r"(mdfnet|mlflow|kfp)\.[A-Za-z_][A-Za-z0-9_.]*|image\.")
RUN_FOLDER = re.compile(r"(?<![\w.])(last|best)\.pt\b|\.sha256\b|(?<!\w)config\.yaml\b|\bmetrics\.jsonl\b"
                        r"|^checkpoints(/|$)")


def _files() -> Iterator[Path]:
    for top in SCANNED:
        yield from sorted((ROOT / top).rglob("*.py"))


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes (first statement of a module, class or function, and a string right after an
    assignment: attribute docstrings)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for i, stmt in enumerate(body):
            if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
                    and isinstance(stmt.value.value, str)):
                continue
            if i == 0 or isinstance(body[i - 1], ast.Assign | ast.AnnAssign):
                out.add(id(stmt.value))
    return out


def _logger_names(tree: ast.AST) -> set[int]:
    """ids of the string arguments of ``getLogger(...)`` / ``logging.getLogger(...)`` calls."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name == "getLogger":
                out.update(id(a) for a in node.args)
    return out


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _strings(path: Path) -> Iterator[tuple[int, str, bool, bool]]:
    """(line, text, is a docstring, is a logger name) of every string constant of ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    docs, loggers = _docstrings(tree), _logger_names(tree)
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    for node in sorted(nodes, key=lambda n: (n.lineno, n.col_offset)):
        yield node.lineno, node.value, id(node) in docs, id(node) in loggers


def _where(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def tag_literals(path: Path) -> list[str]:
    return [f"{_where(path)}:{line}: {text!r}" for line, text, _, logger in _strings(path)
            if TAG.fullmatch(text) and not logger and not _is_module(text.removesuffix("."))]


def run_folder_literals(path: Path) -> list[str]:
    return [f"{_where(path)}:{line}: {text!r}" for line, text, doc, _ in _strings(path)
            if not doc and RUN_FOLDER.search(text)]


def test_every_mlflow_tag_name_is_spelled_once_in_tracking_names():
    found = [hit for p in _files() if p != TAG_OWNER for hit in tag_literals(p)]
    assert not found, "tag names spelled outside mdfnet/tracking_names.py:\n" + "\n".join(found)
    owned = tag_literals(TAG_OWNER)
    texts = [h.rsplit(": ", 1)[1] for h in owned]
    assert len(texts) == len(set(texts)) and len(texts) >= 30, owned  # each once, and the scan sees them


def test_every_run_folder_name_is_spelled_once_in_run_folder():
    found = [hit for p in _files() if p != RUN_FOLDER_OWNER for hit in run_folder_literals(p)]
    assert not found, "run-folder names spelled outside mdfnet/training/run_folder.py:\n" + "\n".join(found)
    texts = sorted(h.rsplit(": ", 1)[1] for h in run_folder_literals(RUN_FOLDER_OWNER))
    assert texts == sorted(map(repr, ["config.yaml", "metrics.jsonl", "checkpoints", "last.pt", "best.pt",
                                      ".sha256"])), texts


def test_the_scan_sees_what_it_must_and_lets_through_what_it_may(tmp_path):
    """The rule itself: a tag in a dict, an f-string piece and a set_tag call are found; a logger name, a module
    name and a docstring are not."""
    src = tmp_path / "m.py"
    src.write_text('"""Writes ``mdfnet.x`` and last.pt."""\nimport logging\nlog = logging.getLogger("mdfnet.train")\n'
                   'M = "mdfnet.training"\nT = {"mdfnet.a": 1}\nc.set_tag(r, "mlflow.note.content", v)\n'
                   'I = {f"image.{k}": v}\nP = out / "checkpoints" / "best.pt"\nQ = f"{n}.sha256"\n'
                   'R = "preprocess_config.yaml"\n')
    hits = [h.rsplit(": ", 1)[1] for h in tag_literals(src)]
    assert hits == ["'mdfnet.a'", "'mlflow.note.content'", "'image.'"], hits
    hits = [h.rsplit(": ", 1)[1] for h in run_folder_literals(src)]
    assert hits == ["'checkpoints'", "'best.pt'", "'.sha256'"], hits


def test_the_run_folder_is_the_documented_layout(tmp_path):
    """The on-disk contract (README, resumable runs written before this module existed) in plain words."""
    from mdfnet.training.run_folder import RunFolder

    run = RunFolder(tmp_path)
    assert (run.config, run.metrics) == (tmp_path / "config.yaml", tmp_path / "metrics.jsonl")
    assert (run.last, run.best) == (tmp_path / "checkpoints" / "last.pt", tmp_path / "checkpoints" / "best.pt")
    assert RunFolder.digest(run.last) == tmp_path / "checkpoints" / "last.pt.sha256"
    assert RunFolder(str(tmp_path)) == run
