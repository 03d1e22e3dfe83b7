"""Hand-built tiny source trees (not from the generator) for join/preprocess tests.

Each reading is described explicitly so a test can state what the join must do with it.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mdfnet.data import schema


def write_csv(path: Path, df: pd.DataFrame, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wt", newline="") as fh:
            df.to_csv(fh, index=False)
    else:
        df.to_csv(path, index=False)
    return path


def write_jpeg(path: Path, width: int, height: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = (rng.random((height, width)) * 255).astype(np.uint8)
    Image.fromarray(arr, mode="L").save(path, quality=90)


def build_sources(root: Path, readings: list[dict], patients: list[dict], stays: list[dict], triage: list[dict],
                  *, gz_cxr: bool = True, patients_dir: str = "hosp") -> Path:
    """Write a source tree.

    ``readings``: dicts with reflacx_id, phase, dicom_id, subject_id, study_id, view, date (int), time (float),
    width, height, split, ellipses (list of (xmin, ymin, xmax, ymax, certainty, [labels]); the labels must be of
    the reading's phase, :func:`mdfnet.data.schema.reflacx_labels`), and optional ``in_cxr`` (False: no metadata
    row), ``image`` (False: no JPEG; "corrupt": a non-image file), ``discarded`` (``eye_tracking_data_discarded``,
    default False).
    """
    by_phase: dict[int, list[dict]] = {}
    cxr_rows = []
    for r in readings:
        phase = r.get("phase", 1)
        labels = list(schema.reflacx_labels(phase))
        row = {"id": r["reflacx_id"], "split": r.get("split", "train"),
               "eye_tracking_data_discarded": r.get("discarded", False),
               "image": f"physionet.org/files/mimic-cxr/2.0.0/{schema.cxr_image_relpath(r['subject_id'], r['study_id'], r['dicom_id'])}",
               "dicom_id": r["dicom_id"], "subject_id": r["subject_id"], "image_size_x": r["width"],
               "image_size_y": r["height"]}
        row.update({lab: 0 for lab in labels})
        by_phase.setdefault(phase, []).append(row)
        if r.get("in_cxr", True):
            cxr_rows.append({
                "dicom_id": r["dicom_id"], "subject_id": r["subject_id"], "study_id": r["study_id"],
                "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "ViewPosition": r.get("view", "PA"),
                "Rows": r["height"], "Columns": r["width"], "StudyDate": r["date"], "StudyTime": r["time"],
                "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
                "ViewCodeSequence_CodeMeaning": "postero-anterior", "PatientOrientationCodeSequence_CodeMeaning": "Erect",
            })
        ell_rows = []
        for (x0, y0, x1, y1, cert, labs) in r.get("ellipses", []):
            if set(labs) - set(labels):
                raise ValueError(f"{r['reflacx_id']}: {sorted(set(labs) - set(labels))} are not phase-{phase} labels")
            e = {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1, "certainty": cert}
            e.update({lab: (lab in labs) for lab in labels})
            ell_rows.append(e)
        edf = pd.DataFrame(ell_rows, columns=["xmin", "ymin", "xmax", "ymax", "certainty", *labels])
        if r.get("ellipses_file", True):
            write_csv(root / schema.ellipses_path(r["reflacx_id"]), edf)
        img = r.get("image", True)
        ipath = root / schema.CXR_DIR / schema.cxr_image_relpath(r["subject_id"], r["study_id"], r["dicom_id"])
        if img is True:
            write_jpeg(ipath, r["width"], r["height"], seed=len(cxr_rows))
        elif img == "corrupt":
            ipath.parent.mkdir(parents=True, exist_ok=True)
            ipath.write_bytes(b"not a jpeg")
    for phase, rows in by_phase.items():
        labels = list(schema.reflacx_labels(phase))
        write_csv(root / schema.reflacx_metadata_path(phase),
                  pd.DataFrame(rows, columns=[*schema.REFLACX_METADATA_COLUMNS, *labels]))
    write_csv(root / schema.CXR_METADATA, pd.DataFrame(cxr_rows, columns=list(schema.CXR_METADATA_COLUMNS)), gz=gz_cxr)
    write_csv(root / f"mimic-iv/{patients_dir}/patients.csv", pd.DataFrame(patients, columns=list(schema.PATIENTS_COLUMNS)))
    write_csv(root / schema.EDSTAYS, pd.DataFrame(stays, columns=list(schema.EDSTAYS_COLUMNS)), gz=True)
    write_csv(root / schema.TRIAGE, pd.DataFrame(triage, columns=list(schema.TRIAGE_COLUMNS)))
    return root


def patient(subject_id: int, gender: str = "F", age: int = 60, year: int = 2150) -> dict:
    return {"subject_id": subject_id, "gender": gender, "anchor_age": age, "anchor_year": year,
            "anchor_year_group": "2014 - 2016", "dod": None}


def stay(subject_id: int, stay_id: int, intime: str, outtime: str) -> dict:
    return {"subject_id": subject_id, "hadm_id": None, "stay_id": stay_id, "intime": intime, "outtime": outtime,
            "gender": "F", "race": "WHITE", "arrival_transport": "WALK IN", "disposition": "HOME"}


def triage_row(subject_id: int, stay_id: int, **vals) -> dict:
    base = {"subject_id": subject_id, "stay_id": stay_id, "temperature": 98.6, "heartrate": 80, "resprate": 16,
            "o2sat": 98, "sbp": 120, "dbp": 80, "pain": "3", "acuity": 3, "chiefcomplaint": "Dyspnea"}
    base.update(vals)
    return base
