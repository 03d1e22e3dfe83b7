"""``generate``: the four synthetic source trees (the generative model is documented in
:mod:`mdfnet.data.synthetic`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mdfnet.data import schema
from mdfnet.data.synthetic.clinical import (
    CONDITIONS,
    ECS,
    chief_complaints,
    make_messy,
    sample_conditions,
    sample_vitals,
)
from mdfnet.data.synthetic.common import datetime_strings, dicom_ids, unique_ints, years_of
from mdfnet.data.synthetic.ehr import (
    DISPOSITION_P,
    DISPOSITIONS,
    TRANSPORT_P,
    TRANSPORTS,
    background_stays,
    cxr_rows,
    reflacx_stays,
    sample_patients,
)
from mdfnet.data.synthetic.geometry import Lesion, sample_anatomy, sample_lesion_geometry
from mdfnet.data.synthetic.mimic_eye import write_mimic_eye
from mdfnet.data.synthetic.reflacx import Reading, lesion_matrix, sample_readings, sample_studies
from mdfnet.data.synthetic.writers import write_images, write_reflacx, write_table

log = logging.getLogger("mdfnet.data.synthetic")


@dataclass(frozen=True)
class Scale:
    """Background row counts (rows without REFLACX readings)."""

    patients: int
    stays: int
    cxr_rows: int

    @classmethod
    def for_run(cls, n_studies: int, tables_only: bool) -> Scale:
        if tables_only:  # MIMIC scale at 3000 studies: ≈300k patients, ≈450k stays, ≈380k CXR rows
            return cls(patients=99 * n_studies, stays=148 * n_studies, cxr_rows=126 * n_studies)
        return cls(patients=2 * n_studies, stays=3 * n_studies, cxr_rows=3 * n_studies)


def generate(source_dir: str | Path, n_studies: int, seed: int, image_size: int = 256,
             tables_only: bool = False, layout: str = "physionet") -> dict[str, int]:
    """Write the four synthetic source trees under ``source_dir``; return row/file counts.

    ``layout`` "physionet" writes the four downloads side by side; "mimic-eye" the same cohort (same seed, same
    rows and pixels) in MIMIC-Eye's per-patient folders (:mod:`mdfnet.data.synthetic.mimic_eye`), which the join
    turns into the same instances and boxes.

    ``n_studies`` = number of REFLACX images (1..200000); ``image_size`` = typical side of the JPEGs (≥ 32 px;
    each side is drawn in [0.75, 1.25]× it); ``tables_only`` skips the JPEGs and writes MIMIC-scale background
    tables (benchmarks). The summary also counts the readings each reserved special case should make the join
    exclude (``excl_*``; ``excl_eye_tracking_discarded`` under the join's default) and the readings with two
    containing stays. The tree is marked as made up: :data:`~mdfnet.data.schema.SYNTHETIC_MARKER` at its top holds
    these arguments. Four child generators of ``seed`` (core, background, geometry, images) are drawn in a fixed
    order, so one seed gives identical bytes.
    """
    if not isinstance(n_studies, (int, np.integer)) or not 1 <= n_studies <= 200_000:
        raise ValueError(f"n_studies must be an int in [1, 200000], got {n_studies!r}")
    if not isinstance(image_size, (int, np.integer)) or image_size < 32:
        raise ValueError(f"image_size must be an int >= 32 (px), got {image_size!r}")
    if layout not in schema.LAYOUTS:
        raise ValueError(f"layout must be one of {schema.LAYOUTS}, got {layout!r}")
    root = Path(source_dir)
    root.mkdir(parents=True, exist_ok=True)
    ss_core, ss_bg, ss_geo, ss_img = np.random.SeedSequence(int(seed)).spawn(4)
    rng, rng_bg, rng_geo = (np.random.default_rng(s) for s in (ss_core, ss_bg, ss_geo))
    scale = Scale.for_run(n_studies, tables_only)
    n_rp = n_studies - int(round(0.1 * n_studies)) if n_studies >= 2 else n_studies  # REFLACX patients
    patients = sample_patients(rng, n_rp + scale.patients)
    patients.insert(0, "subject_id", unique_ints(rng, len(patients), 10_000_000, 20_000_000))

    studies, geometry, readings = _reflacx_images(rng, rng_geo, patients, n_studies, n_rp, image_size)
    study_ids, dicoms, bg_view, bg_lateral = _cxr_ids(rng, studies, patients, scale)
    stays = _stays(rng, rng_bg, studies, patients, n_rp, scale)
    triage = _triage(rng_bg, stays, patients)
    edstays = _edstays(rng_bg, stays, patients)
    cxr = cxr_rows(rng_bg, studies, patients, stays, dicoms, study_ids, bg_view, bg_lateral, image_size)

    _write_tables(root, layout, studies, readings, cxr=cxr, patients=patients, edstays=edstays, triage=triage)
    jpegs = 0 if tables_only else write_images(root, studies, geometry, ss_img, layout)
    marker = {"generator": "mdfnet.data.synthetic", "seed": int(seed), "studies": int(n_studies),
              "image_size": int(image_size), "layout": layout, "tables_only": bool(tables_only)}
    (root / schema.SYNTHETIC_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")

    summary = _summary(studies, readings, tables_only, jpegs, patients=len(patients), reflacx_patients=n_rp,
                       ed_stays=len(stays), triage_rows=len(triage), cxr_rows=len(cxr))
    log.info("synthetic sources in %s: %s", root, summary)
    return summary


def _write_tables(root: Path, layout: str, studies: pd.DataFrame, readings: list[Reading],
                  **tables: pd.DataFrame) -> None:
    """The tables (not the JPEGs) in ``layout``; each sorted the same way in both layouts."""
    cxr = tables["cxr"].sort_values(["subject_id", "study_id", "dicom_id"], kind="stable").reset_index(drop=True)
    patients = tables["patients"].sort_values("subject_id", kind="stable")[list(schema.PATIENTS_COLUMNS)]
    edstays = tables["edstays"].sort_values(["subject_id", "intime", "stay_id"], kind="stable")
    triage = tables["triage"].sort_values(["subject_id", "stay_id"], kind="stable")
    patients, edstays, triage = (df.reset_index(drop=True) for df in (patients, edstays, triage))
    if layout == "mimic-eye":
        n = write_mimic_eye(root, studies, readings, cxr, patients, edstays, triage)
        log.info("MIMIC-Eye layout: %d patient folders", n)
        return
    write_reflacx(root, studies, readings)
    write_table(cxr, root / schema.CXR_METADATA, gz=True)
    write_table(patients, root / schema.PATIENTS_CANDIDATES[0], gz=True)
    write_table(edstays, root / schema.EDSTAYS, gz=True)
    write_table(triage, root / schema.TRIAGE, gz=False)


def _reflacx_images(rng: np.random.Generator, rng_geo: np.random.Generator, patients: pd.DataFrame, n_studies: int,
                    n_rp: int, image_size: int) -> tuple[pd.DataFrame, list[list[Lesion]], list[Reading]]:
    """The REFLACX images (studies frame with anatomy), their lesion geometry and the readings."""
    studies = sample_studies(rng, n_studies, patients, n_rp, image_size)
    les = lesion_matrix(studies)
    studies["anatomy"] = [sample_anatomy(rng_geo, bool(les[i, ECS])) for i in range(n_studies)]
    geometry = [sample_lesion_geometry(rng_geo, les[i], studies.at[i, "anatomy"], int(studies.at[i, "width"]),
                                       int(studies.at[i, "height"])) for i in range(n_studies)]
    return studies, geometry, sample_readings(rng_geo, studies, geometry)


def _cxr_ids(rng: np.random.Generator, studies: pd.DataFrame, patients: pd.DataFrame,
             scale: Scale) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Study and dicom ids (REFLACX studies first, then background studies); sets ``study_id``, ``subject_id``
    and ``dicom_id`` of ``studies``. Returns the background studies' ids, the unused dicom ids (REFLACX
    laterals first), the background views and which background studies have a lateral."""
    n_studies = len(studies)
    bg_studies = int(round(scale.cxr_rows / 1.5))
    study_ids = unique_ints(rng, n_studies + bg_studies, 50_000_000, 60_000_000)
    studies["study_id"] = study_ids[:n_studies]
    studies["subject_id"] = patients["subject_id"].to_numpy()[studies["pidx"].to_numpy()]
    bg_view = np.where(rng.random(bg_studies) < 0.55, "PA", "AP")
    bg_lateral = (bg_view == "PA") & (rng.random(bg_studies) < 0.9)
    bg_view[rng.random(bg_studies) < 0.02] = ""
    dicoms = dicom_ids(rng, n_studies + int(studies["has_lateral"].sum()) + bg_studies + int(bg_lateral.sum()))
    studies["dicom_id"] = dicoms[:n_studies]
    return study_ids[n_studies:], dicoms[n_studies:], bg_view, bg_lateral


def _stays(rng: np.random.Generator, rng_bg: np.random.Generator, studies: pd.DataFrame, patients: pd.DataFrame,
           n_rp: int, scale: Scale) -> pd.DataFrame:
    """All ED stays (REFLACX patients' and background), with ids, subject ids, ages and their conditions (those
    without a study's episode drawn from the prior)."""
    stays = pd.concat([
        reflacx_stays(rng, studies, n_rp),
        background_stays(rng_bg, scale.stays, np.arange(n_rp, len(patients)), patients["anchor_year"].to_numpy()),
    ], ignore_index=True)
    pidx = stays["pidx"].to_numpy()
    stays["age"] = patients["anchor_age"].to_numpy()[pidx] + (years_of(stays["intime"].to_numpy())
                                                              - patients["anchor_year"].to_numpy()[pidx])
    cond = stays[list(CONDITIONS)].to_numpy(dtype=bool)
    prior = stays["prior"].to_numpy()
    cond[prior] = sample_conditions(rng_bg, stays["age"].to_numpy()[prior])
    stays[list(CONDITIONS)] = cond
    stays["stay_id"] = unique_ints(rng_bg, len(stays), 30_000_000, 40_000_000)
    stays["subject_id"] = patients["subject_id"].to_numpy()[pidx]
    return stays


def _triage(rng_bg: np.random.Generator, stays: pd.DataFrame, patients: pd.DataFrame) -> pd.DataFrame:
    """The triage table: messy vitals and a chief complaint for every stay that has triage."""
    has_triage = stays["has_triage"].to_numpy(dtype=bool)
    cond = stays.loc[has_triage, list(CONDITIONS)].to_numpy(dtype=bool)
    vitals = make_messy(rng_bg, sample_vitals(rng_bg, stays["age"].to_numpy()[has_triage], cond))
    triage = pd.concat([stays.loc[has_triage, ["subject_id", "stay_id"]].reset_index(drop=True), vitals], axis=1)
    triage["chiefcomplaint"] = chief_complaints(rng_bg, cond)
    return triage[list(schema.TRIAGE_COLUMNS)]


def _edstays(rng_bg: np.random.Generator, stays: pd.DataFrame, patients: pd.DataFrame) -> pd.DataFrame:
    """The edstays table (admitted stays get a ``hadm_id``)."""
    n_st, pidx = len(stays), stays["pidx"].to_numpy()
    disposition = np.array(DISPOSITIONS)[rng_bg.choice(len(DISPOSITIONS), n_st, p=DISPOSITION_P)]
    hadm = pd.array(unique_ints(rng_bg, n_st, 20_000_000, 30_000_000), dtype="Int64")
    hadm[disposition != "ADMITTED"] = pd.NA
    return pd.DataFrame({
        "subject_id": stays["subject_id"], "hadm_id": hadm, "stay_id": stays["stay_id"],
        "intime": datetime_strings(stays["intime"].to_numpy()),
        "outtime": datetime_strings(stays["outtime"].to_numpy()),
        "gender": patients["gender"].to_numpy()[pidx], "race": patients["race"].to_numpy()[pidx],
        "arrival_transport": np.array(TRANSPORTS)[rng_bg.choice(len(TRANSPORTS), n_st, p=TRANSPORT_P)],
        "disposition": disposition,
    })


def _summary(studies: pd.DataFrame, readings: list[Reading], tables_only: bool, jpegs: int,
             **counts: int) -> dict[str, int]:
    """Counts of what was written, and of the readings each reserved special case should make the join exclude."""
    role = studies["role"].to_numpy()
    per_image = np.bincount([r.image for r in readings], minlength=len(studies))

    def by_role(name: str) -> int:
        return int(per_image[role == name].sum())

    n_boxes = sum(len({schema.LABEL_SYNONYMS[m] for m in marks if m in schema.LABEL_SYNONYMS})
                  for r in readings for *_, marks in r.ellipses)
    return {
        "images": len(studies), "readings": len(readings),
        "readings_without_ellipses": sum(1 for r in readings if not r.ellipses),
        "ellipses": sum(len(r.ellipses) for r in readings), "boxes": n_boxes, "jpegs": jpegs,
        "patients": counts["patients"], "reflacx_patients": counts["reflacx_patients"],
        "ed_stays": counts["ed_stays"], "triage_rows": counts["triage_rows"], "cxr_rows": counts["cxr_rows"],
        "excl_eye_tracking_discarded": sum(r.eye_tracking_data_discarded for r in readings),
        "excl_no_cxr_metadata": by_role("no_cxr"),
        "excl_missing_image": 0 if tables_only else by_role("no_image"),
        "excl_no_containing_stay": by_role("no_stay"), "excl_no_triage": by_role("no_triage"),
        "readings_two_containing_stays": by_role("two_stays"),
    }
