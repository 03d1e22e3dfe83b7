"""pycocotools reference, configured as the MDF-Net authors used it (tests and the benchmark compare to it).

Needs the ``pycocotools`` dev dependency (imported lazily). ``COCOeval`` is set to ``iouType="bbox"``,
``iouThrs = thresholds``, ``maxDets = [max_dets]``, one area range "all" ``[0, 1e10]``, ``useCats = 1``;
detections below ``score_threshold`` are dropped before loading. For IoBB, :class:`IoBBCOCOeval` replaces
``computeIoU`` (the authors' patch): ``area(det ∩ gt) / area(det)``, shape ``[num_dets, num_gts]``.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from typing import Any

import numpy as np


def _iobb_matrix(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """IoBB of xywh boxes ``d`` Float64[D, 4] against ``g`` Float64[G, 4] → Float64[D, G]."""
    d, g = d[:, None, :], g[None, :, :]
    w = np.minimum(d[..., 2] + d[..., 0], g[..., 2] + g[..., 0]) - np.maximum(d[..., 0], g[..., 0])
    h = np.minimum(d[..., 3] + d[..., 1], g[..., 3] + g[..., 1]) - np.maximum(d[..., 1], g[..., 1])
    hit = (w > 0) & (h > 0)
    inter = np.where(hit, w * h, 0.0)
    area = np.broadcast_to(d[..., 2] * d[..., 3], inter.shape)
    return np.divide(inter, area, out=np.zeros_like(inter), where=hit)


def _classes():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    class IoBBCOCOeval(COCOeval):
        """COCOeval with IoBB instead of IoU (same detection sort and maxDets cut as ``computeIoU``)."""

        def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools' name)
            p = self.params
            gt = self._gts[imgId, catId]
            dt = self._dts[imgId, catId]
            if len(gt) == 0 and len(dt) == 0:
                return []
            inds = np.argsort([-d["score"] for d in dt], kind="mergesort")
            dt = [dt[i] for i in inds][: p.maxDets[-1]]
            g = np.asarray([o["bbox"] for o in gt], dtype=np.float64).reshape(-1, 4)
            d = np.asarray([o["bbox"] for o in dt], dtype=np.float64).reshape(-1, 4)
            return _iobb_matrix(d, g)

    return COCO, COCOeval, IoBBCOCOeval


def prepare(gt: dict, dets: list, overlap: str = "iobb", thresholds: Sequence[float] = (0.5,), max_dets: int = 10,
            score_threshold: float = 0.05) -> Any:
    """Load ``gt`` and ``dets`` into a configured COCOeval (not yet run). Inputs are deep-copied."""
    COCO, COCOeval, IoBBCOCOeval = _classes()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        kept = [copy.deepcopy(d) for d in dets if d["score"] >= score_threshold]
        if kept:
            coco_dt = coco_gt.loadRes(kept)
        else:  # loadRes cannot take an empty list
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(gt["images"]), "categories": copy.deepcopy(gt["categories"]),
                               "annotations": []}
            coco_dt.createIndex()
        cls = {"iou": COCOeval, "iobb": IoBBCOCOeval}[overlap]
        E = cls(coco_gt, coco_dt, iouType="bbox")
    p = E.params
    p.iouThrs = np.asarray(thresholds, dtype=np.float64)
    p.maxDets = [int(max_dets)]
    p.areaRng = [[0**2, 1e5**2]]
    p.areaRngLbl = ["all"]
    p.useCats = 1
    return E


def run(E: Any) -> Any:
    """COCOeval ``evaluate()`` + ``accumulate()`` (their prints swallowed)."""
    with contextlib.redirect_stdout(io.StringIO()):
        E.evaluate()
        E.accumulate()
    return E


def summarise(E: Any) -> dict[str, Any]:
    """AP/AR as COCO's ``summarize`` computes them (mean over entries > -1), per category id too.

    Returns ``{"ap", "ar", "precision" [T, R, K], "recall" [T, K], "per_class": {cat_id: {"ap", "ar", "tp",
    "fp", "fn"}}}`` with AP/AR NaN where COCO has -1; TP/FP/FN at the first threshold from ``evalImgs``.
    """
    precision = E.eval["precision"][:, :, :, 0, 0]
    recall = E.eval["recall"][:, :, 0, 0]

    def mean(s: np.ndarray) -> float:
        s = s[s > -1]
        return float(np.mean(s)) if s.size else float("nan")

    per_class = {}
    cat_ids = list(E.params.catIds)
    counts = {c: [0, 0, 0] for c in cat_ids}
    for e in E.evalImgs:
        if e is None:
            continue
        tp = int(np.count_nonzero(e["dtMatches"][0]))
        counts[e["category_id"]][0] += tp
        counts[e["category_id"]][1] += len(e["dtIds"]) - tp
        counts[e["category_id"]][2] += len(e["gtIds"]) - int(np.count_nonzero(e["gtMatches"][0]))
    for k, c in enumerate(cat_ids):
        tp, fp, fn = counts[c]
        per_class[c] = {"ap": mean(precision[:, :, k]), "ar": mean(recall[:, k]), "tp": tp, "fp": fp, "fn": fn}
    return {"ap": mean(precision), "ar": mean(recall), "precision": precision, "recall": recall,
            "per_class": per_class}


def reference_evaluate(gt: dict, dets: list, overlap: str = "iobb", thresholds: Sequence[float] = (0.5,),
                       max_dets: int = 10, score_threshold: float = 0.05) -> dict[str, Any]:
    """:func:`prepare` → :func:`run` → :func:`summarise`."""
    return summarise(run(prepare(gt, dets, overlap, thresholds, max_dets, score_threshold)))
