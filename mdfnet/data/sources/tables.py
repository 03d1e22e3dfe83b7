"""What the join reads from each source table (columns, types, key), and the readers both layouts share: the
REFLACX ellipse files, and many small per-patient CSVs read as one table.

Frames returned (one row per source row; pandas dtypes as pyarrow gives them):

==========  ================================================================================================
readings    ``reflacx_id`` str, ``reflacx_split`` str, ``eye_tracking_data_discarded`` bool, ``dicom_id`` str,
            ``subject_id`` int64, ``image_size_x`` int64, ``image_size_y`` int64, ``reflacx_phase`` int64 (1..3)
cxr         ``dicom_id`` str, ``subject_id``, ``study_id`` int64, ``ViewPosition`` str, ``Rows``, ``Columns``,
            ``StudyDate`` int64, ``StudyTime`` float64 (HHMMSS.fff, not zero-padded)
patients    ``subject_id`` int64, ``gender`` str, ``anchor_age``, ``anchor_year`` int64
stays       ``subject_id``, ``stay_id`` int64, ``intime``, ``outtime`` datetime64[us]
triage      ``stay_id`` int64, the 8 :data:`~mdfnet.data.schema.TRIAGE_FEATURES` as text (parsed and counted by
            :func:`mdfnet.data.clean.clean_clinical`: a stray ``":"`` must not stop the join)
boxes       ``reflacx_id`` str, ``label`` (one of the 5 classes), ``xmin ymin xmax ymax`` float64 (original image
            pixels), ``certainty`` int64 — one row per ellipse and class it marks
==========  ================================================================================================
"""

from __future__ import annotations

import csv
import gzip
import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from mdfnet.data import schema
from mdfnet.data.io import JoinError, SourceError, read_table

log = logging.getLogger(__name__)

READ_WORKERS = 8
"""Threads reading small files (the reads release the GIL; parsing happens once, on the concatenation)."""
BOX_COLUMNS: tuple[str, ...] = ("reflacx_id", "label", "xmin", "ymin", "xmax", "ymax", "certainty")


@dataclass(frozen=True)
class TableSpec:
    """The columns the join reads from one source table, their pyarrow types where guessing is unsafe, and the
    column that identifies a row."""

    name: str
    columns: tuple[str, ...]
    key: str
    types: dict[str, pa.DataType] = field(default_factory=dict)


READINGS = TableSpec("REFLACX metadata", ("id", "split", schema.REFLACX_DISCARDED, "dicom_id", "subject_id",
                                          "image_size_x", "image_size_y"),
                     "id", {"id": pa.string(), "dicom_id": pa.string(), "split": pa.string(),
                            schema.REFLACX_DISCARDED: pa.string()})  # parsed by parse_discarded
CXR = TableSpec("CXR metadata", ("dicom_id", "subject_id", "study_id", "ViewPosition", "Rows", "Columns", "StudyDate",
                                 "StudyTime"),
                "dicom_id", {"dicom_id": pa.string(), "ViewPosition": pa.string(), "StudyTime": pa.float64(),
                             "StudyDate": pa.int64()})
PATIENTS = TableSpec("patients", ("subject_id", "gender", "anchor_age", "anchor_year"), "subject_id",
                     {"gender": pa.string()})
STAYS = TableSpec("ED stays", ("subject_id", "stay_id", "intime", "outtime"), "stay_id",
                  {"intime": pa.timestamp("us"), "outtime": pa.timestamp("us")})
TRIAGE = TableSpec("triage", ("stay_id", *schema.TRIAGE_FEATURES), "stay_id",
                   {c: pa.string() for c in schema.TRIAGE_FEATURES})  # as written: preprocess's cleaning parses


def readings_frame(df: pd.DataFrame) -> pd.DataFrame:
    """REFLACX metadata columns → the ``readings`` frame's names (``id`` → ``reflacx_id``, ``split`` →
    ``reflacx_split``)."""
    return df.rename(columns={"id": "reflacx_id", "split": "reflacx_split"})


_DISCARDED_VALUES = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}


def parse_discarded(values: pd.Series, where: Sequence[str]) -> pd.Series:
    """REFLACX's ``eye_tracking_data_discarded`` text → bool (same index). REFLACX writes ``True``/``False``
    (ricbl/eyetracking ``create_main_table.py``); ``true``/``false`` in any case and ``1``/``0`` are accepted too.
    Anything else, an empty cell included, raises :class:`JoinError` naming ``where[i]`` (the file and row of
    value ``i``) and the value: whether a reading's eye tracking was discarded decides whether the join keeps it."""
    text = values.astype("string").str.strip().str.lower()
    parsed = text.map(_DISCARDED_VALUES)
    bad = parsed.isna().to_numpy()
    if bad.any():
        shown = [f"{where[i]}: " + ("an empty cell" if pd.isna(values.iloc[i]) else repr(values.iloc[i]))
                 for i in bad.nonzero()[0][:5]]
        raise JoinError(f"REFLACX metadata: {int(bad.sum())} {schema.REFLACX_DISCARDED} value(s) are not True/False "
                        f"(or 1/0): " + "; ".join(shown))
    return parsed.astype(bool)


# ----------------------------------------------------------------------------- ellipses
_TRUE = {"true", "1", "1.0", "t", "yes"}


UNKNOWN_PREFIX = "?"
"""Marks, inside the reader only, an ellipse label column that is neither one of the 5 classes (or a synonym) nor
a REFLACX label known to be out of scope; such marks are counted (``boxes.attrs["unknown_labels"]``), not kept."""


def read_ellipses(paths: Sequence[Path], reflacx_ids: Sequence[str]) -> tuple[pd.DataFrame, set[str]]:
    """Boxes of the 5 classes (frame ``boxes`` above) for the readings ``reflacx_ids`` whose ellipse files are
    ``paths`` (same order), and the set of ids whose file is missing. Ellipses marked with a label this code does
    not know are counted per label in ``boxes.attrs["unknown_labels"]``.

    Uses the csv module (≈20× faster than one ``pd.read_csv`` per small file at 3k files).
    """
    rows: list[tuple] = []
    missing: set[str] = set()
    for rid, path in zip(reflacx_ids, paths, strict=True):
        try:
            with open(path, newline="") as fh:
                rows += _ellipse_rows(rid, path, csv.reader(fh))
        except FileNotFoundError:
            missing.add(rid)
    boxes = pd.DataFrame(rows, columns=list(BOX_COLUMNS))
    boxes = boxes.astype({"xmin": "float64", "ymin": "float64", "xmax": "float64", "ymax": "float64",
                          "certainty": "int64"})
    unknown = boxes["label"].str.startswith(UNKNOWN_PREFIX)
    counts = boxes.loc[unknown, "label"].str.removeprefix(UNKNOWN_PREFIX).value_counts().sort_index()
    boxes = boxes.loc[~unknown].reset_index(drop=True)
    boxes.attrs["unknown_labels"] = {str(k): int(v) for k, v in counts.items()}  # counted in the join's report
    return boxes, missing


def _ellipse_rows(rid: str, path: Path, reader) -> list[tuple]:
    """One row per (ellipse, class it marks) of one ``anomaly_location_ellipses.csv``; an empty file has none."""
    header = next(reader, None)
    if header is None:
        return []
    idx = {name: i for i, name in enumerate(header)}
    lack = [c for c in schema.REFLACX_ELLIPSE_COLUMNS if c not in idx]
    if lack:
        raise JoinError(f"{path}: missing column(s) {lack}; found {header}")
    label_cols = [(idx[n], schema.LABEL_SYNONYMS[n]) for n in header if n in schema.LABEL_SYNONYMS]
    known = {*schema.REFLACX_ELLIPSE_COLUMNS, *schema.LABEL_SYNONYMS, *schema.OTHER_REFLACX_LABELS}
    label_cols += [(idx[n], UNKNOWN_PREFIX + n) for n in header if n not in known and n.strip()]
    rows = []
    for line_no, rec in enumerate(reader, start=2):
        if not rec:
            continue
        try:
            coords = [float(rec[idx[c]]) for c in ("xmin", "ymin", "xmax", "ymax")]
            certainty = int(float(rec[idx["certainty"]]))
        except (ValueError, IndexError) as e:
            raise JoinError(f"{path}, line {line_no}: bad coordinate/certainty value ({e}): {rec}") from e
        seen = set()
        for col, label in label_cols:
            if label not in seen and rec[col].strip().lower() in _TRUE:
                seen.add(label)
                rows.append((rid, label, *coords, certainty))
    return rows


# ----------------------------------------------------------------------------- many small CSVs as one table
def _read_bytes(path: Path) -> bytes | None:
    """The file's bytes (``path`` or, failing that, ``path.gz`` decompressed); None when neither exists."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    try:
        return gzip.decompress(path.with_name(path.name + ".gz").read_bytes())
    except FileNotFoundError:
        return None


def read_many(paths: Sequence[Path], spec: TableSpec, *, optional: tuple[str, ...] = (),
              on_conflict: str = "raise") -> tuple[pd.DataFrame, int]:
    """Rows of every CSV in ``paths`` that exists (``.csv`` or ``.csv.gz``), as one frame of ``spec.columns``
    (plus the ``optional`` ones where every file has them); returns it and the number of files found.

    Fast on tens of thousands of small files: the bytes are read by :data:`READ_WORKERS` threads, files with the
    same header line are concatenated and parsed once by pyarrow. Rows repeated exactly (in the columns read) are
    dropped and counted in the log; rows with the same ``spec.key`` but other values raise :class:`SourceError`
    naming the files, the key and the columns that differ (``on_conflict="keep"`` keeps them and logs a warning,
    for tables where the join itemises duplicates itself).
    """
    with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
        blobs = dict(zip(paths, pool.map(_read_bytes, paths), strict=True))
    found = {p: b for p, b in blobs.items() if b}
    groups: dict[bytes, list[Path]] = {}
    for p, blob in found.items():
        groups.setdefault(blob.partition(b"\n")[0], []).append(p)
    frames = [read_table(_concat(header, [found[p] for p in group]), spec.columns, spec.types, optional=optional,
                         name=_describe(group)) for header, group in groups.items()]
    if not frames:
        return pd.DataFrame(columns=list(spec.columns)), 0
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    df = df[[c for c in (*spec.columns, *optional) if c in df.columns]]
    return _dedupe(df, spec, found, on_conflict), len(found)


def _concat(header: bytes, blobs: list[bytes]) -> bytes:
    """One CSV: ``header`` once, then the data lines of every blob (each ending with a line break)."""
    parts = [header, b"\n"]
    for blob in blobs:
        body = blob.partition(b"\n")[2]
        parts.append(body if not body or body.endswith(b"\n") else body + b"\n")
    return b"".join(parts)


def _describe(paths: list[Path]) -> str:
    return str(paths[0]) if len(paths) == 1 else f"{len(paths)} files with the same header as {paths[0]}"


def _holds_field(blob: bytes, value: str) -> bool:
    """Whether a CSV's bytes hold ``value`` as a whole field (not inside a longer one)."""
    return re.search(rb"(?:^|[,\n])" + re.escape(value.encode()) + rb"(?:[,\r\n]|$)", blob) is not None


def _dedupe(df: pd.DataFrame, spec: TableSpec, blobs: dict[Path, bytes], on_conflict: str) -> pd.DataFrame:
    """Drop exact repeats; report rows sharing ``spec.key`` with other values (see :func:`read_many`)."""
    values = [c for c in df.columns if c != ""]  # the pandas index column written by MIMIC-Eye is not data
    exact = df.duplicated(values, keep="first")
    if exact.any():
        log.info("%s: dropped %d row(s) repeated exactly in several files", spec.name, int(exact.sum()))
        df = df[~exact].reset_index(drop=True)
    clash = df[spec.key].duplicated(keep=False)
    if not clash.any():
        return df
    keys = list(dict.fromkeys(df.loc[clash, spec.key]))
    if on_conflict == "keep":
        log.warning("%s: %d %s value(s) appear with different values, e.g. %s", spec.name, len(keys), spec.key,
                    keys[:3])
        return df
    lines = []
    for k in keys[:3]:
        rows = df[df[spec.key] == k]
        differ = [c for c in values if rows[c].astype("string").nunique(dropna=False) > 1]
        where = sorted(str(p) for p, blob in blobs.items() if _holds_field(blob, str(k)))
        lines.append(f"  {spec.key}={k}: columns {differ} differ; in {where}")
    raise SourceError(f"{spec.name}: {len(keys)} {spec.key} value(s) appear in several rows with different values "
                      f"(expected one row per {spec.key}):\n" + "\n".join(lines))
