"""Rendering (owned here, used by the report and the pipeline steps): Markdown tables, self-contained HTML pages
(PNGs inlined: the KFP UI shows HTML artefacts as they are), and a report as a list of :class:`Block`, rendered to
Markdown (PNGs beside it) and to one HTML page."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (cells as ``str``, not escaped)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _table_html(headers: Sequence[Any], rows: Sequence[Sequence[Any]], attrs: str = "") -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table{attrs}><tr>{th}</tr>{trs}</table>"


def _figure_html(path: Path, caption_html: str) -> str:
    """A PNG inlined as a ``data:`` URI, with its caption (already HTML)."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<figure><img src='data:image/png;base64,{data}'/><figcaption>{caption_html}</figcaption></figure>"


def html_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], footer: str = "") -> str:
    """A self-contained HTML page holding one table (cells escaped) and an optional footer line (HTML)."""
    table = _table_html(headers, rows, " border='1'")
    return (f"<html><body><h2>{html.escape(title)}</h2>{table}"
            f"{f'<p>{footer}</p>' if footer else ''}</body></html>")


def plots_html(paths: Sequence[str | Path], title: str) -> str:
    """Self-contained HTML page with the PNGs inlined, each captioned with its file name."""
    imgs = "".join(_figure_html(Path(p), html.escape(Path(p).name)) for p in paths)
    return f"<html><body><h2>{html.escape(title)}</h2>{imgs}</body></html>"


@dataclass(frozen=True)
class Block:
    """``kind``: ``h1``/``h2``/``h3`` (text), ``p`` (text, Markdown ``**bold**`` and backticks kept as is in
    Markdown and shown plainly in HTML), ``table`` (headers, rows) or ``img`` (path, caption)."""

    kind: str
    text: str = ""
    headers: Sequence[str] = ()
    rows: Sequence[Sequence[str]] = ()
    path: Path | None = None


def to_markdown(blocks: Sequence[Block], base: Path) -> str:
    """The blocks as Markdown; images linked relative to ``base`` (the folder the Markdown is written to)."""
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(b.kind[1])} {b.text}")
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "table":
            out.append(markdown_table(b.headers, b.rows))
        elif b.kind == "img" and b.path is not None:
            out.append(f"![{b.text}]({b.path.relative_to(base).as_posix()})")
    return "\n\n".join(out) + "\n"


def _plain(text: str) -> str:
    return html.escape(text.replace("**", "").replace("`", ""))


def to_html(blocks: Sequence[Block], title: str) -> str:
    """The blocks as one self-contained HTML page (images inlined)."""
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px}th{background:#f3f3f3}img{max-width:100%}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            parts.append(f"<{b.kind}>{_plain(b.text)}</{b.kind}>")
        elif b.kind == "p":
            parts.append(f"<p>{_plain(b.text)}</p>")
        elif b.kind == "table":
            parts.append(_table_html(b.headers, b.rows))
        elif b.kind == "img" and b.path is not None:
            parts.append(_figure_html(b.path, _plain(b.text)))
    return "".join(parts) + "</body></html>"
