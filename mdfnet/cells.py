"""Grid cells over seeds (pure, torch-free, MLflow-free): evaluated runs → cells with their means, spreads and
intervals, ranked by mean validation AP.

A **cell** is one configuration of a grid; its runs differ only in the seed. Per cell and per :data:`KEYS`: the
mean and sd over seeds of the finite ``final/<key>`` metrics (sd None with fewer than two), and the mean of the
runs' 95 % bootstrap intervals. Cells are ranked by mean validation AP (:data:`~mdfnet.tracking_names.SELECTION_METRIC`;
ties: cell name; a cell without a finite one ranks last); the best run is the best seed of the best cell (ties:
the lower seed). The compare step (:func:`mdfnet.pipeline.steps.compare_step`) and the report
(:func:`mdfnet.report.build_report`) both rank here, and both compare each cell with :func:`reference_cell` by the
paired Δ test AP (:mod:`mdfnet.report.deltas`); they only render differently.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mdfnet.data import schema
from mdfnet.tracking_names import SELECTION_METRIC

FINAL = "final/"
"""Prefix of the metrics an evaluated run ends with (``final/<split>/<metric>``)."""
KEYS: tuple[str, ...] = ("test/ap", "test/ar", "val/ap", "val/ar", "test/lookalike_bacc", "val/lookalike_bacc")
"""The statistics of a cell: ``final/<key>`` of its runs (bootstrap intervals where the runs have them)."""


def headline_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite ``final/<key>`` of ``metrics`` for :data:`KEYS` (AP, AR and the look-alike pair's balanced
    accuracy on val and test): what compare, register and KFP's run comparison read. The ~100 per-class and FROC
    values stay in MLflow: an evaluate summary per cell must stay small, since KFP passes the fan-in of all cells
    to compare as one command-line argument (Linux caps one at 128 KiB: 30 cells with every metric exceeded it)."""
    values = {f"{FINAL}{k}": metrics.get(f"{FINAL}{k}") for k in KEYS}
    return {k: float(v) for k, v in sorted(values.items())
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


SCORE_KEY = SELECTION_METRIC.removeprefix(FINAL)
"""The key cells are ranked by (``val/ap``)."""


def feature_set_name(features: Sequence[str], shuffled: bool = False) -> str:
    """The ``feature_set`` label of clinical ``features``: ``all`` / ``none`` / ``age+gender``…; ``-shuffled``
    appended for the shuffled-clinical control."""
    if list(features) == list(schema.ALL_FEATURES):
        name = "all"
    else:
        name = "+".join(features) if features else "none"
    return f"{name}-shuffled" if shuffled and features else name


def selection_score(metrics: Mapping[str, Any]) -> float:
    """The :data:`~mdfnet.tracking_names.SELECTION_METRIC` of ``metrics``, or -inf when absent or not finite."""
    v = metrics.get(SELECTION_METRIC)
    return float(v) if v is not None and math.isfinite(float(v)) else -math.inf


@dataclass(frozen=True)
class RunResult:
    """One evaluated run: its cell, seed, labels, final metrics and 95 % bootstrap intervals (``KEYS`` → (lo, hi))."""

    run_id: str
    run_name: str
    cell: str
    seed: int
    labels: dict[str, str]
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> RunResult:
        """An evaluate-step summary (``cell``, ``seed``, ``labels``, ``metrics``…) as a run (no intervals)."""
        metrics = {k: float(v) for k, v in (summary.get("metrics") or {}).items() if v is not None}
        return cls(str(summary.get("run_id") or ""), str(summary.get("run_name") or ""), str(summary["cell"]),
                   int(summary["seed"]), dict(summary.get("labels") or {}), metrics)

    @property
    def score(self) -> float:
        """The run's :func:`selection_score`."""
        return selection_score(self.metrics)


@dataclass(frozen=True, eq=False)  # compared by identity (one object per cell)
class CellStats:
    """A cell over its seeds (runs sorted by seed): ``mean`` (NaN: no finite value), ``sd`` (None with fewer than
    two) and the mean ``interval``, per :data:`KEYS`."""

    cell: str
    labels: dict[str, str]
    runs: list[RunResult]
    mean: dict[str, float]
    sd: dict[str, float | None]
    interval: dict[str, tuple[float, float]]

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)

    @property
    def score(self) -> float:
        """Mean validation AP over the seeds (what cells are ranked by); -inf when no run has a finite one."""
        mean = self.mean[SCORE_KEY]
        return mean if math.isfinite(mean) else -math.inf


def _finite(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _cell(cell: str, runs: Sequence[RunResult]) -> CellStats:
    mean, sd, interval = {}, {}, {}
    for k in KEYS:
        vals = _finite([r.metrics.get(f"{FINAL}{k}", math.nan) for r in runs])
        mean[k] = statistics.fmean(vals) if vals else math.nan
        sd[k] = statistics.stdev(vals) if len(vals) > 1 else None
        lows = _finite([r.intervals[k][0] for r in runs if k in r.intervals])
        highs = _finite([r.intervals[k][1] for r in runs if k in r.intervals])
        interval[k] = (statistics.fmean(lows), statistics.fmean(highs)) if lows and highs else (math.nan, math.nan)
    return CellStats(cell, dict(runs[0].labels), sorted(runs, key=lambda r: r.seed), mean, sd, interval)


def cell_stats(runs: Sequence[RunResult]) -> list[CellStats]:
    """Runs grouped by cell, ranked: best mean validation AP first (see the module docstring)."""
    by_cell: dict[str, list[RunResult]] = {}
    for r in runs:
        by_cell.setdefault(r.cell, []).append(r)
    cells = [_cell(cell, rs) for cell, rs in by_cell.items()]
    return sorted(cells, key=lambda c: (-c.score, c.cell))


REFERENCE_VARIANT = "baseline"
"""The variant other cells are compared with (:func:`reference_cell`): the image-only model."""


def reference_cell(cells: Sequence[CellStats]) -> CellStats:
    """The cell the others' Δ test AP is measured against: the :data:`REFERENCE_VARIANT` cell (the best ranked one
    if several), else the first of ``cells`` (the best ranked)."""
    if not cells:
        raise ValueError("reference_cell needs at least one cell, got none")
    return next((c for c in cells if c.labels.get("variant") == REFERENCE_VARIANT), cells[0])


def best_run(cells: Sequence[CellStats]) -> RunResult:
    """The best seed of the best cell (``cells`` ranked by :func:`cell_stats`); ties: the lower seed."""
    return max(cells[0].runs, key=lambda r: (r.score, -r.seed))
