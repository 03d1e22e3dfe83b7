"""The compare step's table: ranked cells (:func:`mdfnet.cells.cell_stats`) → Markdown, an HTML page and the
JSON ranking rows. Per cell: rank, labels, number of seeds and :data:`TABLE_METRICS` in % (mean ± sd over seeds),
and, when the paired Δ test AP against the reference cell is known (:mod:`mdfnet.report.deltas`), that Δ with its
95 % interval and the verdict (different only when the interval excludes 0)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mdfnet.cells import FINAL, CellStats, RunResult
from mdfnet.evaluation.paired import delta_text
from mdfnet.report.render import html_table, markdown_table
from mdfnet.report.tables import delta_verdict, pct
from mdfnet.tracking_names import LABEL_KEYS, SELECTION_METRIC

TABLE_METRICS = (SELECTION_METRIC, "final/val/ar", "final/test/ap", "final/test/ar", "final/val/lookalike_bacc",
                 "final/test/lookalike_bacc")
"""Columns of the comparison table (in %, mean ± sd over seeds)."""


def _stats(cell: CellStats) -> dict[str, str]:
    keys = {m: m.removeprefix(FINAL) for m in TABLE_METRICS}
    return {m: pct(cell.mean[k], cell.sd[k]) for m, k in keys.items()}


def ranking_rows(cells: Sequence[CellStats], reference: CellStats | None = None,
                 deltas: Mapping[str, Any | None] | None = None) -> list[dict[str, Any]]:
    """One JSON-ready row per cell, in rank order: rank, cell, seeds, mean validation AP, labels, metrics (%); with
    ``deltas``, also ``delta_test_ap`` (the PairedDelta's dict, None when unknown) and ``test_ap_vs_reference``."""
    rows = [{"rank": rank, "cell": c.cell, "seeds": c.seeds, "mean_val_ap": c.score,
             **{k: c.labels.get(k) for k in LABEL_KEYS}, **_stats(c)} for rank, c in enumerate(cells, 1)]
    if reference is not None and deltas is not None:
        for row, c in zip(rows, cells, strict=True):
            d = deltas.get(c.cell)
            row.update({"reference": reference.cell, "delta_test_ap": d.to_dict() if d is not None else None,
                        "test_ap_vs_reference": delta_verdict(c, reference, deltas)})
    return rows


def comparison_table(cells: Sequence[CellStats], reference: CellStats | None = None,
                     deltas: Mapping[str, Any | None] | None = None) -> tuple[list[str], list[list[Any]]]:
    """Headers and rows of the comparison table (cells in rank order); with ``deltas`` (cell → PairedDelta or
    None) two more columns: Δ test AP against ``reference`` [95 % CI] and the verdict."""
    headers = ["rank", "cell", *LABEL_KEYS, "seeds", *(f"{m} %" for m in TABLE_METRICS)]
    rows = [[rank, c.cell, *(c.labels.get(k, "") for k in LABEL_KEYS), len(c.runs), *_stats(c).values()]
            for rank, c in enumerate(cells, 1)]
    if reference is not None and deltas is not None:
        headers += [f"Δ test AP vs {reference.cell} [95 % CI] (points)", f"test AP vs {reference.cell}"]
        for row, c in zip(rows, cells, strict=True):
            row += ["—" if c is reference else delta_text(deltas.get(c.cell)), delta_verdict(c, reference, deltas)]
    return headers, rows


def comparison_markdown(cells: Sequence[CellStats], best: RunResult, reference: CellStats | None = None,
                        deltas: Mapping[str, Any | None] | None = None) -> str:
    """The table as Markdown, with its title and the best run (and how Δ is computed when it is shown)."""
    n_runs = sum(len(c.runs) for c in cells)
    lines = [f"# Comparison ({n_runs} runs, {len(cells)} cells; ranked by {SELECTION_METRIC})", "",
             markdown_table(*comparison_table(cells, reference, deltas)), "",
             f"Best: **{cells[0].cell}** (run `{best.run_name}`, {SELECTION_METRIC} = {pct(best.score, None)} %)"]
    if reference is not None and deltas is not None:
        lines += ["", f"Δ test AP: paired bootstrap against **{reference.cell}** on the same resampled test images "
                      "(seed k with seed k, averaged over seeds per resample); higher/lower only when its 95 % "
                      "interval excludes 0."]
    return "\n".join(lines)


def comparison_page(cells: Sequence[CellStats], best: RunResult, reference: CellStats | None = None,
                    deltas: Mapping[str, Any | None] | None = None) -> str:
    """The table as a self-contained HTML page, with the best run."""
    return html_table(f"Comparison by {SELECTION_METRIC}", *comparison_table(cells, reference, deltas),
                      f"best: <b>{cells[0].cell}</b> ({best.run_name})")
