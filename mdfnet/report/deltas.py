"""Δ test AP of cells against a reference cell, by the paired bootstrap (:mod:`mdfnet.evaluation.paired`) over the
runs' stored test ground truth and predictions (:class:`~mdfnet.report.collect.Artefacts`).

The rule, shared by the report and the compare step: the runs of a cell and of the reference are paired seed by
seed (seeds both have; a seed only one of them has is left out); in each of ``n_boot`` resamples of the test images
(one draw for every pair) Δ is the mean over the pairs of AP(cell) − AP(reference); the 95 % interval is the
percentile interval of those means; *higher*/*lower* only when it excludes 0. A cell without a common seed, without
stored predictions, or scored on other test images has no Δ (None; said in the table). Rendering:
:func:`mdfnet.evaluation.paired.delta_text` and :func:`~mdfnet.report.tables.delta_verdict`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from mdfnet.cells import CellStats
from mdfnet.report.collect import N_BOOT, Artefacts

log = logging.getLogger(__name__)


def paired_delta(artefacts: Artefacts, cell: CellStats, reference: CellStats, n_boot: int = N_BOOT,
                 seed: int = 0) -> Any | None:
    """The :class:`~mdfnet.evaluation.PairedDelta` of ``cell`` − ``reference`` on test AP, or None (see the module
    docstring)."""
    from mdfnet.evaluation import EvaluationError, paired_bootstrap

    ref_runs = {r.seed: r for r in reference.runs}
    pairs = []
    for run in cell.runs:
        if run.seed not in ref_runs:
            continue
        a, b = artefacts.scored(run.run_id), artefacts.scored(ref_runs[run.seed].run_id)
        if a is not None and b is not None:
            pairs.append((a, b))
    if not pairs or n_boot < 1:
        return None
    try:
        return paired_bootstrap(pairs, n=n_boot, seed=seed)
    except EvaluationError as e:
        log.warning("no paired Δ test AP of %s vs %s: %s", cell.cell, reference.cell, e)
        return None


def paired_deltas(artefacts: Artefacts, cells: Sequence[CellStats], reference: CellStats,
                  n_boot: int = N_BOOT) -> dict[str, Any | None]:
    """Cell name → its paired Δ test AP against ``reference`` (None for the reference itself and where unknown)."""
    return {c.cell: None if c is reference else paired_delta(artefacts, c, reference, n_boot) for c in cells}


__all__ = ["paired_delta", "paired_deltas"]
