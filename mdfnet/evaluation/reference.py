"""pycocotools reference, configured as the MDF-Net authors used it (tests and the benchmark compare to it).

Needs the ``pycocotools`` dev dependency (imported lazily). ``COCOeval`` is set to ``iouType="bbox"``,
``iouThrs = thresholds``, ``maxDets = [max_dets]``, one area range "all" ``[0, 1e10]``, ``useCats = 1``;
detections below ``score_threshold`` are dropped before loading. For IoBB, :class:`IoBBCOCOeval` replaces
``computeIoU`` (the authors' patch): ``area(det ∩ gt) / area(det)``, shape ``[num_dets, num_gts]``. It is
computed by pycocotools' own C routine (``maskUtils.iou``) with every ground truth flagged as crowd: for a crowd
region COCO divides the intersection by the detection's area instead of the union, which is exactly IoBB, so
the reference shares no arithmetic with :mod:`mdfnet.evaluation.overlap`.

Known pycocotools quirk (not reproduced by :func:`mdfnet.evaluation.evaluate`): a ground-truth annotation with
``id`` 0 is recorded as "no match" in ``dtMatches``, so its detection counts as a false positive. Use ids >= 1
(``dataset_to_coco`` does).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from typing import Any

import numpy as np


def _classes():
    from pycocotools import mask as maskUtils
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
            return maskUtils.iou([d["bbox"] for d in dt], [g["bbox"] for g in gt], [1] * len(gt))

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

    Returns ``{"ap", "ar", "precision" [T, R, K], "recall" [T, K], "tp"/"fp"/"fn" Int64[T, K], "per_class":
    {cat_id: {"ap", "ar", "tp", "fp", "fn"}}}`` with AP/AR/precision/recall NaN where COCO has -1; TP/FP/FN
    are counted from ``evalImgs`` (``per_class``: at the first threshold).
    """
    precision = E.eval["precision"][:, :, :, 0, 0]
    recall = E.eval["recall"][:, :, 0, 0]

    def mean(s: np.ndarray) -> float:
        s = s[s > -1]
        return float(np.mean(s)) if s.size else float("nan")

    cat_ids = list(E.params.catIds)
    T, K = len(E.params.iouThrs), len(cat_ids)
    tp, fp, fn = (np.zeros((T, K), dtype=np.int64) for _ in range(3))
    for e in E.evalImgs:
        if e is None:
            continue
        k = cat_ids.index(e["category_id"])
        hits = np.count_nonzero(e["dtMatches"], axis=1)
        tp[:, k] += hits
        fp[:, k] += len(e["dtIds"]) - hits
        fn[:, k] += len(e["gtIds"]) - np.count_nonzero(e["gtMatches"], axis=1)
    per_class = {
        c: {"ap": mean(precision[:, :, k]), "ar": mean(recall[:, k]), "tp": int(tp[0, k]), "fp": int(fp[0, k]),
            "fn": int(fn[0, k])}
        for k, c in enumerate(cat_ids)
    }
    return {"ap": mean(precision), "ar": mean(recall), "precision": np.where(precision > -1, precision, np.nan),
            "recall": np.where(recall > -1, recall, np.nan), "tp": tp, "fp": fp, "fn": fn, "per_class": per_class}


def reference_evaluate(gt: dict, dets: list, overlap: str = "iobb", thresholds: Sequence[float] = (0.5,),
                       max_dets: int = 10, score_threshold: float = 0.05) -> dict[str, Any]:
    """:func:`prepare` → :func:`run` → :func:`summarise`."""
    return summarise(run(prepare(gt, dets, overlap, thresholds, max_dets, score_threshold)))
