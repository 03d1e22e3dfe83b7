"""The README's "First run on a cluster" guide, read for its checks (no dependencies beyond PyYAML): its shell
commands, the values its ``helm install`` sets (``charts/check.py`` renders them with the chart,
``tests/test_chart.py`` validates them against the schema) and its ``compile.py`` lines (``tests/test_pipeline_compile.py``
runs them).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HEADING = "## First run on a cluster"


def section(text: str | None = None) -> str:
    """The guide's Markdown (from its heading to the next ``## `` heading)."""
    text = README.read_text() if text is None else text
    start = text.find(f"\n{HEADING}\n")
    if start < 0:
        raise ValueError(f"README.md has no section {HEADING!r}")
    end = text.find("\n## ", start + len(HEADING) + 2)
    return text[start:end if end > 0 else None]


def blocks(language: str, text: str | None = None) -> list[str]:
    """The guide's fenced code blocks of ``language`` (``bash``, ``python``)."""
    return re.findall(rf"```{language}\n(.*?)```", section(text), re.S)


def commands(program: str, text: str | None = None) -> list[list[str]]:
    """Every command of the guide's bash blocks that starts with ``program`` (``helm install``, ``python
    pipelines/compile.py``), continuation lines joined, comments dropped, as argument lists."""
    found = []
    for block in blocks("bash", text):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            args = shlex.split(line, comments=True)
            if args and " ".join(args).startswith(program):
                found.append(args)
    return found


def _typed(value: str) -> Any:
    """A ``--set`` value as Helm types it: true/false, integers, else the string."""
    if value in ("true", "false"):
        return value == "true"
    return int(value) if re.fullmatch(r"-?\d+", value) else value


def helm_values(args: list[str]) -> dict[str, Any]:
    """The values a ``helm install`` argument list sets with ``--set a.b=c`` (dotted keys → nested maps; ``\\.``
    keeps a dot in a key); other flags are ignored."""
    values: dict[str, Any] = {}
    for flag, arg in zip(args, args[1:], strict=False):
        if flag != "--set":
            continue
        for assignment in arg.split(","):
            key, _, value = assignment.partition("=")
            parts = [p.replace("\0", ".") for p in key.replace("\\.", "\0").split(".")]
            node = values
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = _typed(value)
    return values
