"""Overlap measures between detection and ground-truth boxes (by name: the table ``OVERLAPS[name]``).

Both take xywh boxes broadcastable against each other (``det`` Float64[..., 4], ``gt`` Float64[..., 4]) and
return Float64[...]. The arithmetic follows pycocotools' ``bbIou`` (maskApi.c) operation for operation, so
results are bit-identical to COCOeval's: an intersection with non-positive width or height is 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

OverlapFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _intersection(det: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intersection area (0 where empty) and a mask of non-empty intersections."""
    w = np.minimum(det[..., 2] + det[..., 0], gt[..., 2] + gt[..., 0]) - np.maximum(det[..., 0], gt[..., 0])
    h = np.minimum(det[..., 3] + det[..., 1], gt[..., 3] + gt[..., 1]) - np.maximum(det[..., 1], gt[..., 1])
    hit = (w > 0) & (h > 0)
    return np.where(hit, w * h, 0.0), hit


def box_iou(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU = area(det ∩ gt) / area(det ∪ gt)."""
    inter, hit = _intersection(det, gt)
    union = det[..., 2] * det[..., 3] + gt[..., 2] * gt[..., 3] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=hit)


def box_iobb(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoBB = area(det ∩ gt) / area(det): the share of the predicted box that lies inside the ground truth."""
    inter, hit = _intersection(det, gt)
    area = np.broadcast_to(det[..., 2] * det[..., 3], inter.shape)
    return np.divide(inter, area, out=np.zeros_like(inter), where=hit)


OVERLAPS: dict[str, OverlapFn] = {"iou": box_iou, "iobb": box_iobb}


def get_overlap(name: str) -> OverlapFn:
    try:
        return OVERLAPS[name]
    except KeyError:
        raise ValueError(f"unknown overlap {name!r}; expected one of {sorted(OVERLAPS)}") from None
