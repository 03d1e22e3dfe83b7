"""Security defaults, checked on the source so a regression fails here: checkpoints and served weights are read
with ``torch.load(weights_only=True)``, YAML only with ``yaml.safe_load``, nothing is unpickled, no code is
evaluated from data, and every step image runs as a non-root user. (No secret in what a pipeline run writes:
``test_pipeline_local.py``; none in the compiled YAML: ``test_pipeline_compile.py``.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("mdfnet", "components", "pipelines", "charts") for p in (ROOT / d).rglob("*.py"))


def _calls(path: Path) -> list[tuple[str, ast.Call]]:
    """Every call in ``path`` with its dotted name (``torch.load``, ``yaml.load``, ``pickle.loads`` …)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            f, parts = node.func, []
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            parts.append(f.id if isinstance(f, ast.Name) else "<expr>")  # model.to(d).eval() is not eval()
            out.append((".".join(reversed(parts)), node))
    return out


def test_sources_are_found():
    assert len(SOURCES) > 50 and any(p.name == "checkpoint.py" for p in SOURCES)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_unsafe_deserialisation_or_eval(path):
    for name, call in _calls(path):
        where = f"{path.relative_to(ROOT)}:{call.lineno}"
        if name == "torch.load":
            kw = {k.arg: k.value for k in call.keywords}
            assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, \
                f"{where}: torch.load without weights_only=True"
        assert name not in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"), f"{where}: {name} (use yaml.safe_load)"
        assert not name.startswith(("pickle.", "cloudpickle.", "dill.", "marshal.")), f"{where}: {name}"
        assert name not in ("eval", "exec"), f"{where}: {name}() on data"


def test_step_images_run_as_a_non_root_user():
    for dockerfile in (ROOT / "images").glob("*/Dockerfile"):
        users = [line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("USER ")]
        assert users and all(u.split(":")[0] not in ("0", "root") for u in users), dockerfile
        assert users[-1].split(":")[0] == "1000", f"{dockerfile}: the last USER is {users[-1]}"
