"""Converters between MDF-Net objects and COCO dicts.

- :func:`dataset_to_coco`: a dataset split (``MDFDataset`` or anything with its cheap API: ``len(ds)``,
  ``ds.ids``, ``ds.target(i)``, ``ds.image_size``, ``ds.classes``) → COCO ground truth, image id = index + 1.
- :func:`outputs_to_coco`: torchvision-style detection outputs (``boxes`` xyxy, ``labels``, ``scores``)
  → COCO results list; :func:`coco_to_outputs` is the reverse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mdfnet.evaluation.coco import EvaluationError, _bbox_column, _int_column, _number_column


def _np(x: Any, dtype) -> np.ndarray:
    """Tensor (any device) or array-like → numpy array of ``dtype``."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """Float64[N, 4] xyxy → Float64[N, 4] xywh (COCO's ``bbox``); the one conversion, also used by batch scoring."""
    boxes = boxes.reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def dataset_to_coco(ds: Any, description: str | None = None) -> dict[str, Any]:
    """COCO ground truth of a dataset split.

    Images: ``id = i + 1``, ``file_name = ds.ids[i]``, ``width = height = ds.image_size``. Annotations: one per
    target box (xyxy → xywh, ``area = w * h``, ``iscrowd = 0``, ids 1..N). Categories: ``ds.classes`` with
    ids 1..K (the dataset's label ids).
    """
    size = int(ds.image_size)
    classes = tuple(ds.classes)
    images, annotations = [], []
    for i in range(len(ds)):
        images.append({"id": i + 1, "file_name": str(ds.ids[i]), "width": size, "height": size})
        target = ds.target(i)
        boxes = xyxy_to_xywh(_np(target["boxes"], np.float64))
        labels = _np(target["labels"], np.int64).reshape(-1)
        if len(labels) != len(boxes):
            raise EvaluationError(f"item {i} ({ds.ids[i]}): {len(boxes)} boxes but {len(labels)} labels")
        bad = (labels < 1) | (labels > len(classes))
        if bad.any():
            raise EvaluationError(f"item {i} ({ds.ids[i]}): label {labels[bad][0]} not in 1..{len(classes)}")
        for box, label in zip(boxes.tolist(), labels.tolist(), strict=True):
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": i + 1,
                "category_id": label,
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 0,
            })
    gt: dict[str, Any] = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name} for k, name in enumerate(classes)],
    }
    if description:
        gt["info"] = {"description": description}
    return gt


def outputs_to_coco(outputs: Sequence[dict[str, Any]], image_ids: Sequence[int]) -> list[dict[str, Any]]:
    """torchvision-style outputs (``boxes`` Float[N, 4] xyxy, ``labels`` Int64[N], ``scores`` Float[N]; tensors
    or arrays), one per image, → COCO results ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``."""
    if len(outputs) != len(image_ids):
        raise EvaluationError(f"{len(outputs)} outputs but {len(image_ids)} image ids")
    results: list[dict[str, Any]] = []
    for j, (out, image_id) in enumerate(zip(outputs, image_ids, strict=True)):
        missing = [k for k in ("boxes", "labels", "scores") if k not in out]
        if missing:
            raise EvaluationError(f"output #{j}: missing key(s) {missing}")
        boxes = xyxy_to_xywh(_np(out["boxes"], np.float64)).tolist()
        labels = _np(out["labels"], np.int64).reshape(-1).tolist()
        scores = _np(out["scores"], np.float64).reshape(-1).tolist()
        if not len(boxes) == len(labels) == len(scores):
            raise EvaluationError(
                f"output #{j}: {len(boxes)} boxes, {len(labels)} labels, {len(scores)} scores (must be equal)"
            )
        iid = int(image_id)
        results.extend(
            {"image_id": iid, "category_id": c, "bbox": b, "score": s}
            for b, c, s in zip(boxes, labels, scores, strict=True)
        )
    return results


def coco_to_outputs(results: Sequence[dict[str, Any]], image_ids: Sequence[int]) -> list[dict[str, Any]]:
    """COCO results → one torchvision-style output per ``image_ids`` entry (``boxes`` Float32[N, 4] xyxy,
    ``labels`` Int64[N], ``scores`` Float32[N]), detections in file order; images without results get N = 0.

    Raises :class:`EvaluationError` naming the first malformed result or one whose image is not listed."""
    import torch

    results = list(results)
    img = _int_column(results, "image_id", "detection")
    xywh = _bbox_column(results, "detection")
    labels = _int_column(results, "category_id", "detection")
    scores = _number_column(results, "score", "detection")
    ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
    position = {int(iid): j for j, iid in enumerate(ids)}
    if len(position) != len(ids):
        raise EvaluationError(f"image_ids must be unique, got {len(ids) - len(position)} repeated")
    where = np.asarray([position.get(int(i), -1) for i in img], dtype=np.int64)
    if (where < 0).any():
        i = int(np.flatnonzero(where < 0)[0])
        raise EvaluationError(f"detection #{i}: image_id {img[i]} not among the {len(ids)} image ids")
    order = np.argsort(where, kind="stable")
    bounds = np.searchsorted(where[order], np.arange(len(ids) + 1))
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    outputs = []
    for j in range(len(ids)):
        rows = order[bounds[j] : bounds[j + 1]]
        outputs.append({
            "boxes": torch.as_tensor(xyxy[rows].reshape(-1, 4), dtype=torch.float32),
            "labels": torch.as_tensor(labels[rows], dtype=torch.int64),
            "scores": torch.as_tensor(scores[rows], dtype=torch.float32),
        })
    return outputs
