"""Paired bootstrap of the AP difference between two models scored on the same images.

Two models evaluated on one test set are compared on the *same* resampled images: each bootstrap replicate draws
the images once (:func:`~mdfnet.evaluation.evaluator.resample_images`) and scores both models on that draw, so
the image-to-image variation both models share cancels in Δ = AP(a) − AP(b). Unpaired intervals (one per model)
carry that shared variation twice and overlap even when one model is better on nearly every image.

Several seeds: the runs are paired seed by seed (seed k of ``a`` with seed k of ``b``); in each replicate Δ is the
mean over the pairs of their Δ_k (every pair sees the same drawn images), and the interval is the percentile
interval of those means. The point estimate is the mean of the pairs' Δ_k on the full test set. The two models are
called different only when the interval excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mdfnet.evaluation.coco import EvaluationError, GroundTruth, parse_ground_truth
from mdfnet.evaluation.evaluator import evaluate, percentile_interval, replicate_ap, resample_images


@dataclass(frozen=True)
class Scored:
    """One model's detections on a test set (COCO ground truth and results) with its scoring settings."""

    gt: dict | GroundTruth
    dets: list
    max_dets: int = 10
    score_threshold: float = 0.05


@dataclass(frozen=True)
class PairedDelta:
    """Δ AP = AP(a) − AP(b) (mean over ``pairs`` seed pairs) with its paired percentile interval.

    ``samples`` Float64[n]: Δ in each replicate (mean over the pairs)."""

    delta: float
    interval: tuple[float, float]
    pairs: int
    n: int
    seed: int
    confidence: float
    samples: np.ndarray = field(repr=False)

    @property
    def verdict(self) -> str:
        """``higher`` / ``lower`` when the interval excludes 0, else ``not different`` (``n/a`` when unknown)."""
        lo, hi = self.interval
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return "n/a"
        return "higher" if lo > 0 else "lower" if hi < 0 else "not different"

    @property
    def verdict_text(self) -> str:
        """:attr:`verdict` as the report and the model card print it (why *not different*)."""
        return "not different (paired CI includes 0)" if self.verdict == "not different" else self.verdict

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {"delta": num(self.delta), "interval": [num(v) for v in self.interval], "pairs": self.pairs,
                "n": self.n, "seed": self.seed, "confidence": self.confidence, "verdict": self.verdict}


def delta_text(delta: PairedDelta | None, digits: int = 2, missing: str = "n/a") -> str:
    """``delta`` as ``+8.52 [+3.10, +14.02]`` in % points (``digits`` decimals); ``missing`` when unknown."""
    if delta is None or not all(math.isfinite(v) for v in (delta.delta, *delta.interval)):
        return missing
    lo, hi = delta.interval
    return f"{100 * delta.delta:+.{digits}f} [{100 * lo:+.{digits}f}, {100 * hi:+.{digits}f}]"


def _parsed(s: Scored) -> GroundTruth:
    return s.gt if isinstance(s.gt, GroundTruth) else parse_ground_truth(s.gt)


def check_same_images(scored: Sequence[Scored]) -> GroundTruth:
    """The common ground truth of ``scored``; :class:`EvaluationError` unless all hold the same images, classes and
    boxes (a paired comparison needs one test set)."""
    gts = [_parsed(s) for s in scored]
    ref = gts[0]
    for i, g in enumerate(gts[1:], 1):
        same = (np.array_equal(g.image_ids, ref.image_ids) and np.array_equal(g.category_ids, ref.category_ids)
                and np.array_equal(g.boxes, ref.boxes) and np.array_equal(g.image_index, ref.image_index)
                and np.array_equal(g.category_index, ref.category_index))
        if not same:
            raise EvaluationError(f"scored set #{i} is not on the same test images as #0 ({g.num_images} vs "
                                  f"{ref.num_images} images, {len(g.boxes)} vs {len(ref.boxes)} boxes): a paired "
                                  "comparison needs both models scored on one test set")
    return ref


def paired_bootstrap(pairs: Sequence[tuple[Scored, Scored]], n: int = 1000, seed: int = 0, overlap: str = "iobb",
                     thresholds: Sequence[float] = (0.5,), confidence: float = 0.95) -> PairedDelta:
    """Paired bootstrap of AP(a) − AP(b) over ``pairs`` of (a, b) scored on the same images (see the module
    docstring); ``n`` replicates drawn with ``seed`` (the same draw for every pair)."""
    if not pairs:
        raise ValueError("paired_bootstrap needs at least one (a, b) pair, got none")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    g = check_same_images([s for pair in pairs for s in pair])
    if g.num_images == 0:
        raise EvaluationError("ground truth has no images to resample")
    weights = resample_images(g.num_images, n, seed)
    deltas, points = [], []
    for a, b in pairs:
        ap = [replicate_ap(g, s.dets, weights, overlap, thresholds, s.max_dets, s.score_threshold) for s in (a, b)]
        deltas.append(ap[0] - ap[1])
        full = [evaluate(g, s.dets, overlap, thresholds, s.max_dets, s.score_threshold).ap for s in (a, b)]
        points.append(full[0] - full[1])
    samples = np.mean(np.stack(deltas), axis=0)  # NaN only where a replicate holds no ground truth at all
    return PairedDelta(float(np.mean(points)), percentile_interval(samples, confidence), len(pairs), n, seed,
                       confidence, samples)


__all__ = ["PairedDelta", "Scored", "check_same_images", "paired_bootstrap"]
