"""Greedy COCO matching of detections to ground truth, vectorised over (image, category) pairs.

Semantics (pycocotools ``COCOeval.evaluateImg`` with ``useCats=1``, area range "all", no crowd):

- per pair, detections are ordered by score descending (stable: ties keep file order) and cut to ``max_dets``;
- ground truths keep their file order;
- each detection in turn takes, among the still unmatched ground truths whose overlap is
  ``>= min(threshold, 1 - 1e-10)``, the one with the largest overlap (ties: the LAST such ground truth).

Pairs are bucketed by their number of ground truths (powers of two) and padded to ``[P, D, G]``; the only
Python loop runs over detection positions ``d < max_dets``, each step vectorised over thresholds × pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mdfnet.evaluation.coco import Detections, GroundTruth
from mdfnet.evaluation.overlap import OverlapFn

_MAX_CHUNK = 1 << 21  # elements of one padded [P, D, G] overlap block


@dataclass(frozen=True)
class Matches:
    """Matching result for T thresholds.

    Detections kept after ``max_dets`` (Nd of them): ``det_image`` / ``det_category`` Int64[Nd] (indices into
    the ground truth's ids), ``det_rank`` Int64[Nd] (position in its pair, score-descending), ``det_score``
    Float64[Nd], ``det_matched`` Bool[T, Nd]. Ground truths (Ng): ``gt_image`` / ``gt_category`` Int64[Ng],
    ``gt_matched`` Bool[T, Ng].
    """

    thresholds: np.ndarray
    det_image: np.ndarray
    det_category: np.ndarray
    det_rank: np.ndarray
    det_score: np.ndarray
    det_matched: np.ndarray
    gt_image: np.ndarray
    gt_category: np.ndarray
    gt_matched: np.ndarray


def _rank_in_group(sorted_keys: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal keys (``sorted_keys`` Int64[N], sorted)."""
    n = len(sorted_keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    first = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    return np.arange(n) - first


def _greedy(ov: np.ndarray, det_valid: np.ndarray, thr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO greedy matching for a padded block.

    ``ov`` Float64[P, D, G] (padding gts = -inf), ``det_valid`` Bool[P, D], ``thr`` Float64[T] →
    ``det_matched`` Bool[T, P, D], ``gt_matched`` Bool[T, P, G].
    """
    P, D, G = ov.shape
    T = len(thr)
    gt_matched = np.zeros((T, P, G), dtype=bool)
    det_matched = np.zeros((T, P, D), dtype=bool)
    t_thr = thr[:, None, None]
    for d in range(D):
        o = ov[None, :, d, :]  # [1, P, G]
        cand = (o >= t_thr) & ~gt_matched  # [T, P, G]
        val = np.where(cand, o, -np.inf)
        best = G - 1 - np.argmax(val[..., ::-1], axis=-1)  # last maximum, [T, P]
        has = cand.any(axis=-1) & det_valid[None, :, d]
        det_matched[:, :, d] = has
        t_idx, p_idx = np.nonzero(has)
        gt_matched[t_idx, p_idx, best[t_idx, p_idx]] = True
    return det_matched, gt_matched


def match(gt: GroundTruth, dets: Detections, overlap: OverlapFn, thresholds: np.ndarray, max_dets: int) -> Matches:
    """Match ``dets`` (already score-filtered) to ``gt`` at every threshold; see the module docstring."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    thr = np.minimum(thresholds, 1 - 1e-10)
    T = len(thresholds)
    n_img = gt.num_images

    # detections: order by pair (category-major, then image), score descending, file order; cut to max_dets
    dkey = dets.category_index * n_img + dets.image_index
    order = np.lexsort((np.arange(len(dets)), -dets.scores, dkey))
    rank = _rank_in_group(dkey[order])
    order, rank = order[rank < max_dets], rank[rank < max_dets]
    dkey = dkey[order]

    gkey = gt.category_index * n_img + gt.image_index
    gorder = np.argsort(gkey, kind="stable")
    gkey = gkey[gorder]
    grank = _rank_in_group(gkey)

    det_matched = np.zeros((T, len(order)), dtype=bool)
    gt_matched = np.zeros((T, len(gorder)), dtype=bool)

    # only pairs with both detections and ground truths need matching
    pairs = np.intersect1d(dkey, gkey)
    if len(pairs):
        d_in = np.isin(dkey, pairs)
        g_in = np.isin(gkey, pairs)
        d_pair = np.searchsorted(pairs, dkey[d_in])
        g_pair = np.searchsorted(pairs, gkey[g_in])
        d_rows, g_rows = np.flatnonzero(d_in), np.flatnonzero(g_in)
        n_gt = np.bincount(g_pair, minlength=len(pairs))
        n_dt = np.bincount(d_pair, minlength=len(pairs))
        bucket = np.ceil(np.log2(n_gt)).astype(np.int64)  # pairs with ≤ 1, 2, 4, 8 ... gts together
        dboxes, gboxes = dets.boxes[order], gt.boxes[gorder]
        for b in np.unique(bucket):
            members = np.flatnonzero(bucket == b)
            G, D = int(n_gt[members].max()), int(n_dt[members].max())
            step = max(1, _MAX_CHUNK // (D * G))
            for lo in range(0, len(members), step):
                _match_block(
                    members[lo : lo + step], G, D, pairs, d_pair, g_pair, d_rows, g_rows, rank, grank,
                    dboxes, gboxes, overlap, thr, det_matched, gt_matched,
                )  # fmt: skip

    return Matches(
        thresholds=thresholds,
        det_image=dets.image_index[order],
        det_category=dets.category_index[order],
        det_rank=rank,
        det_score=dets.scores[order],
        det_matched=det_matched,
        gt_image=gt.image_index[gorder],
        gt_category=gt.category_index[gorder],
        gt_matched=gt_matched,
    )


def _match_block(members, G, D, pairs, d_pair, g_pair, d_rows, g_rows, rank, grank, dboxes, gboxes, overlap, thr,
                 det_matched, gt_matched) -> None:
    """Pad the pairs ``members`` to ``[P, D, G]``, match, and scatter the flags back (in place)."""
    local = np.full(len(pairs), -1, dtype=np.int64)
    local[members] = np.arange(len(members))
    dl, gl = local[d_pair], local[g_pair]
    dsel, gsel = dl >= 0, gl >= 0
    drow, grow = d_rows[dsel], g_rows[gsel]
    P = len(members)
    db = np.zeros((P, D, 4))
    gb = np.zeros((P, G, 4))
    dvalid = np.zeros((P, D), dtype=bool)
    gvalid = np.zeros((P, G), dtype=bool)
    db[dl[dsel], rank[drow]] = dboxes[drow]
    dvalid[dl[dsel], rank[drow]] = True
    gb[gl[gsel], grank[grow]] = gboxes[grow]
    gvalid[gl[gsel], grank[grow]] = True
    ov = overlap(db[:, :, None, :], gb[:, None, :, :])
    ov = np.where(gvalid[:, None, :], ov, -np.inf)
    dm, gm = _greedy(ov, dvalid, thr)
    det_matched[:, drow] = dm[:, dl[dsel], rank[drow]]
    gt_matched[:, grow] = gm[:, gl[gsel], grank[grow]]
