"""One place for the source schemas (file names, column names) and the task's classes and features.

Source trees under a SOURCE_DIR (same layout as the PhysioNet downloads, one folder per data set):

```
SOURCE_DIR/
  reflacx/main_data/metadata_phase_{1,2,3}.csv            one row per reading (id = reflacx_id)
  reflacx/main_data/<reflacx_id>/anomaly_location_ellipses.csv
  mimic-cxr-jpg/mimic-cxr-2.0.0-metadata.csv[.gz]
  mimic-cxr-jpg/files/p<first 2 digits of subject>/p<subject_id>/s<study_id>/<dicom_id>.jpg
  mimic-iv/hosp/patients.csv[.gz]                         (v1: mimic-iv/core/patients.csv[.gz])
  mimic-iv-ed/ed/edstays.csv[.gz]
  mimic-iv-ed/ed/triage.csv[.gz]
```
Every table may be plain ``.csv`` or ``.csv.gz``.

The same tables in the MIMIC-Eye layout (one folder per patient, as the builder github ChihchengHsieh/MIMIC-Eye
writes it; see :mod:`mdfnet.data.sources.mimic_eye` for what was confirmed about it):

```
SOURCE_DIR/
  spreadsheets/Hosp/patients.csv                          the whole MIMIC-IV patients table (the builder at HEAD
                                                          writes none per patient; patient_<id>/Core/ or Hosp/
                                                          patients.csv, which older code read, are read too)
  patient_<subject_id>/ED/edstays.csv
  patient_<subject_id>/ED/triage.csv
  patient_<subject_id>/CXR-JPG/cxr_meta.csv               (only the images in REFLACX or Eye Gaze)
  patient_<subject_id>/CXR-JPG/s<study_id>/<dicom_id>.jpg
  patient_<subject_id>/REFLACX/metadata.csv                (the three phases merged)
  patient_<subject_id>/REFLACX/main_data/<reflacx_id>/anomaly_location_ellipses.csv   (or REFLACX/<reflacx_id>/)
```
Every table the builder writes starts with pandas' index (a column with an empty name).
"""

from __future__ import annotations

from pathlib import Path

# ---------------------------------------------------------------- task: classes
CLASSES: tuple[str, ...] = (
    "Enlarged cardiac silhouette",
    "Atelectasis",
    "Pleural abnormality",
    "Consolidation",
    "Pulmonary edema",
)
"""The 5 lesion classes; detection label ids are 1..5 in this order (0 = background)."""

CLASS_TO_ID: dict[str, int] = {c: i + 1 for i, c in enumerate(CLASSES)}

LABEL_SYNONYMS: dict[str, str] = {
    "Enlarged cardiac silhouette": "Enlarged cardiac silhouette",
    "Atelectasis": "Atelectasis",
    "Pleural abnormality": "Pleural abnormality",
    "Pleural effusion": "Pleural abnormality",
    "Pleural thickening": "Pleural abnormality",
    "Consolidation": "Consolidation",
    "Pulmonary edema": "Pulmonary edema",
}
"""REFLACX label name (any phase) → one of :data:`CLASSES`. Names not here are not detection targets.

Phase 1 has *Pleural effusion* and *Pleural thickening* where phases 2–3 have *Pleural abnormality*; MDF-Net maps
both to *Pleural abnormality* (github ChihchengHsieh/multimodal-abnormalities-detection, ``[1.a]`` notebook)."""

# REFLACX's label columns, per phase. Phase 1 used one label set, phases 2 and 3 another (github ricbl/eyetracking:
# ``analyze_interrater*.py`` and ``examples_and_paper_numbers/interrater.py`` handle phase 1 apart from 2-3; the
# ``[1.a]`` notebook of github ChihchengHsieh/multimodal-abnormalities-detection, run on the real files, shows the
# phase-1-only columns empty for every P2xx/P300 reading). Sorted, as ``create_main_table.py`` (ricbl/eyetracking,
# ``post_processing_and_dataset_generation/``) writes them after the 8 columns of REFLACX_METADATA_COLUMNS.
REFLACX_PHASE1_LABELS: tuple[str, ...] = (
    "Airway wall thickening", "Atelectasis", "Consolidation", "Emphysema", "Enlarged cardiac silhouette", "Fibrosis",
    "Fracture", "Groundglass opacity", "Mass", "Nodule", "Other", "Pleural effusion", "Pleural thickening",
    "Pneumothorax", "Pulmonary edema", "Quality issue", "Support devices", "Wide mediastinum",
)
"""The 18 labels of REFLACX phase 1 (readings ``P1xxR…``)."""
REFLACX_PHASE23_LABELS: tuple[str, ...] = (
    "Abnormal mediastinal contour", "Acute fracture", "Atelectasis", "Consolidation", "Enlarged cardiac silhouette",
    "Enlarged hilum", "Groundglass opacity", "Hiatal hernia", "High lung volume / emphysema",
    "Interstitial lung disease", "Lung nodule or mass", "Other", "Pleural abnormality", "Pneumothorax",
    "Pulmonary edema", "Support devices",
)
"""The 16 labels of REFLACX phases 2 and 3 (readings ``P2xxR…``, ``P300R…``)."""

OTHER_REFLACX_LABELS: tuple[str, ...] = tuple(sorted(
    {*REFLACX_PHASE1_LABELS, *REFLACX_PHASE23_LABELS} - set(LABEL_SYNONYMS)))
"""The 19 labels of either phase that are not among the 5 classes (kept out of targets; a label neither here nor
in :data:`LABEL_SYNONYMS` is counted as unknown in the join's box report)."""


def reflacx_labels(phase: int) -> tuple[str, ...]:
    """The label columns of REFLACX phase ``phase`` (1, 2 or 3), sorted as REFLACX writes them."""
    if phase == 1:
        return REFLACX_PHASE1_LABELS
    if phase in (2, 3):
        return REFLACX_PHASE23_LABELS
    raise ValueError(f"REFLACX phase must be 1, 2 or 3, got {phase!r}")


# ---------------------------------------------------------------- task: clinical features
NUMERIC_FEATURES: tuple[str, ...] = (
    "age", "temperature", "heartrate", "resprate", "o2sat", "sbp", "dbp", "pain", "acuity",
)
CATEGORICAL_FEATURES: tuple[str, ...] = ("gender",)
ALL_FEATURES: tuple[str, ...] = NUMERIC_FEATURES + CATEGORICAL_FEATURES
TRIAGE_FEATURES: tuple[str, ...] = ("temperature", "heartrate", "resprate", "o2sat", "sbp", "dbp", "pain", "acuity")
"""The 8 triage columns taken from MIMIC-IV-ED ``triage`` (age comes from ``patients``, gender too)."""

GENDER_CODES: dict[str, int] = {"F": 1, "M": 2}
"""Gender → categorical index; 0 = missing/unknown. Embedding tables have ``len(GENDER_CODES) + 1`` rows."""

# ---------------------------------------------------------------- source columns
REFLACX_METADATA_COLUMNS: tuple[str, ...] = (
    "id", "split", "eye_tracking_data_discarded", "image", "dicom_id", "subject_id", "image_size_x", "image_size_y",
)
"""The first 8 columns of ``metadata_phase_{1,2,3}.csv``, then the phase's labels (:func:`reflacx_labels`);
ricbl/eyetracking ``create_main_table.py``. ``eye_tracking_data_discarded`` is written as ``True``/``False``;
REFLACX still writes the ellipse file of a discarded reading."""
REFLACX_DISCARDED = "eye_tracking_data_discarded"
REFLACX_ELLIPSE_COLUMNS: tuple[str, ...] = ("xmin", "ymin", "xmax", "ymax", "certainty")
"""The first 5 columns of ``anomaly_location_ellipses.csv`` (integer pixels of the original image, certainty 1-5),
then one ``True``/``False`` column per label of the reading's phase (ricbl/eyetracking ``create_main_table.py``)."""
REFLACX_LINE_END = "\r\n"
"""REFLACX's CSVs (metadata and ellipse files) end their lines with CRLF (ricbl/eyetracking
``create_main_table.py``); every reader here accepts both."""
CXR_METADATA_COLUMNS: tuple[str, ...] = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
PATIENTS_COLUMNS: tuple[str, ...] = ("subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod")
EDSTAYS_COLUMNS: tuple[str, ...] = (
    "subject_id", "hadm_id", "stay_id", "intime", "outtime", "gender", "race", "arrival_transport", "disposition",
)
TRIAGE_COLUMNS: tuple[str, ...] = (
    "subject_id", "stay_id", "temperature", "heartrate", "resprate", "o2sat", "sbp", "dbp", "pain", "acuity",
    "chiefcomplaint",
)
FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP")

# ---------------------------------------------------------------- source paths (relative to SOURCE_DIR)
REFLACX_DIR = "reflacx/main_data"
REFLACX_PHASES: tuple[int, ...] = (1, 2, 3)
CXR_DIR = "mimic-cxr-jpg"
CXR_METADATA = "mimic-cxr-jpg/mimic-cxr-2.0.0-metadata.csv"
PATIENTS_CANDIDATES: tuple[str, ...] = ("mimic-iv/hosp/patients.csv", "mimic-iv/core/patients.csv")
EDSTAYS = "mimic-iv-ed/ed/edstays.csv"
TRIAGE = "mimic-iv-ed/ed/triage.csv"


# ---------------------------------------------------------------- MIMIC-Eye layout (relative to a patient folder)
LAYOUTS: tuple[str, ...] = ("physionet", "mimic-eye")
"""Source layouts: the four PhysioNet downloads side by side, or MIMIC-Eye's per-patient folders."""
MIMIC_EYE_PATIENT_PREFIX = "patient_"
MIMIC_EYE_REFLACX_METADATA = "REFLACX/metadata.csv"
MIMIC_EYE_ELLIPSE_DIRS: tuple[str, ...] = ("REFLACX/main_data", "REFLACX")
"""Where a reading's folder may be, in the order looked up (the authors' code has used both)."""
MIMIC_EYE_CXR_METADATA = "CXR-JPG/cxr_meta.csv"
MIMIC_EYE_PATIENTS_CANDIDATES: tuple[str, ...] = ("Core/patients.csv", "Hosp/patients.csv")
"""Per-patient patients tables: the MDF-Net code reads ``Core/patients.csv`` (``data/paths.py``), the builder at
HEAD writes none (only :data:`MIMIC_EYE_SHARED_PATIENTS`); read where present."""
MIMIC_EYE_SHARED_PATIENTS = "spreadsheets/Hosp/patients.csv"
"""Relative to SOURCE_DIR: MIMIC-Eye's copy of the whole MIMIC-IV ``patients`` table, the only one the builder
writes (github ChihchengHsieh/MIMIC-Eye, ``descriptions_backup.md`` and the ``[Patient-Level]`` notebooks)."""
MIMIC_EYE_EDSTAYS = "ED/edstays.csv"
MIMIC_EYE_TRIAGE = "ED/triage.csv"

# ---------------------------------------------------------------- provenance (relative to SOURCE_DIR)
SYNTHETIC_MARKER = "SYNTHETIC.json"
"""Written at the top of SOURCE_DIR by the synthetic generator (:func:`mdfnet.data.synthetic.generate`: its seed,
studies, image size and layout), in either layout; no PhysioNet or MIMIC-Eye download has it. The join copies it
into ``join_meta.json`` (key ``synthetic``, ``null`` without it), so the steps after it, the MLflow runs and the
model card know whether the data were made up."""


def mimic_eye_patient_dir(subject_id: int) -> str:
    return f"{MIMIC_EYE_PATIENT_PREFIX}{int(subject_id)}"


def image_relpath(layout: str, subject_id: int, study_id: int, dicom_id: str) -> str:
    """Path of a CXR JPEG relative to SOURCE_DIR in ``layout`` (one of :data:`LAYOUTS`)."""
    if layout == "mimic-eye":
        return f"{mimic_eye_patient_dir(subject_id)}/CXR-JPG/s{int(study_id)}/{dicom_id}.jpg"
    if layout == "physionet":
        return f"{CXR_DIR}/{cxr_image_relpath(subject_id, study_id, dicom_id)}"
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def mimic_eye_ellipses_path(subject_id: int, reflacx_id: str, folder: str = MIMIC_EYE_ELLIPSE_DIRS[0]) -> str:
    return f"{mimic_eye_patient_dir(subject_id)}/{folder}/{reflacx_id}/anomaly_location_ellipses.csv"


def reflacx_metadata_path(phase: int) -> str:
    return f"{REFLACX_DIR}/metadata_phase_{phase}.csv"


def ellipses_path(reflacx_id: str) -> str:
    return f"{REFLACX_DIR}/{reflacx_id}/anomaly_location_ellipses.csv"


def cxr_image_relpath(subject_id: int, study_id: int, dicom_id: str) -> str:
    """``files/p10/p10000032/s50414267/<dicom_id>.jpg`` relative to the MIMIC-CXR-JPG root."""
    s = str(int(subject_id))
    return f"files/p{s[:2]}/p{s}/s{int(study_id)}/{dicom_id}.jpg"


def find_table(source_dir: str | Path, relpath: str) -> Path | None:
    """Return ``relpath`` or ``relpath + '.gz'`` under ``source_dir`` if either exists, else None."""
    base = Path(source_dir)
    for cand in (base / relpath, base / (relpath + ".gz")):
        if cand.is_file():
            return cand
    return None
