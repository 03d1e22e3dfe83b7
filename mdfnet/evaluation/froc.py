"""FROC (free-response ROC), the usual curve for lesion detection in radiology: lesion sensitivity against the
mean number of false positives per image, read at :data:`FP_RATES` and averaged (the mean of the seven is the
"competition performance metric" of lesion-detection challenges).

Matching is the evaluation's (:func:`mdfnet.evaluation.evaluate`): IoBB ≥ 0.5 by default, COCO's greedy matching
per image and class, detections with ``score >= score_threshold`` and at most ``max_dets`` per image and class. A
detection is a true positive when it is matched to a ground truth of its class, else a false positive.

Each operating point is a score threshold: every detection scoring at least it is kept (tied scores enter
together). Sensitivity = matched ground truths / ground truths; FP per image = false positives / images. The
sensitivity at a rate ``f`` is that of the lowest threshold whose FP per image is ≤ ``f`` (0 before any detection);
past the last detection the curve stays at its last sensitivity. **Per class** counts that class's ground truths
and detections; **overall** pools every class (all lesions, all false positives) into one curve.

Metric names (owned here, :meth:`FROCResult.metrics`): ``<prefix>/froc/fp<rate>`` and ``<prefix>/froc/mean``
overall, ``<prefix>/froc/fp<rate>/<class>`` and ``<prefix>/froc/mean/<class>`` per class (rates as ``0.125``,
``1``, ``8``; classes as in the AP metrics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mdfnet.evaluation.coco import GroundTruth
from mdfnet.evaluation.evaluator import match_detections, metric_key

FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""False positives per image at which the sensitivity is read."""
OVERALL = "all"
"""The pooled curve's name in :attr:`FROCResult.curves` and :meth:`FROCResult.to_dict`."""


def froc_metric(prefix: str, rate: float | None = None, class_name: str | None = None) -> str:
    """The metric name of the sensitivity at ``rate`` (None: the mean over the rates), overall or of a class."""
    name = f"{prefix}/froc/{'mean' if rate is None else f'fp{rate:g}'}"
    return name if class_name is None else f"{name}/{metric_key(class_name)}"


@dataclass(frozen=True)
class FROCResult:
    """``sensitivity`` Float64[K + 1, R]: per class (NaN for a class without ground truth), then overall, at
    ``fp_rates``; ``curves``: class name or :data:`OVERALL` → (FP per image, sensitivity) at every operating point,
    starting at (0, 0)."""

    fp_rates: tuple[float, ...]
    class_names: tuple[str, ...]
    num_images: int
    sensitivity: np.ndarray = field(repr=False)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)

    @property
    def mean(self) -> np.ndarray:
        """Float64[K + 1]: the mean sensitivity over the rates, per class then overall."""
        return self.sensitivity.mean(axis=1)

    def rows(self) -> dict[str, np.ndarray]:
        """Name (classes, then :data:`OVERALL`) → sensitivities at the rates followed by their mean."""
        names = (*self.class_names, OVERALL)
        return {name: np.r_[self.sensitivity[i], self.mean[i]] for i, name in enumerate(names)}

    def metrics(self, prefix: str) -> dict[str, float]:
        """Finite sensitivities as tracker metrics (names: :func:`froc_metric`); classes without ground truth left
        out."""
        out = {}
        for name, values in self.rows().items():
            cls = None if name == OVERALL else name
            for rate, v in zip((*self.fp_rates, None), values, strict=True):
                if math.isfinite(v):
                    out[froc_metric(prefix, rate, cls)] = float(v)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the rates, and per class and overall the sensitivities (None: no ground truth) and mean."""
        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {"fp_rates": list(self.fp_rates), "num_images": self.num_images,
                "sensitivity": {name: {"at_rates": [num(v) for v in values[:-1]], "mean": num(values[-1])}
                                for name, values in self.rows().items()}}


def _curve(scores: np.ndarray, hits: np.ndarray, n_gt: int, n_img: int) -> tuple[np.ndarray, np.ndarray]:
    """(FP per image, sensitivity) at each distinct score threshold, from (0, 0); tied scores enter together."""
    order = np.argsort(-scores, kind="stable")
    s, h = scores[order], hits[order]
    tp, fp = np.cumsum(h), np.cumsum(~h)
    last = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, dtype=bool)  # last detection of each score
    fps = np.r_[0.0, fp[last] / n_img]
    sens = np.r_[0.0, tp[last] / n_gt] if n_gt else np.full(len(fps), np.nan)
    return fps, sens


def _read(fps: np.ndarray, sens: np.ndarray, rates: Sequence[float], n_img: int) -> np.ndarray:
    """Sensitivity of the last operating point with FP per image ≤ each rate (counts compared, not ratios)."""
    fp_counts = np.rint(fps * n_img)
    idx = np.searchsorted(fp_counts, np.asarray(rates) * n_img + 1e-9, side="right") - 1
    return sens[idx]


def froc(gt: dict | GroundTruth, dets: list, overlap: str = "iobb", threshold: float = 0.5, max_dets: int = 10,
         score_threshold: float = 0.05, fp_rates: Sequence[float] = FP_RATES) -> FROCResult:
    """FROC of ``dets`` (COCO results) against ``gt`` (COCO dict); see the module docstring."""
    rates = tuple(float(r) for r in fp_rates)
    if not rates or any(not math.isfinite(r) or r <= 0 for r in rates):
        raise ValueError(f"fp_rates must be positive numbers, got {list(fp_rates)}")
    g, m = match_detections(gt, dets, overlap, (threshold,), max_dets, score_threshold)
    n_img, K = g.num_images, g.num_categories
    if n_img == 0:
        raise ValueError("FROC needs ground truth with at least one image")
    hits = m.det_matched[0]
    num_gt = np.bincount(m.gt_category, minlength=K)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    sens = np.full((K + 1, len(rates)), np.nan)
    groups = [(name, m.det_category == k, int(num_gt[k])) for k, name in enumerate(g.category_names)]
    for row, (name, sel, n_gt) in enumerate([*groups, (OVERALL, np.ones(len(hits), dtype=bool), int(num_gt.sum()))]):
        curves[name] = _curve(m.det_score[sel], hits[sel], n_gt, n_img)
        if n_gt:
            sens[row] = _read(*curves[name], rates, n_img)
    return FROCResult(rates, g.category_names, n_img, sens, curves)


__all__ = ["FP_RATES", "OVERALL", "FROCResult", "froc", "froc_metric"]
