"""A report as a list of blocks, rendered to Markdown (PNGs beside it) and to one self-contained HTML page
(PNGs inlined: the KFP UI shows HTML artefacts as they are)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mdfnet.pipeline.reports import markdown_table


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
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px}th{background:#f3f3f3}img{max-width:100%}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            parts.append(f"<{b.kind}>{_plain(b.text)}</{b.kind}>")
        elif b.kind == "p":
            parts.append(f"<p>{_plain(b.text)}</p>")
        elif b.kind == "table":
            th = "".join(f"<th>{html.escape(str(h))}</th>" for h in b.headers)
            trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in b.rows)
            parts.append(f"<table><tr>{th}</tr>{trs}</table>")
        elif b.kind == "img" and b.path is not None:
            data = base64.b64encode(b.path.read_bytes()).decode()
            parts.append(f"<figure><img src='data:image/png;base64,{data}'/><figcaption>{_plain(b.text)}"
                         "</figcaption></figure>")
    return "".join(parts) + "</body></html>"
