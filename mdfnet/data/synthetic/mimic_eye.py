"""Writer of the synthetic cohort in the MIMIC-Eye layout (one ``patient_<subject_id>/`` folder per REFLACX patient;
layout in :mod:`mdfnet.data.schema`, what it mirrors in :mod:`mdfnet.data.sources.mimic_eye`).

The tables are those the PhysioNet layout gets (same seed → same rows), cut the way MIMIC-Eye's builder
(github ChihchengHsieh/MIMIC-Eye, ``[Patient-Level]`` notebooks, ``descriptions_backup.md``) cut them:

- every table is written with pandas' index as a first, unnamed column (the row's place in the whole table; for
  REFLACX in its phase file);
- ``spreadsheets/Hosp/patients.csv`` holds the whole MIMIC-IV ``patients`` table, background patients included;
  no patient folder has a patients table;
- ``patient_<id>/ED/{edstays,triage}.csv``: every ED row of the subject;
- ``patient_<id>/CXR-JPG/cxr_meta.csv``: only the subject's images that are in REFLACX or Eye Gaze (no Eye Gaze
  here: the REFLACX ones), with MIMIC-Eye's extra columns ``in_eye_gaze`` (False), ``in_reflacx`` (True),
  ``StudyDateTime`` (the builder's ``float(str(StudyDate) + str(StudyTime))``) and ``stay_id`` (left empty: the
  join matches stays itself); JPEGs only for those images;
- ``patient_<id>/REFLACX/metadata.csv``: the three phases merged (the 26 labels of phase 1 and phases 2-3, empty
  where a reading's phase lacks one) and no phase column;
- readings under ``REFLACX/main_data/<reflacx_id>/``, their ellipse files copied as REFLACX wrote them (CRLF, no
  index column).

Only patients with a REFLACX image get a folder; a per-patient table is written only for patients that have rows
in it, as the builder did.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mdfnet.data import schema
from mdfnet.data.synthetic.reflacx import Reading
from mdfnet.data.synthetic.writers import csv_bytes, csv_lines, reflacx_metadata_frames, write_ellipses


def write_mimic_eye(root: Path, studies: pd.DataFrame, readings: list[Reading], cxr: pd.DataFrame,
                    patients: pd.DataFrame, edstays: pd.DataFrame, triage: pd.DataFrame) -> int:
    """Write the per-patient tables and ellipse files; returns the number of patient folders.

    ``cxr``, ``patients``, ``edstays``, ``triage``: the whole tables as the PhysioNet layout writes them (sorted,
    subject first; index 0..n-1). JPEGs are written separately
    (:func:`~mdfnet.data.synthetic.writers.write_images` with ``layout="mimic-eye"``).
    """
    subjects = np.unique(studies["subject_id"].to_numpy(dtype=np.int64))
    shared = root / schema.MIMIC_EYE_SHARED_PATIENTS
    shared.parent.mkdir(parents=True, exist_ok=True)
    shared.write_bytes(csv_bytes(patients, index=True))
    tables = {
        schema.MIMIC_EYE_EDSTAYS: edstays,
        schema.MIMIC_EYE_TRIAGE: triage,
        schema.MIMIC_EYE_CXR_METADATA: _cxr_meta(cxr, set(studies["dicom_id"])),
        schema.MIMIC_EYE_REFLACX_METADATA: _merged_reflacx_metadata(studies, readings),
    }
    for relpath, df in tables.items():
        _write_per_patient(root, df, subjects, relpath)
    subject_of = studies["subject_id"].to_numpy(dtype=np.int64)
    write_ellipses(root, readings, [schema.mimic_eye_ellipses_path(subject_of[r.image], r.reflacx_id)
                                    for r in readings])
    return len(subjects)


def _cxr_meta(cxr: pd.DataFrame, reflacx_dicoms: set[str]) -> pd.DataFrame:
    """The rows of the REFLACX images (the builder keeps only images in REFLACX or Eye Gaze) + MIMIC-Eye's four
    extra columns (index = row in the whole table)."""
    out = cxr.reset_index(drop=True)
    out = out[out["dicom_id"].isin(reflacx_dicoms)].copy()
    out["in_eye_gaze"] = False
    out["in_reflacx"] = True
    text = out["StudyDate"].astype(str) + out["StudyTime"].map(repr)
    out["StudyDateTime"] = pd.to_numeric(text, errors="coerce")
    out["stay_id"] = pd.array([pd.NA] * len(out), dtype="Int64")
    return out


def _merged_reflacx_metadata(studies: pd.DataFrame, readings: list[Reading]) -> pd.DataFrame:
    """The three phase tables concatenated as MIMIC-Eye has them (index = row within its phase file)."""
    frames = reflacx_metadata_frames(studies, readings)
    labels = list(dict.fromkeys([*schema.REFLACX_PHASE1_LABELS, *schema.REFLACX_PHASE23_LABELS]))
    columns = [*schema.REFLACX_METADATA_COLUMNS, *labels]
    kept = [f for f in frames.values() if len(f)]
    merged = pd.concat(kept) if kept else pd.DataFrame(columns=columns)
    return merged.reindex(columns=columns)


def _write_per_patient(root: Path, df: pd.DataFrame, subjects: np.ndarray, relpath: str) -> None:
    """``patient_<s>/<relpath>`` for each subject ``s`` of ``subjects`` with rows in ``df`` (rows keep their order
    within a subject; the index is written as the first column)."""
    df = df[df["subject_id"].isin(subjects)]
    df = df.iloc[np.argsort(df["subject_id"].to_numpy(), kind="stable")]
    header, lines = csv_lines(df, index=True)
    keys = df["subject_id"].to_numpy(dtype=np.int64)
    starts, ends = np.searchsorted(keys, subjects, "left"), np.searchsorted(keys, subjects, "right")
    for subject, a, b in zip(subjects, starts, ends, strict=True):
        if a == b:
            continue
        path = root / schema.mimic_eye_patient_dir(subject) / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((header + "\n" + "\n".join(lines[a:b]) + "\n").encode())
