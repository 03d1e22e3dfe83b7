"""Confusion between two look-alike classes: which of the pair does the detector call a lesion of the pair?

On MDF-Net's data the clinically interesting confusion is *Consolidation* vs *Pulmonary edema*: both are
patchy opacities, told apart by the triage (fever vs tachypnoea / low SpO₂) more than by the image. AP mixes
this with localisation; :func:`pair_confusion` isolates it.

For every ground-truth box of either class of the pair: take the detections of either class of the pair in
the same image with ``score ≥ score_threshold`` that cover it (overlap ≥ ``min_overlap``, IoBB by default, the
paper's metric: a small box inside the lesion covers it); the highest-scoring one decides (ties: the first in
file order). Its class equal to the box's class → *correct*, the other class → *swapped*; no covering
detection → *missed*. Balanced accuracy is the mean over the two classes of ``correct / (correct + swapped)``
(misses excluded), so "always Consolidation" scores 0.5 whatever the class shares. It is NaN when a class has
no decided box (nothing to measure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mdfnet.evaluation.coco import EvaluationError, GroundTruth, parse_detections, parse_ground_truth
from mdfnet.evaluation.overlap import get_overlap

LOOKALIKE_PAIR: tuple[str, str] = ("Consolidation", "Pulmonary edema")
"""The pair whose confusion :func:`pair_confusion` measures by default."""


@dataclass(frozen=True)
class PairResult:
    """Counts per ground-truth class of the pair (index 0 = ``classes[0]``): ``correct``, ``swapped``,
    ``missed`` and ``ground_truth`` (= their sum)."""

    classes: tuple[str, str]
    correct: tuple[int, int]
    swapped: tuple[int, int]
    missed: tuple[int, int]

    @property
    def ground_truth(self) -> tuple[int, int]:
        return tuple(c + s + m for c, s, m in zip(self.correct, self.swapped, self.missed, strict=True))

    @property
    def both_present(self) -> bool:
        """Both classes have ground truth (only then is the pair's confusion defined)."""
        return min(self.ground_truth) > 0

    @property
    def recall(self) -> tuple[float, float]:
        """Per class, ``correct / decided`` (NaN when nothing of that class was decided)."""
        return tuple(c / (c + s) if c + s else math.nan for c, s in zip(self.correct, self.swapped, strict=True))

    @property
    def balanced_accuracy(self) -> float:
        r = self.recall
        return math.nan if any(math.isnan(x) for x in r) else 0.5 * (r[0] + r[1])

    @property
    def total_missed(self) -> int:
        return sum(self.missed)

    def metrics(self, prefix: str) -> dict[str, float]:
        """``<prefix>/lookalike_bacc`` (when finite) and ``<prefix>/lookalike_missed``, only when both classes
        have ground truth (what every evaluated run logs); ``{}`` otherwise."""
        if not self.both_present:
            return {}
        out = {f"{prefix}/lookalike_missed": float(self.total_missed)}
        if not math.isnan(self.balanced_accuracy):
            out[f"{prefix}/lookalike_bacc"] = self.balanced_accuracy
        return out

    def to_dict(self) -> dict[str, Any]:
        bacc = self.balanced_accuracy
        return {"classes": list(self.classes), "correct": list(self.correct), "swapped": list(self.swapped),
                "missed": list(self.missed), "balanced_accuracy": None if math.isnan(bacc) else bacc}


def pair_confusion(gt: dict | GroundTruth, dets: list, classes: tuple[str, str] = LOOKALIKE_PAIR,
                   min_overlap: float = 0.5, overlap: str = "iobb", score_threshold: float = 0.05) -> PairResult:
    """Counts of :class:`PairResult` for COCO ground truth ``gt`` and COCO results ``dets`` (module docstring).

    Raises :class:`EvaluationError` if a class of the pair is not a category of ``gt``.
    """
    g = gt if isinstance(gt, GroundTruth) else parse_ground_truth(gt)
    missing = [c for c in classes if c not in g.category_names]
    if len(classes) != 2 or classes[0] == classes[1] or missing:
        raise EvaluationError(f"pair {classes!r}: expected two distinct categories of the ground truth "
                              f"{list(g.category_names)}" + (f" (missing {missing})" if missing else ""))
    d = parse_detections(dets, g)
    overlap_fn = get_overlap(overlap)
    pair_idx = np.array([g.category_names.index(c) for c in classes])
    keep = np.isin(d.category_index, pair_idx) & (d.scores >= score_threshold)
    d = d.select(keep)
    counts = np.zeros((2, 3), dtype=np.int64)  # [class of the pair, correct/swapped/missed]
    for j in np.flatnonzero(np.isin(g.category_index, pair_idx)):
        k = int(np.flatnonzero(pair_idx == g.category_index[j])[0])
        mine = np.flatnonzero(d.image_index == g.image_index[j])
        covering = mine[overlap_fn(d.boxes[mine], g.boxes[j][None, :]) >= min_overlap]
        if len(covering) == 0:
            counts[k, 2] += 1
            continue
        best = covering[int(np.argmax(d.scores[covering]))]  # argmax: the first of tied scores
        counts[k, 0 if d.category_index[best] == pair_idx[k] else 1] += 1
    return PairResult(tuple(classes), tuple(int(x) for x in counts[:, 0]), tuple(int(x) for x in counts[:, 1]),
                      tuple(int(x) for x in counts[:, 2]))
