"""Batch scoring (``mdfnet predict --batch studies.csv --images DIR --out predictions.parquet``).

``studies.csv`` holds one row per study: ``image`` (a file name under ``DIR``: JPEG, PNG or DICOM), an optional
``study`` id, and the ten raw triage columns (:data:`~mdfnet.serving.inputs.FIELDS`) exactly as the pyfunc takes
them (ints, floats, numbers as text, empty cells, pain as text); other columns are ignored. Rows are scored in
chunks through the same model call as a single request (an MLflow pyfunc model or a checkpoint:
:func:`~mdfnet.serving.predictor.open_model`), so each chunk's forward passes are batched and the answers are those
of ``mdfnet predict --image``. A bad row never stops the batch: a missing, unreadable or undecodable image and an
implausible value (the refusal :func:`~mdfnet.serving.inputs.clean_request` gives a single request) are
itemised in ``exclusions.csv`` beside the output (:data:`EXCLUSION_COLUMNS`) and the row is left out.

Output: Parquet (``row``, ``image`` + :data:`~mdfnet.serving.predictor.OUTPUT_COLUMNS`, boxes in each image's
original pixels, plus :data:`~mdfnet.serving.explain.EXPLAIN_COLUMNS` with ``explain``) or, for a ``.json`` name,
a COCO results list (``image_id`` = ``row + 1``, ``category_id`` 1..5 in :data:`mdfnet.data.schema.CLASSES`
order, ``bbox`` ``[x, y, w, h]``, ``score``, and ``study``). ``row`` is the study's 0-based position among
``studies.csv``'s data rows (pandas ``iloc``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mdfnet.data import schema
from mdfnet.serving.inputs import FIELDS, RequestError, encode_image

log = logging.getLogger(__name__)

EXCLUSIONS_FILE = "exclusions.csv"
"""Written beside the output: one line per study left out."""
EXCLUSION_COLUMNS: tuple[str, ...] = ("row", "study", "field", "value", "reason")
DEFAULT_CHUNK = 32
"""Studies per model call (each call batches its forward passes)."""
STUDIES_FILE = "studies.csv"
"""What :func:`studies_from_split` writes beside the output for ``--from-split``."""
_ROW = re.compile(r"^row (\d+): (.*)$", re.DOTALL)
_FIELD = re.compile(r"^(\w+)=")

Scorer = Callable[..., pd.DataFrame]
"""``score(request_frame, score_threshold, explain=False) -> detections`` (:func:`open_model`)."""


class BatchError(ValueError):
    """The batch as a whole cannot be scored (a file, a missing column); the message names it."""


@dataclass
class BatchResult:
    """Detections of the scored studies, the exclusions, and the time the scoring took."""

    detections: pd.DataFrame
    exclusions: pd.DataFrame
    n_studies: int
    seconds: float
    files: list[Path] = field(default_factory=list)

    @property
    def n_scored(self) -> int:
        return self.n_studies - len(self.exclusions)

    @property
    def studies_per_s(self) -> float:
        return self.n_scored / self.seconds if self.seconds > 0 else float("nan")


def read_studies(path: str | Path) -> pd.DataFrame:
    """``studies.csv`` as pandas reads it (``image`` and ``study`` as text); raises :class:`BatchError` naming a
    missing column."""
    path = Path(path)
    try:
        studies = pd.read_csv(path, dtype={"image": "string", "study": "string"})
    except (OSError, ValueError) as e:
        raise BatchError(f"cannot read studies from {path}: {e}") from None
    missing = [c for c in ("image", *FIELDS) if c not in studies.columns]
    if missing:
        raise BatchError(f"{path}: missing column(s) {missing}; expected image, [study,] {', '.join(FIELDS)} "
                         "(an empty cell for an unknown value)")
    ignored = [c for c in studies.columns if c not in ("image", "study", *FIELDS)]
    if ignored:
        log.info("%s: ignoring column(s) %s", path, ignored)
    return studies.reset_index(drop=True)


def _excluded(row: int, study: str, fld: str, value: Any, reason: str) -> dict[str, Any]:
    return {"row": row, "study": study, "field": fld, "value": "" if pd.isna(value) else str(value),
            "reason": reason}


def _image_bytes(images_dir: Path, name: Any) -> tuple[bytes | None, str]:
    """Read ``images_dir / name``; ``(None, why)`` when it cannot be (missing, outside ``images_dir``, unreadable)."""
    if pd.isna(name) or not str(name).strip():
        return None, "no image file name"
    path = (images_dir / str(name)).resolve()
    if not path.is_relative_to(images_dir.resolve()):
        return None, f"the file name leads outside {images_dir}"
    if not path.is_file():
        return None, f"no such file under {images_dir}"
    try:
        return path.read_bytes(), ""
    except OSError as e:
        return None, f"cannot read the file ({e.strerror or e})"


def _request(studies: pd.DataFrame, rows: range, images_dir: Path, names: list[str],
             exclusions: list[dict[str, Any]]) -> pd.DataFrame:
    """The chunk ``rows`` as a request (study = row number, so repeated study ids stay apart); rows whose image
    cannot be read are added to ``exclusions`` instead."""
    records = []
    for i in rows:
        data, why = _image_bytes(images_dir, studies.at[i, "image"])
        if data is None:
            exclusions.append(_excluded(i, names[i], "image", studies.at[i, "image"], why))
            continue
        records.append({"study": str(i), "image": encode_image(data), **{f: studies.at[i, f] for f in FIELDS}})
    return pd.DataFrame(records, columns=["study", "image", *FIELDS])


def _score_chunk(score: Scorer, frame: pd.DataFrame, studies: pd.DataFrame, names: list[str],
                 exclusions: list[dict[str, Any]], threshold: float, explain: bool) -> pd.DataFrame | None:
    """Score ``frame``; a refused row is itemised and dropped and the rest scored again (a refusal comes before
    any forward pass: cleaning and decoding are checked first). Other refusals stop the batch."""
    while len(frame):
        try:
            return score(frame, threshold, explain=explain)
        except RequestError as e:
            hit = _ROW.match(str(e))
            if hit is None or int(hit.group(1)) >= len(frame):
                raise BatchError(f"the model refused the batch: {e}") from None
            k, reason = int(hit.group(1)), hit.group(2)
            i = int(frame.at[k, "study"])
            named = _FIELD.match(reason)
            fld = named.group(1) if named and named.group(1) in FIELDS else "image"
            value = studies.at[i, fld] if fld in FIELDS else studies.at[i, "image"]
            exclusions.append(_excluded(i, names[i], fld, value, reason))
            frame = frame.drop(index=k).reset_index(drop=True)
    return None


def score_batch(score: Scorer, studies: pd.DataFrame, images_dir: str | Path, score_threshold: float = 0.0,
                explain: bool = False, chunk_size: int = DEFAULT_CHUNK, progress: bool = True) -> BatchResult:
    """Score every row of ``studies`` (:func:`read_studies`) with ``score``; bad rows go to the exclusions."""
    from tqdm import tqdm

    if chunk_size < 1:
        raise BatchError(f"chunk size {chunk_size}: expected at least 1")
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise BatchError(f"--images {images_dir}: not a folder")
    names = ([str(s) if not pd.isna(s) else str(i) for i, s in enumerate(studies["study"])]
             if "study" in studies.columns else [str(i) for i in range(len(studies))])
    exclusions: list[dict[str, Any]] = []
    parts = []
    t0 = time.perf_counter()
    with tqdm(total=len(studies), desc="scoring", unit="study", disable=not progress) as bar:
        for start in range(0, len(studies), chunk_size):
            rows = range(start, min(start + chunk_size, len(studies)))
            frame = _request(studies, rows, images_dir, names, exclusions)
            dets = _score_chunk(score, frame, studies, names, exclusions, score_threshold, explain)
            if dets is not None and len(dets):
                parts.append(dets)
            bar.update(len(rows))
    seconds = time.perf_counter() - t0
    detections = _finish(parts, studies, names)
    excl = pd.DataFrame(exclusions, columns=list(EXCLUSION_COLUMNS)).sort_values("row", kind="stable")
    result = BatchResult(detections, excl.reset_index(drop=True), len(studies), seconds)
    log.info("scored %d of %d studies in %.1f s (%.1f studies/s); %d excluded, %d detections", result.n_scored,
             result.n_studies, seconds, result.studies_per_s, len(excl), len(detections))
    return result


def _finish(parts: list[pd.DataFrame], studies: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Concatenated detections with ``row`` and ``image`` first and the real study ids back."""
    from mdfnet.serving.predictor import OUTPUT_COLUMNS

    if not parts:
        return pd.DataFrame(columns=["row", "image", *OUTPUT_COLUMNS])
    dets = pd.concat(parts, ignore_index=True)
    rows = dets["study"].astype("int64")
    dets["study"] = [names[i] for i in rows]
    dets.insert(0, "image", studies["image"].astype("object").to_numpy()[rows.to_numpy()])
    dets.insert(0, "row", rows.to_numpy())
    return dets


def write_batch(result: BatchResult, out: str | Path) -> list[Path]:
    """Write the detections (Parquet, or a COCO results list for a ``.json`` name) and ``exclusions.csv``
    beside them; returns the paths (also kept in ``result.files``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dets = result.detections
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps(to_coco_results(dets)))
    else:
        dets.to_parquet(out, index=False)
    excl_path = out.parent / EXCLUSIONS_FILE
    result.exclusions.to_csv(excl_path, index=False)
    result.files = [out, excl_path]
    return result.files


def to_coco_results(dets: pd.DataFrame) -> list[dict[str, Any]]:
    """Batch detections → COCO results (module docstring); boxes ``[x, y, w, h]`` in original pixels."""
    import numpy as np

    from mdfnet.evaluation.convert import xyxy_to_xywh

    bbox = xyxy_to_xywh(dets[["xmin", "ymin", "xmax", "ymax"]].to_numpy(np.float64)).tolist()
    return [{"image_id": int(r) + 1, "category_id": schema.CLASS_TO_ID[c], "bbox": b, "score": float(s), "study": str(st)}
            for r, c, b, s, st in zip(dets["row"], dets["label"], bbox, dets["score"], dets["study"], strict=True)]


def studies_from_split(preprocessed_dir: str | Path, split: str = "test") -> tuple[pd.DataFrame, Path]:
    """A preprocessed folder's ``split`` as a batch: one row per reading (``study`` = REFLACX id, in the split's
    order, so ``row + 1`` is the image id ``mdfnet export-coco --split`` gives the reading; its boxes are in the
    cached image's pixels, ours in the original's), ``image`` relative to the join's image root, and the raw
    triage values as the source tables hold them (``raw_<field>``). Returns the table and the image root
    (``--images``)."""
    from mdfnet.data.join import image_root
    from mdfnet.data.preprocess import SPLITS

    pre = Path(preprocessed_dir)
    inst_path = pre / "instances.parquet"
    if not inst_path.is_file():
        raise BatchError(f"{inst_path} not found: is {pre} the output of `mdfnet preprocess`?")
    if split not in SPLITS:
        raise BatchError(f"split {split!r}: expected one of {list(SPLITS)}")
    inst = pd.read_parquet(inst_path)
    inst = inst[inst["split"] == split].reset_index(drop=True)
    table = pd.DataFrame({"study": inst["reflacx_id"].astype(str), "image": inst["image_path"].astype(str)})
    for f in FIELDS:
        table[f] = inst[f"raw_{f}"]
    try:
        root = image_root(pre)  # join_meta.json travels with the preprocessed folder
    except (OSError, ValueError) as e:
        raise BatchError(str(e)) from None
    return table, root
