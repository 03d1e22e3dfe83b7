"""Report tables (pure): evaluated runs → per-cell statistics over seeds, the paper's sections, honest verdicts.

A **cell** is one configuration of a grid; its runs differ only in the seed. Per cell: mean ± sd over seeds of
AP/AR (IoBB 0.5) on test and val, and a 95 % interval over images: each run's percentile bootstrap interval
(images resampled with replacement), averaged over the cell's seeds. A cell with one seed says so (no sd).
Two cells whose test-AP intervals overlap are reported as *not different*; only disjoint intervals are.

A **section** (variants, fusion methods, backbones, clinical feature sets) holds the cells that differ from the
grid's most common configuration (ties: the paper's) only in that section's label (``fusion = none`` matches any
fusion: variants without 3D fusion have none).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mdfnet.pipeline.grids import LABEL_KEYS

KEYS: tuple[str, ...] = ("test/ap", "test/ar", "val/ap", "val/ar", "test/lookalike_bacc")
"""The statistics of a cell: ``final/<key>`` of its runs (intervals for the first four)."""
PAPER_DEFAULTS: dict[str, str] = {"variant": "mdf", "fusion": "sum", "backbone": "mobilenet_v3_small",
                                  "feature_set": "all"}
"""The paper's configuration: breaks ties when two label values are equally common."""
SECTIONS: dict[str, str] = {"variant": "Variants", "fusion": "Fusion methods (3D fusion)", "backbone": "Backbones",
                            "feature_set": "Clinical feature sets"}


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


@dataclass(frozen=True, eq=False)  # compared by identity (one object per cell)
class CellStats:
    """A cell over its seeds: ``mean``/``sd`` (None with one seed) and the mean interval, per :data:`KEYS`."""

    cell: str
    labels: dict[str, str]
    runs: list[RunResult]
    mean: dict[str, float]
    sd: dict[str, float | None]
    interval: dict[str, tuple[float, float]]

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def cell_stats(runs: Sequence[RunResult]) -> list[CellStats]:
    """Runs grouped by cell, ordered by mean validation AP (best first; ties by name)."""
    by_cell: dict[str, list[RunResult]] = {}
    for r in runs:
        by_cell.setdefault(r.cell, []).append(r)
    out = []
    for cell, rs in by_cell.items():
        mean, sd, interval = {}, {}, {}
        for k in KEYS:
            vals = _finite([r.metrics.get(f"final/{k}", math.nan) for r in rs])
            mean[k] = statistics.fmean(vals) if vals else math.nan
            sd[k] = statistics.stdev(vals) if len(vals) > 1 else None
            lows = _finite([r.intervals[k][0] for r in rs if k in r.intervals])
            highs = _finite([r.intervals[k][1] for r in rs if k in r.intervals])
            interval[k] = (statistics.fmean(lows), statistics.fmean(highs)) if lows and highs else (math.nan, math.nan)
        out.append(CellStats(cell, dict(rs[0].labels), sorted(rs, key=lambda r: r.seed), mean, sd, interval))
    return sorted(out, key=lambda c: (-(c.mean["val/ap"] if math.isfinite(c.mean["val/ap"]) else -1), c.cell))


def section(cells: Sequence[CellStats], key: str) -> list[CellStats]:
    """The cells that differ from the most common configuration only in label ``key`` (see module docstring);
    empty when fewer than two values of ``key`` remain."""
    others = [k for k in LABEL_KEYS if k != key]
    mode = {}
    for k in others:  # "none" (no 3D fusion) is a wildcard, never the mode when there is another value
        counts = Counter(c.labels.get(k) for c in cells if c.labels.get(k) != "none") or Counter(["none"])
        mode[k] = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0] != PAPER_DEFAULTS[k], str(kv[0])))[0][0]
    chosen = [c for c in cells if all(c.labels.get(k) in (mode[k], "none") for k in others)]
    return chosen if len({c.labels.get(key) for c in chosen}) >= 2 else []


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Two intervals overlap (NaN bounds: unknown, counted as overlapping: never called different)."""
    if not all(math.isfinite(v) for v in (*a, *b)):
        return True
    return a[0] <= b[1] and b[0] <= a[1]


def verdict(cell: CellStats, reference: CellStats, key: str = "test/ap") -> str:
    """How ``cell`` compares with ``reference`` on ``key``: *higher*/*lower* only when their intervals are
    disjoint, else *not different*."""
    if cell is reference:
        return "reference"
    if overlaps(cell.interval[key], reference.interval[key]):
        return "not different (intervals overlap)"
    return "higher" if cell.interval[key][0] > reference.interval[key][1] else "lower"


def pct(mean: float, sd: float | None, n: int) -> str:
    """``mean ± sd`` in %, or ``mean (1 seed)``; ``n/a`` for NaN."""
    if not math.isfinite(mean):
        return "n/a"
    if sd is None:
        return f"{100 * mean:.2f} ({n} seed{'s' if n != 1 else ''})"
    return f"{100 * mean:.2f} ± {100 * sd:.2f}"


def interval_text(iv: tuple[float, float]) -> str:
    return "n/a" if not all(math.isfinite(v) for v in iv) else f"[{100 * iv[0]:.1f}, {100 * iv[1]:.1f}]"


def section_rows(cells: Sequence[CellStats], key: str,
                 paper: Mapping[str, tuple[float, float]]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of a section table (cells in ranking order; the first is the reference)."""
    headers = [key, "cell", "seeds", "test AP %", "test AP 95% CI", "test AR %", "test AR 95% CI", "val AP %",
               "val AR %", "test look-alike bAcc %", "paper AP / AR %", f"test AP vs {cells[0].cell}" if cells else "vs"]
    rows = []
    for c in cells:
        n = len(c.runs)
        control = str(c.labels.get("feature_set", "")).endswith("-shuffled")  # not a configuration of the paper
        published = None if control else paper.get(str(c.labels.get(key)))
        rows.append([str(c.labels.get(key)), c.cell, str(n), pct(c.mean["test/ap"], c.sd["test/ap"], n),
                     interval_text(c.interval["test/ap"]), pct(c.mean["test/ar"], c.sd["test/ar"], n),
                     interval_text(c.interval["test/ar"]), pct(c.mean["val/ap"], c.sd["val/ap"], n),
                     pct(c.mean["val/ar"], c.sd["val/ar"], n),
                     pct(c.mean["test/lookalike_bacc"], c.sd["test/lookalike_bacc"], n),
                     f"{published[0]:.2f} / {published[1]:.2f}" if published else "—", verdict(c, cells[0])])
    return headers, rows
