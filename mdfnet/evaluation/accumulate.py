"""Precision/recall accumulation as in pycocotools ``COCOeval.accumulate`` (101-point interpolation).

Per category, all kept detections of all images are ranked by score descending; ties keep COCOeval's order
(image id ascending, then the per-image order). Cumulative TP/FP counts give recall ``tp / n_gt`` and precision
``tp / (tp + fp + eps)``; precision is made monotone (running maximum from the right) and read at the 101
recall thresholds 0, 0.01, ..., 1 (0 beyond the largest recall reached). Recall is the last cumulative recall.

The counts may be weighted (the bootstrap weights each detection by how often its image was drawn), which
gives the same curve as repeating the detections.
"""

from __future__ import annotations

import numpy as np

from mdfnet.evaluation.matching import Matches

REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
"""The 101 recall thresholds, built exactly as pycocotools' ``Params.setDetParams`` builds them."""


def interpolated_precision(tp_cum: np.ndarray, fp_cum: np.ndarray, n_gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO's interpolated precision and final recall.

    ``tp_cum``, ``fp_cum``: Float64[..., N] cumulative counts along ranked detections; ``n_gt``: Float64[...]
    (> 0). Returns ``precision`` Float64[..., R=101] and ``recall`` Float64[...].
    """
    lead, n = tp_cum.shape[:-1], tp_cum.shape[-1]
    if n == 0:
        return np.zeros((*lead, len(REC_THRS))), np.zeros(lead)
    rc = tp_cum / np.asarray(n_gt, dtype=np.float64)[..., None]
    pr = tp_cum / (fp_cum + tp_cum + np.spacing(1))
    env = np.flip(np.maximum.accumulate(np.flip(pr, axis=-1), axis=-1), axis=-1)
    rc2, env2 = rc.reshape(-1, n), env.reshape(-1, n)
    idx = np.empty((rc2.shape[0], len(REC_THRS)), dtype=np.int64)
    for row in range(rc2.shape[0]):  # one searchsorted per curve (rows = thresholds × categories / replicates)
        idx[row] = np.searchsorted(rc2[row], REC_THRS, side="left")
    inside = idx < n
    q = np.where(inside, np.take_along_axis(env2, np.minimum(idx, n - 1), axis=1), 0.0)
    return q.reshape(*lead, len(REC_THRS)), rc[..., -1]


def ranked_by_category(m: Matches, num_categories: int) -> list[np.ndarray]:
    """Per category, the indices of its kept detections in COCOeval's global ranking order."""
    order = np.lexsort((m.det_rank, m.det_image, -m.det_score, m.det_category))
    bounds = np.searchsorted(m.det_category[order], np.arange(num_categories + 1))
    return [order[bounds[k] : bounds[k + 1]] for k in range(num_categories)]


def accumulate(m: Matches, num_categories: int) -> dict[str, np.ndarray]:
    """Unweighted accumulation of every category.

    Returns ``precision`` Float64[T, R, K] and ``recall`` Float64[T, K] (NaN for categories without ground
    truth), ``tp``/``fp``/``fn`` Int64[T, K], ``num_gt`` and ``num_dets`` Int64[K].
    """
    T, K = len(m.thresholds), num_categories
    precision = np.full((T, len(REC_THRS), K), np.nan)
    recall = np.full((T, K), np.nan)
    num_gt = np.bincount(m.gt_category, minlength=K)
    num_dets = np.bincount(m.det_category, minlength=K)
    tp = np.zeros((T, K), dtype=np.int64)
    np.add.at(tp, (slice(None), m.det_category), m.det_matched)
    fp = num_dets[None, :] - tp
    fn = num_gt[None, :] - tp
    for k, idx in enumerate(ranked_by_category(m, K)):
        if num_gt[k] == 0:
            continue
        hits = m.det_matched[:, idx]
        tp_cum = np.cumsum(hits, axis=1).astype(np.float64)
        fp_cum = np.cumsum(~hits, axis=1).astype(np.float64)
        precision[:, :, k], recall[:, k] = interpolated_precision(tp_cum, fp_cum, np.full(T, float(num_gt[k])))
    return {"precision": precision, "recall": recall, "tp": tp, "fp": fp, "fn": fn, "num_gt": num_gt,
            "num_dets": num_dets}
