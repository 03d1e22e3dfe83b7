"""The compare step's table: ranked cells (:func:`mdfnet.cells.cell_stats`) → Markdown, an HTML page and the
JSON ranking rows. Per cell: rank, labels, number of seeds and :data:`TABLE_METRICS` in % (mean ± sd over seeds)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mdfnet.cells import FINAL, CellStats, RunResult
from mdfnet.report.render import html_table, markdown_table
from mdfnet.report.tables import pct
from mdfnet.tracking_names import LABEL_KEYS, SELECTION_METRIC

TABLE_METRICS = (SELECTION_METRIC, "final/val/ar", "final/test/ap", "final/test/ar", "final/val/lookalike_bacc",
                 "final/test/lookalike_bacc")
"""Columns of the comparison table (in %, mean ± sd over seeds)."""


def _stats(cell: CellStats) -> dict[str, str]:
    keys = {m: m.removeprefix(FINAL) for m in TABLE_METRICS}
    return {m: pct(cell.mean[k], cell.sd[k]) for m, k in keys.items()}


def ranking_rows(cells: Sequence[CellStats]) -> list[dict[str, Any]]:
    """One JSON-ready row per cell, in rank order: rank, cell, seeds, mean validation AP, labels, metrics (%)."""
    return [{"rank": rank, "cell": c.cell, "seeds": c.seeds, "mean_val_ap": c.score,
             **{k: c.labels.get(k) for k in LABEL_KEYS}, **_stats(c)} for rank, c in enumerate(cells, 1)]


def comparison_table(cells: Sequence[CellStats]) -> tuple[list[str], list[list[Any]]]:
    """Headers and rows of the comparison table (cells in rank order)."""
    headers = ["rank", "cell", *LABEL_KEYS, "seeds", *(f"{m} %" for m in TABLE_METRICS)]
    rows = [[rank, c.cell, *(c.labels.get(k, "") for k in LABEL_KEYS), len(c.runs), *_stats(c).values()]
            for rank, c in enumerate(cells, 1)]
    return headers, rows


def comparison_markdown(cells: Sequence[CellStats], best: RunResult) -> str:
    """The table as Markdown, with its title and the best run."""
    n_runs = sum(len(c.runs) for c in cells)
    return "\n".join([f"# Comparison ({n_runs} runs, {len(cells)} cells; ranked by {SELECTION_METRIC})", "",
                      markdown_table(*comparison_table(cells)), "",
                      f"Best: **{cells[0].cell}** (run `{best.run_name}`, {SELECTION_METRIC} = "
                      f"{pct(best.score, None)} %)"])


def comparison_page(cells: Sequence[CellStats], best: RunResult) -> str:
    """The table as a self-contained HTML page, with the best run."""
    return html_table(f"Comparison by {SELECTION_METRIC}", *comparison_table(cells),
                      f"best: <b>{cells[0].cell}</b> ({best.run_name})")
