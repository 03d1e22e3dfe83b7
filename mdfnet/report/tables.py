"""Report tables (pure): ranked cells (:mod:`mdfnet.cells`) → the paper's sections, honest verdicts, table rows.

Per cell the report shows the mean ± sd over seeds of AP/AR (IoBB 0.5) on test and val, and a 95 % interval over
images (each run's percentile bootstrap interval, averaged over the cell's seeds). A cell with one seed says so (no
sd). Cells are compared with the section's reference (:func:`mdfnet.cells.reference_cell`: the baseline) by the
paired bootstrap of the test-AP difference on the same resampled images (:mod:`mdfnet.report.deltas`): *higher* or
*lower* only when that interval excludes 0, else *not different*. The per-cell intervals are not the test: two
models scored on the same images share most of their image-to-image variation, which the difference cancels.

A **section** (variants, fusion methods, backbones, clinical feature sets) holds the cells that differ from the
grid's most common configuration (ties: the paper's) only in that section's label (``fusion = none`` matches any
fusion: variants without 3D fusion have none).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from mdfnet.cells import CellStats, feature_set_name
from mdfnet.evaluation.paired import delta_text
from mdfnet.model.config import ModelConfig
from mdfnet.tracking_names import LABEL_KEYS
from mdfnet.training.config import DataConfig

_PAPER_MODEL, _PAPER_DATA = ModelConfig(), DataConfig()  # the defaults are the paper's configuration
PAPER_DEFAULTS: dict[str, str] = {"variant": _PAPER_MODEL.variant, "fusion": _PAPER_MODEL.fusion,
                                  "backbone": _PAPER_MODEL.backbone,
                                  "feature_set": feature_set_name(_PAPER_DATA.features)}
"""The paper's configuration (the config defaults' labels): breaks ties when two label values are equally common."""
SECTIONS: dict[str, str] = {"variant": "Variants", "fusion": "Fusion methods (3D fusion)", "backbone": "Backbones",
                            "feature_set": "Clinical feature sets"}


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


def delta_verdict(cell: CellStats, reference: CellStats, deltas: Mapping[str, Any | None]) -> str:
    """How ``cell`` compares with ``reference`` on test AP by its paired Δ (``deltas``: cell name → PairedDelta or
    None): *higher*/*lower* only when the paired interval excludes 0, else *not different*; ``reference`` for the
    reference, and why there is no paired comparison when there is none."""
    if cell is reference:
        return "reference"
    d = deltas.get(cell.cell)
    if d is None or d.verdict == "n/a":
        return "n/a (no paired comparison)"
    return d.verdict_text


def pct(mean: float, sd: float | None, n: int | None = None) -> str:
    """``mean ± sd`` in %; without sd, ``mean``, then ``(n seeds)`` when ``n`` is given; ``n/a`` for NaN."""
    if not math.isfinite(mean):
        return "n/a"
    if sd is None:
        return f"{100 * mean:.2f}" if n is None else f"{100 * mean:.2f} ({n} seed{'s' if n != 1 else ''})"
    return f"{100 * mean:.2f} ± {100 * sd:.2f}"


def interval_text(iv: tuple[float, float]) -> str:
    """``[lo, hi]`` in % (one decimal), ``n/a`` when a bound is unknown."""
    return "n/a" if not all(math.isfinite(v) for v in iv) else f"[{100 * iv[0]:.1f}, {100 * iv[1]:.1f}]"


def section_rows(cells: Sequence[CellStats], key: str, paper: Mapping[str, tuple[float, float]],
                 reference: CellStats | None = None,
                 deltas: Mapping[str, Any | None] | None = None) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of a section table (cells in ranking order), with each cell's paired Δ test AP against
    ``reference`` (default: the first cell; ``deltas``: cell name → PairedDelta or None, see
    :mod:`mdfnet.report.deltas`)."""
    reference = reference or (cells[0] if cells else None)
    deltas = deltas or {}
    vs = reference.cell if reference else "reference"
    headers = [key, "cell", "seeds", "test AP %", "test AP 95% CI", "test AR %", "test AR 95% CI", "val AP %",
               "val AR %", "test look-alike bAcc %", "paper AP / AR %", f"Δ test AP vs {vs} [95 % CI] (points)",
               f"test AP vs {vs}"]
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
                     f"{published[0]:.2f} / {published[1]:.2f}" if published else "—",
                     "—" if c is reference else delta_text(deltas.get(c.cell)),
                     delta_verdict(c, reference, deltas) if reference else "n/a"])
    return headers, rows
