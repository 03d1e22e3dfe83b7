"""MIMIC-Eye: the same tables repackaged per patient (``patient_<subject_id>/``; layout in
:mod:`mdfnet.data.schema`), read into the frames of :mod:`mdfnet.data.sources.tables`.

What was checked, and where
===========================
MIMIC-Eye 1.0.0 is restricted-access (https://physionet.org/content/mimic-eye-multimodal-datasets/1.0.0/,
published 2023-03-23; only the page's abstract was readable here, not its file listing). Confirmed instead from
the authors' public code and from outputs saved in their notebooks, which were run on real copies:

- *Builder* github.com/ChihchengHsieh/MIMIC-Eye (HEAD db81d35, 2023-03-08): ``[Patient-Level] (1)…(4)``
  notebooks, ``utils/importer.py``, ``descriptions_backup.md`` (the folder tree). One ``patient_<subject_id>``
  folder per patient with a CXR in REFLACX or Eye Gaze (3,689 images, 3,192 patients). Tables are written by
  pandas ``to_csv`` with its index, so each CSV starts with a column whose name is empty.
  ``ED/{edstays,triage,diagnosis,medrecon,pyxis,vitalsign}.csv`` hold every MIMIC-IV-ED row of the subject.
  ``CXR-JPG/cxr_meta.csv`` holds the subject's rows of ``mimic-cxr-2.0.0-metadata.csv`` (only images in
  REFLACX or Eye Gaze): the same 12 columns plus ``in_eye_gaze``, ``in_reflacx``, ``StudyDateTime``
  (``float(str(StudyDate) + str(StudyTime))``) and ``stay_id`` (the builder's own match: strict bounds, kept only
  when exactly one stay contains the study). The join ignores those last two and matches stays itself.
  Images: ``CXR-JPG/s<study_id>/<dicom_id>.jpg``. Only images in REFLACX or Eye Gaze are kept (as in
  ``cxr_meta.csv``; an earlier reading of the builder here said whole study folders, laterals too: either way the
  join opens only the JPEGs that REFLACX read).
  ``REFLACX/metadata.csv`` is ``pd.concat`` of ``metadata_phase_{1,2,3}.csv`` filtered on the subject: the phases
  are **merged, without a phase column**, with the union of the label columns (empty where a phase lacks one),
  and the index column keeps the row number within its phase file. The union is the 26 labels of phase 1 (18)
  and phases 2-3 (16) (:data:`mdfnet.data.schema.REFLACX_PHASE1_LABELS`, ``REFLACX_PHASE23_LABELS``); a
  reading's ``eye_tracking_data_discarded`` is kept as REFLACX wrote it. Reading folders
  ``REFLACX/main_data/<reflacx_id>/`` (``anomaly_location_ellipses.csv``, ``fixations.csv``, …) and
  ``REFLACX/gaze_data/<reflacx_id>/``. Other folders, not read here: ``CXR-DICOM/`` (``s<study_id>.txt``
  reports), ``EyeGaze/``, ``Hosp/`` (no patients table in it), ``ICU/``; ``spreadsheets/`` at the root holds
  ``Hosp/patients.csv``, the whole MIMIC-IV ``patients`` table, the only patients table the builder at HEAD writes
  (read here).
- *Column names* as printed by ``[1.a] reflacx_dataset_preprocessing.ipynb`` of
  github.com/ChihchengHsieh/multimodal-abnormalities-detection (the MDF-Net code; 3,052 readings, 670 joined)
  and ``[preprocessing] reflacx-eye.ipynb`` of github.com/ChihchengHsieh/MIMIC-Eye-applications: ``cxr_meta``:
  ``Unnamed: 0, dicom_id, subject_id, study_id, PerformedProcedureStepDescription, ViewPosition, Rows, Columns,
  StudyDate, StudyTime, ProcedureCodeSequence_CodeMeaning, ViewCodeSequence_CodeMeaning,
  PatientOrientationCodeSequence_CodeMeaning, in_eye_gaze, in_reflacx, StudyDateTime, stay_id``; REFLACX
  metadata: ``Unnamed: 0, id, split, eye_tracking_data_discarded, image, dicom_id, subject_id, image_size_x,
  image_size_y`` and 26 label columns. The second notebook reads ellipses at
  ``patient_<id>/REFLACX/main_data/<id>/anomaly_location_ellipses.csv``.
- *Per-patient paths the MDF-Net authors read* (``data/paths.py``, ``PatientDataPaths``, in both repositories):
  ``Core/patients.csv``, ``ED/edstays.csv``, ``ED/triage.csv``, ``CXR-JPG/cxr_meta.csv``, ``REFLACX/metadata.csv``,
  ``REFLACX/<reflacx_id>/anomaly_location_ellipses.csv``.
- *Phase from the id*: all 3,052 ids of the builder's ``draft/reflacx_metadata.csv`` read ``P<phase><2 digits>R…``
  (P1xx: 295 rows, the ones with the phase-1 label columns; P2xx: 250 and P300: 2,507, with the phase-2/3 ones).

Not confirmed, hence handled both ways: whether reading folders sit under ``REFLACX/main_data/`` (builder, 2023)
or directly under ``REFLACX/`` (``paths.py``) — both looked up; per-patient ``Core/patients.csv`` (what
``paths.py`` reads, perhaps from an earlier build) or ``Hosp/patients.csv`` besides ``spreadsheets/Hosp/`` — all
read where present; ``\\n`` or ``\\r\\n`` line ends (built on Windows; REFLACX's own files are CRLF) and
``.csv.gz`` — all accepted. Also unconfirmed: the MIMIC-IV/-ED versions inside (the builder points at 2.0; the
columns read are the same in 1.0 and 2.x).

Duplicates: a table's per-patient files are concatenated; rows repeated exactly are dropped (logged); rows with
the same key and other values raise :class:`~mdfnet.data.io.SourceError` naming the files — except REFLACX
readings, which the join itemises as "duplicate reading id".
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from mdfnet.data import schema
from mdfnet.data.io import SourceError
from mdfnet.data.sources.tables import (
    CXR,
    PATIENTS,
    READINGS,
    STAYS,
    TRIAGE,
    TableSpec,
    parse_discarded,
    read_many,
    readings_frame,
)

log = logging.getLogger(__name__)

PHASE_FROM_ID = r"^P([1-3])\d\dR"
"""REFLACX id → phase (the merged metadata has no phase column)."""


def patient_dirs(root: Path) -> list[str]:
    """Names of the ``patient_*`` folders directly under ``root``, sorted."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    return sorted(e.name for e in entries if e.name.startswith(schema.MIMIC_EYE_PATIENT_PREFIX) and e.is_dir())


class MimicEyeSource:
    """Reads the tables of :mod:`mdfnet.data.sources.tables` from the per-patient files (see module docstring)."""

    layout = "mimic-eye"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.patient_dirs = patient_dirs(self.root)
        if not self.patient_dirs:
            raise SourceError(f"no {schema.MIMIC_EYE_PATIENT_PREFIX}<subject_id>/ folders under {self.root}")

    def readings(self) -> pd.DataFrame:
        """Every ``REFLACX/metadata.csv`` row, the phase taken from the id, in the PhysioNet order (phase, then
        the row's place in its phase file as kept in the index column; by id where that column is absent)."""
        df = self._read((schema.MIMIC_EYE_REFLACX_METADATA,), READINGS, optional=("",), on_conflict="keep")
        phase = df["id"].str.extract(PHASE_FROM_ID, expand=False)
        if phase.isna().any():
            bad = df.loc[phase.isna(), ["id", "subject_id"]].head(5).to_records(index=False).tolist()
            raise SourceError(f"REFLACX ids {bad} (id, subject_id) in patient_*/{schema.MIMIC_EYE_REFLACX_METADATA}: "
                              f"expected P<phase 1-3><2 digits>R<digits>, the only record of the phase in MIMIC-Eye")
        df["reflacx_phase"] = phase.astype("int64")
        where = [f"patient_{s}/{schema.MIMIC_EYE_REFLACX_METADATA} (reading {rid!r})"
                 for s, rid in zip(df["subject_id"], df["id"], strict=True)]
        df[schema.REFLACX_DISCARDED] = parse_discarded(df[schema.REFLACX_DISCARDED], where)
        order = ["reflacx_phase", ""] if "" in df.columns and df[""].notna().all() else ["reflacx_phase", "id"]
        df = df.sort_values(order, kind="stable").drop(columns=[""], errors="ignore").reset_index(drop=True)
        return readings_frame(df)

    def ellipse_paths(self, readings: pd.DataFrame) -> list[Path]:
        """Per reading: ``REFLACX/main_data/<id>/…`` if that file exists, else ``REFLACX/<id>/…`` (may be absent)."""
        paths = []
        for subject, rid in zip(readings["subject_id"], readings["reflacx_id"], strict=True):
            cands = [self.root / schema.mimic_eye_ellipses_path(subject, rid, d) for d in schema.MIMIC_EYE_ELLIPSE_DIRS]
            paths.append(next((p for p in cands if p.is_file()), cands[-1]))
        return paths

    def cxr(self) -> pd.DataFrame:
        return self._read((schema.MIMIC_EYE_CXR_METADATA,), CXR)

    def patients(self) -> pd.DataFrame:
        return self._read(schema.MIMIC_EYE_PATIENTS_CANDIDATES, PATIENTS, shared=schema.MIMIC_EYE_SHARED_PATIENTS)

    def stays(self) -> pd.DataFrame:
        return self._read((schema.MIMIC_EYE_EDSTAYS,), STAYS)

    def triage(self) -> pd.DataFrame:
        return self._read((schema.MIMIC_EYE_TRIAGE,), TRIAGE)

    def image_relpath(self, subject_id: int, study_id: int, dicom_id: str) -> str:
        return schema.image_relpath(self.layout, subject_id, study_id, dicom_id)

    def _read(self, relpaths: tuple[str, ...], spec: TableSpec, *, shared: str | None = None,
              optional: tuple[str, ...] = (), on_conflict: str = "raise") -> pd.DataFrame:
        """``spec``'s table from every ``patient_*/<relpath>`` (and the ``shared`` file under the root)."""
        paths = [self.root / d / rel for rel in relpaths for d in self.patient_dirs]
        if shared:
            paths.append(self.root / shared)
        df, n_files = read_many(paths, spec, optional=optional, on_conflict=on_conflict)
        if n_files == 0:
            looked = [f"patient_<subject_id>/{rel}[.gz]" for rel in relpaths] + ([f"{shared}[.gz]"] if shared else [])
            raise SourceError(f"no {spec.name} table under {self.root} ({len(self.patient_dirs)} patient folders): "
                              f"looked for {', '.join(looked)}")
        log.debug("%s: %d rows from %d files", spec.name, len(df), n_files)
        return df
