"""COCO-style detection evaluation with IoU or IoBB overlap (MDF-Net's metric), sweeps and bootstrap intervals.

``evaluate`` reproduces pycocotools' ``COCOeval`` (bbox, ``useCats=1``, area range "all", ``iouThrs =
thresholds``, ``maxDets = [max_dets]``, detections with ``score >= score_threshold``) to floating-point
rounding, with COCOeval's ``computeIoU`` swapped for IoBB when ``overlap="iobb"``:

- AP of a class = mean of its 101-point interpolated precision; AR of a class = its recall after all kept
  detections; overall AP/AR = mean over the classes that have ground truth (classes without ground truth get
  NaN and are left out, as COCO's ``summarize`` leaves out -1). Several thresholds: AP/AR are means over them.
- TP/FP/FN per class after the score threshold and ``max_dets`` (``tp + fn`` = ground truths of the class).

COCOeval's area range "all" is ``[0, 1e10]`` px², which excludes nothing in images under 100k px a side, so
``area`` fields are not read; ``iscrowd=1`` annotations are rejected (MDF-Net has none). Ties in score keep
COCO's order (per image by file order, across images by image id), and a detection whose best overlap is
shared by several ground truths takes the last of them, as COCOeval's matching loop does.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mdfnet.evaluation.accumulate import REC_THRS, accumulate, interpolated_precision, ranked_by_category
from mdfnet.evaluation.coco import Detections, EvaluationError, GroundTruth, parse_detections, parse_ground_truth
from mdfnet.evaluation.matching import Matches, match
from mdfnet.evaluation.overlap import get_overlap

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

DEFAULT_SWEEP = np.round(np.linspace(0.0, 1.0, 21), 10)


def metric_key(name: str) -> str:
    """A class name as a metric path segment: ``Pulmonary edema`` → ``pulmonary_edema``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _nanmean(x: np.ndarray, axis=None) -> Any:
    """Mean ignoring NaN; NaN (no warning) where everything is NaN."""
    x = np.asarray(x, dtype=np.float64)
    ok = ~np.isnan(x)
    total = np.where(ok, x, 0.0).sum(axis=axis)
    count = ok.sum(axis=axis)
    return np.divide(total, count, out=np.full(np.shape(total), np.nan), where=count > 0)


def _num(x: Any) -> float | None:
    """JSON-safe float: NaN → None."""
    x = float(x)
    return None if math.isnan(x) else x


@dataclass(frozen=True)
class EvalResult:
    """Evaluation at T thresholds over K classes (arrays; convenience views as properties).

    ``precision`` Float64[T, 101, K] and ``recall`` Float64[T, K] (NaN for classes without ground truth);
    ``tp``, ``fp``, ``fn`` Int64[T, K]; ``num_gt``, ``num_dets`` Int64[K] (detections kept after the score
    threshold and ``max_dets``).
    """

    overlap: str
    thresholds: tuple[float, ...]
    max_dets: int
    score_threshold: float
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]
    num_images: int
    precision: np.ndarray = field(repr=False)
    recall: np.ndarray = field(repr=False)
    tp: np.ndarray = field(repr=False)
    fp: np.ndarray = field(repr=False)
    fn: np.ndarray = field(repr=False)
    num_gt: np.ndarray = field(repr=False)
    num_dets: np.ndarray = field(repr=False)

    @property
    def ap_per_class(self) -> np.ndarray:
        """Float64[T, K]: AP of each class at each threshold (NaN without ground truth)."""
        return self.precision.mean(axis=1)

    @property
    def ap_per_threshold(self) -> np.ndarray:
        """Float64[T]: mean AP over classes with ground truth."""
        return _nanmean(self.ap_per_class, axis=1)

    @property
    def ar_per_threshold(self) -> np.ndarray:
        return _nanmean(self.recall, axis=1)

    @property
    def ap(self) -> float:
        """Mean over thresholds and over classes with ground truth (NaN if no class has ground truth)."""
        return float(_nanmean(self.ap_per_class))

    @property
    def ar(self) -> float:
        return float(_nanmean(self.recall))

    def _class_dict(self, t: int | None) -> dict[str, dict[str, Any]]:
        """Per class at threshold index ``t`` (None: AP/AR averaged over thresholds, counts at the first)."""
        ap = self.ap_per_class.mean(axis=0) if t is None else self.ap_per_class[t]
        ar = self.recall.mean(axis=0) if t is None else self.recall[t]
        c = 0 if t is None else t
        return {
            name: {
                "ap": _num(ap[k]),
                "ar": _num(ar[k]),
                "tp": int(self.tp[c, k]),
                "fp": int(self.fp[c, k]),
                "fn": int(self.fn[c, k]),
                "num_gt": int(self.num_gt[k]),
                "num_dets": int(self.num_dets[k]),
            }
            for k, name in enumerate(self.class_names)
        }

    @property
    def per_class(self) -> dict[str, dict[str, Any]]:
        """``{class_name: {"ap", "ar", "tp", "fp", "fn", "num_gt", "num_dets"}}``; AP/AR are None (no ground
        truth) or means over the thresholds; TP/FP/FN are counted at the first threshold."""
        return self._class_dict(None)

    def metrics(self, prefix: str) -> dict[str, float]:
        """Finite metrics for a tracker: ``<prefix>/ap``, ``<prefix>/ar``, ``<prefix>/ap/<class>``,
        ``<prefix>/ar/<class>`` (class names as lower-case ``a_b`` keys; classes without ground truth left out)."""
        out = {f"{prefix}/ap": self.ap, f"{prefix}/ar": self.ar}
        for name, c in self.per_class.items():
            for key in ("ap", "ar"):
                if c[key] is not None:
                    out[f"{prefix}/{key}/{metric_key(name)}"] = c[key]
        return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (NaN → None)."""
        return {
            "ap": _num(self.ap),
            "ar": _num(self.ar),
            "per_class": self.per_class,
            "overlap": self.overlap,
            "thresholds": list(self.thresholds),
            "max_dets": self.max_dets,
            "score_threshold": self.score_threshold,
            "num_images": self.num_images,
            "num_gt": int(self.num_gt.sum()),
            "num_dets": int(self.num_dets.sum()),
            "per_threshold": [
                {
                    "threshold": thr,
                    "ap": _num(self.ap_per_threshold[t]),
                    "ar": _num(self.ar_per_threshold[t]),
                    "tp": int(self.tp[t].sum()),
                    "fp": int(self.fp[t].sum()),
                    "fn": int(self.fn[t].sum()),
                    "per_class": self._class_dict(t),
                }
                for t, thr in enumerate(self.thresholds)
            ],
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per threshold: ``threshold, ap, ar, tp, fp, fn`` overall, then ``<stat>:<class>`` columns."""
        import pandas as pd

        cols: dict[str, Any] = {
            "threshold": list(self.thresholds),
            "ap": self.ap_per_threshold,
            "ar": self.ar_per_threshold,
            "tp": self.tp.sum(axis=1),
            "fp": self.fp.sum(axis=1),
            "fn": self.fn.sum(axis=1),
        }
        for k, name in enumerate(self.class_names):
            cols[f"ap:{name}"] = self.ap_per_class[:, k]
            cols[f"ar:{name}"] = self.recall[:, k]
            cols[f"tp:{name}"] = self.tp[:, k]
            cols[f"fp:{name}"] = self.fp[:, k]
            cols[f"fn:{name}"] = self.fn[:, k]
        return pd.DataFrame(cols)

    def table(self) -> str:
        """Human-readable per-class table."""

        def pct(x: float | None) -> str:
            return "   -  " if x is None else f"{100 * x:6.2f}"

        thr = ", ".join(f"{t:g}" for t in self.thresholds)
        width = max([len("class")] + [len(n) for n in self.class_names] + [len("all")])
        lines = [
            f"{self.overlap.upper()} @ {thr}, maxDets {self.max_dets}, score >= {self.score_threshold:g}, "
            f"{self.num_images} images",
            f"{'class':<{width}}  {'AP%':>6}  {'AR%':>6}  {'TP':>5}  {'FP':>5}  {'FN':>5}  {'GT':>5}",
        ]
        for name, c in self.per_class.items():
            lines.append(f"{name:<{width}}  {pct(c['ap'])}  {pct(c['ar'])}  {c['tp']:>5}  {c['fp']:>5}  "
                         f"{c['fn']:>5}  {c['num_gt']:>5}")
        lines.append(f"{'all':<{width}}  {pct(_num(self.ap))}  {pct(_num(self.ar))}  {int(self.tp[0].sum()):>5}  "
                     f"{int(self.fp[0].sum()):>5}  {int(self.fn[0].sum()):>5}  {int(self.num_gt.sum()):>5}")
        return "\n".join(lines)


@dataclass(frozen=True)
class BootstrapResult:
    """Percentile intervals of AP/AR from resampling images with replacement.

    ``ap``/``ar``: ``(low, high)``; ``per_class``: ``{name: {"ap": (low, high), "ar": (low, high)}}``;
    ``samples_ap``/``samples_ar`` Float64[n] (NaN where a resample holds no ground truth).
    """

    n: int
    seed: int
    confidence: float
    ap: tuple[float, float]
    ar: tuple[float, float]
    per_class: dict[str, dict[str, tuple[float, float]]]
    samples_ap: np.ndarray = field(repr=False)
    samples_ar: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        def iv(pair: tuple[float, float]) -> list[float | None]:
            return [_num(pair[0]), _num(pair[1])]

        return {
            "n": self.n,
            "seed": self.seed,
            "confidence": self.confidence,
            "ap": iv(self.ap),
            "ar": iv(self.ar),
            "per_class": {name: {k: iv(v) for k, v in c.items()} for name, c in self.per_class.items()},
        }


# ------------------------------------------------------------------------------------------------- public
def match_detections(gt: dict | GroundTruth, dets: list, overlap: str, thresholds: Sequence[float], max_dets: int,
                     score_threshold: float) -> tuple[GroundTruth, Matches]:
    """Validate the parameters and inputs, keep detections with ``score >= score_threshold`` and match them at
    every threshold (:func:`mdfnet.evaluation.matching.match`): what AP, the bootstrap and FROC are computed from."""
    overlap_fn = get_overlap(overlap)
    thr = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if thr.ndim != 1 or len(thr) == 0 or not np.all((thr >= 0) & (thr <= 1)):
        raise ValueError(f"thresholds must be a non-empty list of numbers in [0, 1], got {list(np.ravel(thr))}")
    if isinstance(max_dets, bool) or not isinstance(max_dets, int | np.integer) or max_dets < 1:
        raise ValueError(f"max_dets must be a positive integer, got {max_dets!r}")
    if not math.isfinite(score_threshold):
        raise ValueError(f"score_threshold must be a finite number, got {score_threshold!r}")
    g = gt if isinstance(gt, GroundTruth) else parse_ground_truth(gt)
    d: Detections = parse_detections(dets, g)
    kept = d.select(d.scores >= score_threshold)
    logger.debug("%d of %d detections have score >= %g", len(kept), len(d), score_threshold)
    return g, match(g, kept, overlap_fn, thr, int(max_dets))


def evaluate(
    gt: dict | GroundTruth,
    dets: list,
    overlap: str = "iobb",
    thresholds: Sequence[float] = (0.5,),
    max_dets: int = 10,
    score_threshold: float = 0.05,
) -> EvalResult:
    """COCO AP/AR of ``dets`` (COCO results list) against ``gt`` (COCO dict); see the module docstring.

    Raises :class:`EvaluationError` for malformed inputs, ``ValueError`` for bad parameters.
    """
    g, m = match_detections(gt, dets, overlap, thresholds, max_dets, score_threshold)
    acc = accumulate(m, g.num_categories)
    result = EvalResult(
        overlap=overlap,
        thresholds=tuple(float(t) for t in m.thresholds),
        max_dets=int(max_dets),
        score_threshold=float(score_threshold),
        class_names=g.category_names,
        category_ids=tuple(int(c) for c in g.category_ids),
        num_images=g.num_images,
        **acc,
    )
    logger.info("%s AP %.4f AR %.4f over %d images", overlap, result.ap, result.ar, g.num_images)
    return result


def sweep(
    gt: dict | GroundTruth,
    dets: list,
    overlap: str = "iobb",
    thresholds: Sequence[float] = tuple(DEFAULT_SWEEP),
    max_dets: int = 10,
    score_threshold: float = 0.05,
) -> pd.DataFrame:
    """AP/AR/TP/FP/FN per overlap threshold (default 0, 0.05, ..., 1): :meth:`EvalResult.to_frame`."""
    return evaluate(gt, dets, overlap, thresholds, max_dets, score_threshold).to_frame()


def resample_images(num_images: int, n: int, seed: int) -> np.ndarray:
    """Int64[n, num_images]: how often each image is drawn in each of ``n`` resamples with replacement
    (each resample draws ``num_images`` images; rows sum to ``num_images``). Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num_images, size=(n, num_images))
    counts = np.bincount((np.arange(n)[:, None] * num_images + draws).ravel(), minlength=n * num_images)
    return counts.reshape(n, num_images)


def _replicated_class(m: Matches, k: int, idx: np.ndarray, weights: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    """AP and AR ``[n]`` of class ``k`` (detections ``idx`` in ranked order) in each of the ``n`` replicates given by
    the image ``weights`` ``[n, I]`` (NaN where a replicate has no ground truth of the class); chunked in memory."""
    n, n_img = weights.shape
    ap, ar = np.full(n, np.nan), np.full(n, np.nan)
    gt_per_image = np.bincount(m.gt_image[m.gt_category == k], minlength=n_img)
    n_gt = weights @ gt_per_image  # [n]
    hits = m.det_matched[:, idx].astype(np.float64)  # [T, Nk]
    step = max(1, (1 << 22) // max(1, T * len(idx)))
    for lo in range(0, n, step):
        w = weights[lo : lo + step][:, m.det_image[idx]][:, None, :]  # [b, 1, Nk]
        ngt = n_gt[lo : lo + step]
        has = ngt > 0
        tp_cum = np.cumsum(w * hits, axis=-1)
        fp_cum = np.cumsum(w * (1.0 - hits), axis=-1)
        prec, rec = interpolated_precision(tp_cum, fp_cum, np.broadcast_to(np.where(has, ngt, 1.0)[:, None], (len(ngt), T)))
        ap[lo : lo + step] = np.where(has, prec.mean(axis=(1, 2)), np.nan)
        ar[lo : lo + step] = np.where(has, rec.mean(axis=1), np.nan)
    return ap, ar


def percentile_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of the finite ``samples``; (NaN, NaN) when there are none."""
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if len(samples) == 0:
        return (math.nan, math.nan)
    alpha = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(samples, (alpha, 100 - alpha))
    return (float(lo), float(hi))


def _replicates(g: GroundTruth, m: Matches, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AP and AR per class, Float64[n, K], in each replicate given by the image ``weights`` [n, I]."""
    n, K = len(weights), g.num_categories
    ap, ar = np.full((n, K), np.nan), np.full((n, K), np.nan)
    for k, idx in enumerate(ranked_by_category(m, K)):
        ap[:, k], ar[:, k] = _replicated_class(m, k, idx, weights, len(m.thresholds))
    return ap, ar


def replicate_ap(gt: dict | GroundTruth, dets: list, weights: np.ndarray, overlap: str = "iobb",
                 thresholds: Sequence[float] = (0.5,), max_dets: int = 10, score_threshold: float = 0.05) -> np.ndarray:
    """Overall AP Float64[n] of ``dets`` in each replicate given by image ``weights`` Float64[n, I] (how often each
    image, in ascending id order, is drawn: :func:`resample_images`); NaN where a replicate holds no ground truth.
    The same ``weights`` for two detection lists give the paired bootstrap (:mod:`mdfnet.evaluation.paired`)."""
    g, m = match_detections(gt, dets, overlap, thresholds, max_dets, score_threshold)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] != g.num_images:
        raise ValueError(f"weights must be [n, {g.num_images}] (one column per image), got shape {weights.shape}")
    return _nanmean(_replicates(g, m, weights)[0], axis=1)


def bootstrap(
    gt: dict | GroundTruth,
    dets: list,
    n: int = 1000,
    seed: int = 0,
    overlap: str = "iobb",
    thresholds: Sequence[float] = (0.5,),
    max_dets: int = 10,
    score_threshold: float = 0.05,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Percentile intervals for AP/AR by resampling images with replacement ``n`` times.

    Matching is per image, so it is done once; each replicate re-accumulates with every detection and
    ground truth weighted by how often its image was drawn (same curve as duplicating the images).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    g, m = match_detections(gt, dets, overlap, thresholds, max_dets, score_threshold)
    if g.num_images == 0:
        raise EvaluationError("ground truth has no images to resample")
    ap, ar = _replicates(g, m, resample_images(g.num_images, n, seed).astype(np.float64))

    ap_all, ar_all = _nanmean(ap, axis=1), _nanmean(ar, axis=1)
    per_class = {name: {"ap": percentile_interval(ap[:, k], confidence), "ar": percentile_interval(ar[:, k], confidence)}
                 for k, name in enumerate(g.category_names)}
    return BootstrapResult(n=n, seed=seed, confidence=confidence, ap=percentile_interval(ap_all, confidence),
                           ar=percentile_interval(ar_all, confidence), per_class=per_class, samples_ap=ap_all,
                           samples_ar=ar_all)


__all__ = ["REC_THRS", "BootstrapResult", "EvalResult", "bootstrap", "evaluate", "percentile_interval", "replicate_ap",
           "resample_images", "sweep"]
