"""What the steps show people: Markdown tables, self-contained HTML pages, files for KFP's artefact viewers."""

from __future__ import annotations

import base64
import html
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def html_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], footer: str = "") -> str:
    """A self-contained HTML page holding one table (cells escaped) and an optional footer line (HTML)."""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return (f"<html><body><h2>{html.escape(title)}</h2><table border='1'><tr>{th}</tr>{trs}</table>"
            f"{f'<p>{footer}</p>' if footer else ''}</body></html>")


def plots_html(paths: Sequence[str | Path], title: str) -> str:
    """Self-contained HTML page with the PNGs inlined (the KFP UI shows HTML artefacts as they are)."""
    imgs = "".join(f'<figure><img src="data:image/png;base64,{base64.b64encode(Path(p).read_bytes()).decode()}"/>'
                   f"<figcaption>{html.escape(Path(p).name)}</figcaption></figure>" for p in paths)
    return f"<html><body><h2>{html.escape(title)}</h2>{imgs}</body></html>"


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` (parents created): KFP Markdown/HTML artefacts are single files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def copy_file(src: str | Path, dst: str | Path) -> None:
    """Copy one file (parents of ``dst`` created)."""
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
