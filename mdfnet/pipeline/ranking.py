"""Ranking evaluated runs (pure): metrics of an evaluation, cells ordered by mean validation AP over seeds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mdfnet.pipeline.grids import LABEL_KEYS
from mdfnet.tracking import SELECTION_METRIC

TABLE_METRICS = ("final/val/ap", "final/val/ar", "final/test/ap", "final/test/ar", "final/val/lookalike_bacc",
                 "final/test/lookalike_bacc")
"""Columns of the comparison table (in %, mean ± sd over seeds)."""


def selection_score(run: Mapping[str, Any]) -> float:
    """The run's :data:`SELECTION_METRIC`, or -inf when absent or not finite."""
    v = run.get("metrics", {}).get(SELECTION_METRIC)
    return float(v) if v is not None and math.isfinite(float(v)) else -math.inf


def format_pct(values: Sequence[float]) -> str:
    """Finite values as % with 2 decimals, ``mean ± sd`` when there are several; ``n/a`` when none."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return "n/a"
    mean = 100 * statistics.fmean(vals)
    return f"{mean:.2f}" if len(vals) == 1 else f"{mean:.2f} ± {100 * statistics.stdev(vals):.2f}"


@dataclass(frozen=True)
class CellRow:
    """One cell of the ranking: its runs' seeds, labels, mean selection score and formatted table metrics."""

    rank: int
    cell: str
    seeds: list[int]
    labels: dict[str, Any]
    mean_val_ap: float
    stats: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "cell": self.cell, "seeds": self.seeds, "mean_val_ap": self.mean_val_ap,
                **{k: self.labels.get(k) for k in LABEL_KEYS}, **self.stats}


def rank_cells(results: Sequence[Mapping[str, Any]]) -> tuple[list[CellRow], dict[str, Any]]:
    """Cells ordered by mean validation AP over their seeds (ties: cell name; no finite AP: last), and the best
    run (the best seed of the best cell; ties: the lower seed). ``results``: evaluate-step summaries."""
    cells: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        cells.setdefault(str(r["cell"]), []).append(r)

    def mean_val(rs: list[Mapping[str, Any]]) -> float:
        vals = [selection_score(r) for r in rs if math.isfinite(selection_score(r))]
        return statistics.fmean(vals) if vals else -math.inf

    order = sorted(cells, key=lambda c: (-mean_val(cells[c]), c))
    best = dict(max(cells[order[0]], key=lambda r: (selection_score(r), -int(r["seed"]))))
    rows = [CellRow(rank, c, sorted(int(r["seed"]) for r in cells[c]), dict(cells[c][0].get("labels", {})),
                    mean_val(cells[c]),
                    {m: format_pct([float(r["metrics"].get(m, math.nan)) for r in cells[c]]) for m in TABLE_METRICS})
            for rank, c in enumerate(order, 1)]
    return rows, best
