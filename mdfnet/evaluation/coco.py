"""COCO ground truth / results → validated numpy arrays.

A ground-truth dict is COCO's: ``{"images": [{"id", ...}], "annotations": [{"image_id", "category_id",
"bbox": [x, y, w, h], ...}], "categories": [{"id", "name"}]}``. A results list is COCO's:
``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``. Every problem raises
:class:`EvaluationError` naming the offending entry (its position, and its ``id`` when it has one).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class EvaluationError(ValueError):
    """Malformed ground truth or detections (the message names the offending entry)."""


@dataclass(frozen=True)
class GroundTruth:
    """Validated COCO ground truth.

    ``image_ids`` Int64[I] (ascending, as COCOeval orders images); ``category_ids`` Int64[K] (ascending);
    ``category_names`` K names; ``boxes`` Float64[N, 4] xywh; ``image_index`` Int64[N] into ``image_ids``;
    ``category_index`` Int64[N] into ``category_ids``. Annotations keep their order in the file.
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    category_names: tuple[str, ...]
    boxes: np.ndarray
    image_index: np.ndarray
    category_index: np.ndarray

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def num_categories(self) -> int:
        return len(self.category_ids)


@dataclass(frozen=True)
class Detections:
    """Validated COCO results: ``boxes`` Float64[N, 4] xywh, ``scores`` Float64[N], ``image_index`` and
    ``category_index`` Int64[N] into the ground truth's ``image_ids`` / ``category_ids``; file order kept."""

    boxes: np.ndarray
    scores: np.ndarray
    image_index: np.ndarray
    category_index: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, mask: np.ndarray) -> Detections:
        return Detections(self.boxes[mask], self.scores[mask], self.image_index[mask], self.category_index[mask])


# ----------------------------------------------------------------------------------------------- helpers
def _label(kind: str, i: int, entry: Any) -> str:
    if isinstance(entry, dict) and "id" in entry:
        return f"{kind} #{i} (id={entry['id']})"
    return f"{kind} #{i}"


def _field(entries: Sequence[Any], key: str, kind: str) -> list[Any]:
    """``[e[key] for e in entries]``, or an error naming the first entry that is not a dict or lacks ``key``."""
    try:
        return [e[key] for e in entries]
    except (KeyError, TypeError, IndexError):
        for i, e in enumerate(entries):
            if not isinstance(e, dict):
                raise EvaluationError(f"{kind} #{i}: expected an object, got {type(e).__name__} {e!r:.60}") from None
            if key not in e:
                raise EvaluationError(f"{_label(kind, i, e)}: missing key {key!r}") from None
        raise


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)


def _typed_column(entries: Sequence[Any], key: str, kind: str, integer: bool) -> np.ndarray:
    """``key`` of every entry as Int64[N] (``integer``) or finite Float64[N]; errors name the first bad entry."""
    values = _field(entries, key, kind)
    arr = np.asarray(values) if values else np.zeros(0, dtype=np.int64 if integer else np.float64)
    ok_kinds, check, what = ("iu", _is_int, "an integer") if integer else ("iuf", _is_number, "a number")
    if arr.ndim != 1 or arr.dtype.kind not in ok_kinds:
        for i, v in enumerate(values):
            if not check(v):
                raise EvaluationError(f"{_label(kind, i, entries[i])}: {key} must be {what}, got {v!r:.60}")
    arr = arr.astype(np.int64 if integer else np.float64)
    bad = np.flatnonzero(~np.isfinite(arr)) if not integer else []
    if len(bad):
        i = int(bad[0])
        raise EvaluationError(f"{_label(kind, i, entries[i])}: {key} {arr[i]} is not finite")
    return arr


def _int_column(entries: Sequence[Any], key: str, kind: str) -> np.ndarray:
    return _typed_column(entries, key, kind, integer=True)


def _number_column(entries: Sequence[Any], key: str, kind: str) -> np.ndarray:
    return _typed_column(entries, key, kind, integer=False)


def _bbox_column(entries: Sequence[Any], kind: str) -> np.ndarray:
    """Float64[N, 4] xywh, finite, width and height ≥ 0."""
    values = _field(entries, "bbox", kind)
    try:
        arr = np.asarray(values) if values else np.zeros((0, 4))
        ok = arr.ndim == 2 and arr.shape[1] == 4 and arr.dtype.kind in "biuf"
        arr = arr.astype(np.float64)
    except (ValueError, TypeError):
        ok = False
    if not ok:
        for i, v in enumerate(values):
            if not (isinstance(v, list | tuple) and len(v) == 4 and all(_is_number(c) for c in v)):
                raise EvaluationError(
                    f"{_label(kind, i, entries[i])}: bbox must be 4 numbers [x, y, width, height], got {v!r:.80}"
                )
        raise EvaluationError(f"{kind}s: bbox values could not be read as an [N, 4] array")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if len(bad):
        i = int(bad[0])
        raise EvaluationError(f"{_label(kind, i, entries[i])}: bbox {arr[i].tolist()} has a non-finite value")
    for col, name in ((2, "width"), (3, "height")):
        bad = np.flatnonzero(arr[:, col] < 0)
        if len(bad):
            i = int(bad[0])
            raise EvaluationError(f"{_label(kind, i, entries[i])}: bbox {name} {arr[i, col]} is negative")
    return arr


def _ids_text(ids: np.ndarray) -> str:
    if len(ids) == 0:
        return "[]"
    if len(ids) > 2 and ids[-1] - ids[0] == len(ids) - 1:
        return f"[{ids[0]}..{ids[-1]}]"
    shown = ", ".join(str(v) for v in ids[:10])
    return f"[{shown}{', ...' if len(ids) > 10 else ''}]"


def _unique_ids(entries: Sequence[Any], kind: str) -> np.ndarray:
    ids = _int_column(entries, "id", kind)
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][0]
        where = np.flatnonzero(ids == dup)
        raise EvaluationError(f"{kind} #{where[1]}: duplicate id {dup} (first used by {kind} #{where[0]})")
    return ids


def _lookup(values: np.ndarray, table: np.ndarray, entries: Sequence[Any], kind: str, key: str, what: str) -> np.ndarray:
    """Index of each value in the sorted id ``table``; error naming the first value that is not there."""
    pos = np.searchsorted(table, values)
    found = pos < len(table)
    found[found] = table[pos[found]] == values[found]
    if not found.all():
        i = int(np.flatnonzero(~found)[0])
        raise EvaluationError(f"{_label(kind, i, entries[i])}: {key} {values[i]} not in {what} {_ids_text(table)}")
    return pos.astype(np.int64)


def _require_list(obj: Any, what: str) -> list:
    if not isinstance(obj, list):
        raise EvaluationError(f"{what} must be a list, got {type(obj).__name__}")
    return obj


# ------------------------------------------------------------------------------------------------ parsing
def parse_ground_truth(gt: dict) -> GroundTruth:
    """Validate a COCO ground-truth dict. ``iscrowd`` annotations are rejected (not used by MDF-Net)."""
    if not isinstance(gt, dict):
        raise EvaluationError(f"ground truth must be a COCO object (dict), got {type(gt).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in gt:
            raise EvaluationError(f"ground truth: missing key {key!r} (have {sorted(gt)})")
        _require_list(gt[key], f"ground truth {key!r}")
    images, anns, cats = gt["images"], gt["annotations"], gt["categories"]

    image_ids = np.sort(_unique_ids(images, "image"))
    cat_ids_in_file = _unique_ids(cats, "category")
    order = np.argsort(cat_ids_in_file, kind="stable")
    names = []
    for i in order:
        c = cats[int(i)]
        name = c.get("name", str(c["id"]))
        if not isinstance(name, str):
            raise EvaluationError(f"{_label('category', int(i), c)}: name must be a string, got {name!r:.60}")
        if name in names:
            raise EvaluationError(f"{_label('category', int(i), c)}: duplicate name {name!r} (per-class results are "
                                  "keyed by name)")
        names.append(name)
    category_ids = cat_ids_in_file[order]

    boxes = _bbox_column(anns, "annotation")
    img_col = _int_column(anns, "image_id", "annotation")
    cat_col = _int_column(anns, "category_id", "annotation")
    crowd = [i for i, a in enumerate(anns) if a.get("iscrowd", 0)]
    if crowd:
        i = crowd[0]
        raise EvaluationError(f"{_label('annotation', i, anns[i])}: iscrowd=1 is not supported (use iscrowd 0)")
    if any("id" in a for a in anns):
        _unique_ids([a for a in anns if "id" in a], "annotation")
    return GroundTruth(
        image_ids=image_ids,
        category_ids=category_ids,
        category_names=tuple(names),
        boxes=boxes,
        image_index=_lookup(img_col, image_ids, anns, "annotation", "image_id", "images"),
        category_index=_lookup(cat_col, category_ids, anns, "annotation", "category_id", "categories"),
    )


def parse_detections(dets: list, gt: GroundTruth) -> Detections:
    """Validate a COCO results list against the (parsed) ground truth."""
    _require_list(dets, "detections")
    boxes = _bbox_column(dets, "detection")
    scores = _number_column(dets, "score", "detection")
    img_col = _int_column(dets, "image_id", "detection")
    cat_col = _int_column(dets, "category_id", "detection")
    return Detections(
        boxes=boxes,
        scores=scores,
        image_index=_lookup(img_col, gt.image_ids, dets, "detection", "image_id", "ground-truth images"),
        category_index=_lookup(cat_col, gt.category_ids, dets, "detection", "category_id", "categories"),
    )


def load_json(path: str | Path, what: str) -> Any:
    """Read a JSON file; a missing or unparsable file raises :class:`EvaluationError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{what} file {path} not found")
    try:
        with path.open() as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise EvaluationError(f"{what} file {path} is not valid JSON: {e}") from None
