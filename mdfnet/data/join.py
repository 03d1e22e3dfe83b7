"""Join REFLACX readings with MIMIC-CXR-JPG metadata, MIMIC-IV patients and MIMIC-IV-ED stays/triage.

The tables come from the four PhysioNet downloads or from MIMIC-Eye's per-patient folders (detected or chosen
with ``layout``; readers in :mod:`mdfnet.data.sources`); the rules below are the same for both.

Join rule (one row per kept REFLACX reading):

0. readings whose ``eye_tracking_data_discarded`` is true are dropped (``keep_discarded_eye_tracking=False``,
   the default), as MDF-Net's REFLACX preprocessing does on the way to the paper's 670 readings (github
   ChihchengHsieh/multimodal-abnormalities-detection). REFLACX still wrote their ellipse
   files (ricbl/eyetracking ``create_main_table.py``), so ``keep_discarded_eye_tracking=True`` keeps them for users
   who want every annotation;
1. reading → CXR metadata on ``dicom_id`` (its ``subject_id`` must agree with REFLACX's); frontal views only
   (``ViewPosition`` in PA/AP);
2. study datetime = ``StudyDate`` (YYYYMMDD) + ``StudyTime`` (HHMMSS.fff, **not** zero-padded: 93512.1 is
   09:35:12.1) parsed arithmetically, never by string concatenation;
3. → patient on ``subject_id``; ``age = anchor_age + (study year − anchor_year)``;
4. → ED stay of that subject whose ``[intime, outtime]`` contains the study datetime (both ends inclusive).
   **Several matching stays:** the one with the latest ``intime`` (the most recent arrival before the study)
   wins; ties go to the smallest ``stay_id``;
5. → triage on ``stay_id`` (the 8 triage columns are kept as found; cleaning happens in ``preprocess``);
6. the JPEG must exist and be readable; its size must equal REFLACX's ``image_size_x/y`` (the ellipses are in
   those pixel coordinates).

Boxes: every ellipse of a reading contributes one box per class it marks (labels mapped to the 5 classes by name
with :data:`mdfnet.data.schema.LABEL_SYNONYMS`, so phase-1 "Pleural effusion"/"Pleural thickening" both become
phases 2-3's "Pleural abnormality"; an ellipse marking both gives one box). MDF-Net's code gives each ellipse one
label instead (``idxmax`` over the label columns), losing the other classes an ellipse marks. Boxes are clipped
to the image; ellipses below ``min_certainty`` and boxes that are empty after clipping are dropped and counted. Readings with no box of the 5 classes are kept as negatives by default
(``keep_negatives=True``, as in the paper's data set of 670 readings, which was not filtered on lesions).

Every input reading is either kept or excluded with exactly one reason (the first failing step above), so
``kept + excluded = input``; see :data:`REASONS`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mdfnet.data import schema
from mdfnet.data.io import JoinError, SourceError
from mdfnet.data.sources import BOX_COLUMNS, Source, open_source, read_ellipses

log = logging.getLogger(__name__)

R_DUPLICATE = "duplicate reading id"
R_UNSAFE_ID = "reflacx or dicom id not a plain name (would leave the data root)"
R_DISCARDED = "eye-tracking data discarded (REFLACX eye_tracking_data_discarded)"
R_NO_ELLIPSES = "no ellipses file"
R_NO_CXR = "no CXR metadata"
R_SUBJECT = "subject_id differs from CXR metadata"
R_NOT_FRONTAL = "not frontal view"
R_BAD_DATETIME = "invalid study date/time"
R_NO_PATIENT = "no patient record"
R_NO_STAY = "no ED stay containing the study"
R_NO_TRIAGE = "no triage record"
R_NO_IMAGE = "missing image file"
R_BAD_IMAGE = "unreadable image"
R_SIZE = "image size differs from REFLACX metadata"
R_NEGATIVE = "no box of the 5 classes"
REASONS: tuple[str, ...] = (
    R_DUPLICATE, R_UNSAFE_ID, R_DISCARDED, R_NO_ELLIPSES, R_NO_CXR, R_SUBJECT, R_NOT_FRONTAL, R_BAD_DATETIME, R_NO_PATIENT, R_NO_STAY,
    R_NO_TRIAGE, R_NO_IMAGE, R_BAD_IMAGE, R_SIZE, R_NEGATIVE,
)
"""Exclusion reasons in the order they are checked."""

INSTANCE_COLUMNS: tuple[str, ...] = (
    "reflacx_id", "reflacx_phase", "dicom_id", "subject_id", "study_id", "stay_id", "image_path", "image_width",
    "image_height", "study_datetime", "reflacx_split", "gender", "age", *schema.TRIAGE_FEATURES,
)
__all__ = ["BOX_COLUMNS", "INSTANCE_COLUMNS", "REASONS", "JoinError", "JoinResult", "image_root", "join",
           "match_stays", "parse_study_datetime"]


@dataclass
class JoinResult:
    out_dir: Path
    n_input: int
    n_kept: int
    exclusions: dict[str, int]
    n_boxes: int
    box_report: dict[str, int] = field(default_factory=dict)

    @property
    def n_excluded(self) -> int:
        return sum(self.exclusions.values())

    def summary_table(self) -> str:
        rows = [("readings in REFLACX metadata", self.n_input)]
        rows += [(f"  excluded: {r}", c) for r, c in self.exclusions.items() if c]
        rows += [("readings kept", self.n_kept), ("boxes kept (5 classes)", self.n_boxes)]
        rows += [(f"  boxes: {r}", c) for r, c in self.box_report.items() if c]
        w = max(len(label) for label, _ in rows) + 2
        return "\n".join(f"{label:<{w}} {c:>8}" for label, c in rows)


# ----------------------------------------------------------------------------- join rules
def parse_study_datetime(study_date: pd.Series, study_time: pd.Series) -> pd.Series:
    """``StudyDate`` YYYYMMDD (int) + ``StudyTime`` HHMMSS.fff (float, not zero-padded) → datetime64.

    93512.125 → 09:35:12.125; 512.5 → 00:05:12.5. Invalid values (NaN, minute ≥ 60 …) give NaT.
    """
    t = pd.to_numeric(study_time, errors="coerce").astype("float64")
    hh = np.floor(t / 10000.0)
    mm = np.floor(t / 100.0) % 100
    ss = t - hh * 10000 - mm * 100
    valid = (hh >= 0) & (hh < 24) & (mm < 60) & (ss >= 0) & (ss < 61)
    seconds = (hh * 3600 + mm * 60 + ss).where(valid)
    date = pd.to_datetime(pd.to_numeric(study_date, errors="coerce").astype("Int64").astype("string"),
                          format="%Y%m%d", errors="coerce")
    return date + pd.to_timedelta(seconds, unit="s")


def match_stays(readings: pd.DataFrame, stays: pd.DataFrame) -> pd.Series:
    """For each reading (index preserved) the ``stay_id`` of the ED stay containing ``study_datetime``.

    Vectorised: merge on subject, filter the window, keep the latest ``intime`` (tie: smallest stay_id).
    Returns a float Series (NaN where no stay contains the study).
    """
    left = readings[["subject_id", "study_datetime"]].reset_index(names="_row")
    cand = left.merge(stays[["subject_id", "stay_id", "intime", "outtime"]], on="subject_id", how="inner")
    inside = (cand["intime"] <= cand["study_datetime"]) & (cand["study_datetime"] <= cand["outtime"])
    cand = cand[inside].sort_values(["_row", "intime", "stay_id"], ascending=[True, False, True])
    best = cand.drop_duplicates("_row", keep="first").set_index("_row")["stay_id"]
    out = pd.Series(np.nan, index=readings.index, dtype="float64")
    out.loc[readings.index[best.index.to_numpy()]] = best.to_numpy(dtype="float64")
    return out


# ----------------------------------------------------------------------------- join
class _Excluder:
    def __init__(self) -> None:
        self.parts: list[pd.DataFrame] = []

    def take(self, df: pd.DataFrame, bad: pd.Series | np.ndarray, reason: str) -> pd.DataFrame:
        bad = np.asarray(bad, dtype=bool)
        if bad.any():
            self.parts.append(pd.DataFrame({"reflacx_id": df.loc[bad, "reflacx_id"].to_numpy(), "reason": reason}))
            log.debug("excluded %d readings: %s", int(bad.sum()), reason)
        return df.loc[~bad].copy()

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame({"reflacx_id": pd.Series(dtype="string"), "reason": pd.Series(dtype="string")})
        return pd.concat(self.parts, ignore_index=True)


def _plain_name(ids: pd.Series) -> pd.Series:
    """Ids usable as one path component: letters, digits, ``.``, ``_``, ``-``, not starting with a dot (no
    ``..``, no ``/``): the join builds file paths from them."""
    return ids.astype("string").str.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*").fillna(False).astype(bool)


def _decoded_size(path: Path) -> tuple[bool, int, int]:
    """(exists, width, height) of one image; the whole file is decoded (at a reduced JPEG scale: cheap) with the
    decoder ``preprocess`` caches with, so a truncated or corrupt file is caught here; -1 when it fails."""
    from mdfnet.data.images import ImageReadError, read_gray

    if not path.is_file():
        return False, -1, -1
    try:
        _, (w, h) = read_gray(path, 16)
    except ImageReadError as e:
        log.info("unreadable image %s: %s", path, e)
        return True, -1, -1
    return True, w, h


def _image_sizes(root: Path, relpaths: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(exists, width, height) per path, decoded in parallel threads (the decoders release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
        got = list(pool.map(_decoded_size, [root / rel for rel in relpaths]))
    exists = np.array([g[0] for g in got], dtype=bool)
    w = np.array([g[1] for g in got], dtype=np.int64)
    h = np.array([g[2] for g in got], dtype=np.int64)
    return exists, w, h


def join(
    source_dir: str | Path,
    out_dir: str | Path,
    *,
    keep_negatives: bool = True,
    min_certainty: int = 1,
    check_images: bool = True,
    copy_images: bool = False,
    layout: str = "auto",
    keep_discarded_eye_tracking: bool = False,
    source_uri: str | None = None,
) -> JoinResult:
    """Join the four sources; write ``instances.parquet``, ``boxes.parquet``, ``exclusions.csv``,
    ``excluded.parquet`` and ``join_meta.json`` into ``out_dir``.

    ``layout``: "physionet" (the four downloads), "mimic-eye" (per-patient folders) or "auto" (detected; see
    :func:`mdfnet.data.sources.open_source`); both give the same tables, so the same join. ``check_images=False``
    skips opening the JPEGs (tables-only benchmarks); sizes then come from the CXR metadata. ``copy_images=True``
    copies (hard-links where possible) the kept JPEGs into ``out_dir/images`` so the output is self-contained
    (used when steps run in different pods). ``keep_discarded_eye_tracking=True`` keeps the readings REFLACX
    marked ``eye_tracking_data_discarded`` (their ellipses exist; MDF-Net, and the default, drop them).
    ``join_meta.json`` also records where the sources came from (``source_uri``: the caller's URI, e.g. the
    ``s3://`` prefix they were downloaded from, else ``source_dir`` as a file URI) and the synthetic generator's
    marker (``synthetic``: :data:`~mdfnet.data.schema.SYNTHETIC_MARKER`'s content, ``null`` for real data). The
    steps of the module docstring run in order, each excluding the readings it cannot join (:class:`_Excluder`).
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    if not 1 <= min_certainty <= 5:
        raise JoinError(f"min_certainty must be in 1..5, got {min_certainty}")
    source = open_source(source_dir, layout)
    ex = _Excluder()
    readings = source.readings()
    n_input = len(readings)
    readings = ex.take(readings, readings["reflacx_id"].duplicated(keep="first"), R_DUPLICATE)
    readings = ex.take(readings, ~(_plain_name(readings["reflacx_id"]) & _plain_name(readings["dicom_id"])),
                       R_UNSAFE_ID)
    if not keep_discarded_eye_tracking:
        readings = ex.take(readings, readings[schema.REFLACX_DISCARDED], R_DISCARDED)
    boxes, missing = read_ellipses(source.ellipse_paths(readings), readings["reflacx_id"].tolist())
    readings = ex.take(readings, readings["reflacx_id"].isin(missing), R_NO_ELLIPSES)
    readings = _with_cxr(readings, source, ex)
    readings = _with_patient(readings, source, ex)
    readings = _with_stay_and_triage(readings, source, ex)
    readings = _with_image(readings, source, check_images, ex)
    unknown_labels = dict(boxes.attrs.get("unknown_labels", {}))
    boxes, box_report = _clean_boxes(boxes, readings, min_certainty)
    box_report.update({f"unknown label {name!r} (not a target)": n for name, n in unknown_labels.items()})
    if not keep_negatives:
        readings = ex.take(readings, ~readings["reflacx_id"].isin(boxes["reflacx_id"]), R_NEGATIVE)

    instances = readings[list(INSTANCE_COLUMNS)].reset_index(drop=True)
    for c in ("subject_id", "study_id", "stay_id", "image_width", "image_height", "reflacx_phase"):
        instances[c] = instances[c].astype("int64")
    instances["pain"] = instances["pain"].astype("string")
    excluded = ex.frame()
    if len(instances) + len(excluded) != n_input:  # invariant: every reading kept or excluded once
        raise AssertionError(f"join lost readings: kept {len(instances)} + excluded {len(excluded)} != {n_input}")
    meta = {"layout": source.layout, "keep_negatives": keep_negatives, "min_certainty": min_certainty,
            "keep_discarded_eye_tracking": keep_discarded_eye_tracking, "check_images": check_images, "n_input": n_input, "n_kept": len(instances), "n_boxes": len(boxes),
            "box_report": box_report, "source_uri": _source_uri(source_uri, source_dir),
            "synthetic": synthetic_marker(source_dir),
            "stay_rule": "latest intime among stays containing the study; tie -> smallest stay_id"}
    exclusions = _write(out_dir, source_dir, copy_images, instances, boxes, excluded, meta)
    result = JoinResult(out_dir, n_input, len(instances), exclusions, len(boxes), box_report)
    log.info("join (%s layout): %d readings in, %d kept, %d excluded, %d boxes", source.layout, n_input,
             result.n_kept, result.n_excluded, len(boxes))
    return result


def _with_cxr(readings: pd.DataFrame, source: Source, ex: _Excluder) -> pd.DataFrame:
    """Step 1-2: CXR metadata on ``dicom_id`` (same subject, frontal view) and the study datetime."""
    cxr = source.cxr().drop_duplicates("dicom_id")
    readings = readings.merge(cxr.rename(columns={"subject_id": "cxr_subject_id"}), on="dicom_id", how="left")
    readings = ex.take(readings, readings["study_id"].isna(), R_NO_CXR)
    readings = ex.take(readings, readings["cxr_subject_id"] != readings["subject_id"], R_SUBJECT)
    readings = ex.take(readings, ~readings["ViewPosition"].isin(schema.FRONTAL_VIEWS), R_NOT_FRONTAL)
    readings["study_datetime"] = parse_study_datetime(readings["StudyDate"], readings["StudyTime"])
    return ex.take(readings, readings["study_datetime"].isna(), R_BAD_DATETIME)


def _with_patient(readings: pd.DataFrame, source: Source, ex: _Excluder) -> pd.DataFrame:
    """Step 3: the patient on ``subject_id`` and the age at the study."""
    patients = source.patients().drop_duplicates("subject_id")
    readings = readings.merge(patients, on="subject_id", how="left")
    readings = ex.take(readings, readings["anchor_age"].isna(), R_NO_PATIENT)
    readings["age"] = readings["anchor_age"] + (readings["study_datetime"].dt.year - readings["anchor_year"])
    return readings


def _with_stay_and_triage(readings: pd.DataFrame, source: Source, ex: _Excluder) -> pd.DataFrame:
    """Steps 4-5: the ED stay containing the study (:func:`match_stays`) and its triage row."""
    stays = source.stays()
    stays = stays[stays["subject_id"].isin(readings["subject_id"].unique())]
    readings = readings.reset_index(drop=True)
    readings["stay_id"] = match_stays(readings, stays)
    readings = ex.take(readings, readings["stay_id"].isna(), R_NO_STAY)
    readings["stay_id"] = readings["stay_id"].astype("int64")
    triage = source.triage().drop_duplicates("stay_id")
    triage["_has_triage"] = True
    readings = readings.merge(triage, on="stay_id", how="left")
    return ex.take(readings, readings["_has_triage"].isna(), R_NO_TRIAGE)


def _with_image(readings: pd.DataFrame, source: Source, check_images: bool, ex: _Excluder) -> pd.DataFrame:
    """Step 6: the JPEG's path (relative to the source folder, as the layout has it); it must exist, decode and
    have REFLACX's size (without ``check_images`` the sizes come from the CXR metadata)."""
    readings["image_path"] = [
        source.image_relpath(s, t, d)
        for s, t, d in zip(readings["subject_id"], readings["study_id"], readings["dicom_id"], strict=True)
    ]
    if check_images:
        exists, w, h = _image_sizes(source.root, readings["image_path"])
        readings["image_width"], readings["image_height"] = w, h
        readings = ex.take(readings, ~exists, R_NO_IMAGE)
        readings = ex.take(readings, readings["image_width"] < 0, R_BAD_IMAGE)
    else:
        readings["image_width"] = readings["Columns"].astype("int64")
        readings["image_height"] = readings["Rows"].astype("int64")
    size_differs = ((readings["image_width"] != readings["image_size_x"])
                    | (readings["image_height"] != readings["image_size_y"]))
    return ex.take(readings, size_differs, R_SIZE)


def _clean_boxes(boxes: pd.DataFrame, readings: pd.DataFrame, min_certainty: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """Boxes of the kept readings: certainty filter, clipped to the image, empty ones dropped; all counted."""
    boxes = boxes[boxes["reflacx_id"].isin(readings["reflacx_id"])]
    low = boxes["certainty"] < min_certainty
    boxes = boxes[~low].merge(readings[["reflacx_id", "image_width", "image_height"]], on="reflacx_id")
    before = boxes[["xmin", "ymin", "xmax", "ymax"]].copy()
    for lo, hi, size in (("xmin", "xmax", "image_width"), ("ymin", "ymax", "image_height")):
        boxes[lo] = boxes[lo].clip(lower=0, upper=boxes[size])
        boxes[hi] = boxes[hi].clip(lower=0, upper=boxes[size])
    empty = (boxes["xmax"] <= boxes["xmin"]) | (boxes["ymax"] <= boxes["ymin"])
    clipped = (boxes[["xmin", "ymin", "xmax", "ymax"]] != before).any(axis=1) & ~empty
    report = {f"certainty < {min_certainty}": int(low.sum()), "empty after clipping to the image": int(empty.sum()),
              "clipped to the image (kept)": int(clipped.sum())}
    return boxes.loc[~empty, list(BOX_COLUMNS)].reset_index(drop=True), report


def _write(out_dir: Path, source_dir: Path, copy_images: bool, instances: pd.DataFrame, boxes: pd.DataFrame,
           excluded: pd.DataFrame, meta: dict) -> dict[str, int]:
    """Write the join's files (copying the kept JPEGs when asked); returns the exclusion counts by reason."""
    out_dir.mkdir(parents=True, exist_ok=True)
    image_root: str = str(source_dir.resolve())
    if copy_images:
        _copy_images(source_dir, out_dir / "images", instances["image_path"])
        image_root = "images"
    instances.to_parquet(out_dir / "instances.parquet", index=False)
    boxes.to_parquet(out_dir / "boxes.parquet", index=False)
    excluded.to_parquet(out_dir / "excluded.parquet", index=False)
    counts = excluded["reason"].value_counts()
    exclusions = {r: int(counts.get(r, 0)) for r in REASONS}
    pd.DataFrame({"reason": list(exclusions), "count": list(exclusions.values())}).to_csv(
        out_dir / "exclusions.csv", index=False
    )
    (out_dir / "join_meta.json").write_text(json.dumps({"image_root": image_root, **meta}, indent=2))
    return exclusions


def _copy_images(source_dir: Path, dest: Path, relpaths: pd.Series) -> None:
    import os

    for rel in relpaths.unique():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            continue
        try:
            os.link(source_dir / rel, target)
        except OSError:
            shutil.copy2(source_dir / rel, target)


def _source_uri(source_uri: str | None, source_dir: Path) -> str:
    """``source_uri`` when it is remote (``s3://…``), else the local ``source_dir`` as an absolute file URI."""
    if source_uri and "://" in source_uri and not source_uri.startswith("file://"):
        return source_uri
    return source_dir.resolve().as_uri()


def synthetic_marker(source_dir: str | Path) -> dict | None:
    """The synthetic generator's marker at the top of ``source_dir`` (:data:`~mdfnet.data.schema.SYNTHETIC_MARKER`),
    or None when there is none (real downloads)."""
    path = Path(source_dir) / schema.SYNTHETIC_MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise SourceError(f"{path} is not the synthetic generator's JSON marker ({e})") from e
    if not isinstance(marker, dict):
        raise SourceError(f"{path}: expected a JSON object (the synthetic generator's marker), got {marker!r}")
    return marker


def join_meta(folder: str | Path) -> dict:
    """``join_meta.json`` of a joined folder (a preprocessed one holds a copy): the join's options, counts,
    ``source_uri`` and ``synthetic`` marker; {} when the folder has none."""
    path = Path(folder) / "join_meta.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def image_root(joined_dir: str | Path) -> Path:
    """Folder that ``instances.image_path`` is relative to (from ``join_meta.json``)."""
    joined_dir = Path(joined_dir)
    meta_path = joined_dir / "join_meta.json"
    if not meta_path.is_file():
        raise SourceError(f"{meta_path} not found: is {joined_dir} the output of `mdfnet join`?")
    root = Path(json.loads(meta_path.read_text())["image_root"])
    return root if root.is_absolute() else joined_dir / root
