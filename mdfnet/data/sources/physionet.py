"""The four PhysioNet downloads side by side (REFLACX, MIMIC-CXR-JPG, MIMIC-IV, MIMIC-IV-ED; layout in
:mod:`mdfnet.data.schema`): one table file each (``.csv`` or ``.csv.gz``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mdfnet.data import schema
from mdfnet.data.io import SourceError, find_patients_table, read_table, require_table
from mdfnet.data.sources.tables import (
    CXR,
    PATIENTS,
    READINGS,
    STAYS,
    TRIAGE,
    TableSpec,
    parse_discarded,
    readings_frame,
)


class PhysionetSource:
    """Reads the tables of :mod:`mdfnet.data.sources.tables` from the four data sets' own files."""

    layout = "physionet"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def readings(self) -> pd.DataFrame:
        """All ``metadata_phase_*.csv`` rows (phase 1, 2, 3 in file order) with ``reflacx_phase``; at least one
        phase file must exist. ``eye_tracking_data_discarded`` parsed to bool (:func:`parse_discarded`)."""
        frames = []
        for phase in schema.REFLACX_PHASES:
            path = schema.find_table(self.root, schema.reflacx_metadata_path(phase))
            if path is None:
                continue
            df = read_table(path, READINGS.columns, READINGS.types)
            where = [f"{path}, line {i + 2} (reading {rid!r})" for i, rid in enumerate(df["id"])]
            df[schema.REFLACX_DISCARDED] = parse_discarded(df[schema.REFLACX_DISCARDED], where)
            df["reflacx_phase"] = phase
            frames.append(df)
        if not frames:
            raise SourceError(f"no REFLACX metadata_phase_{{1,2,3}}.csv under {self.root / schema.REFLACX_DIR}")
        return readings_frame(pd.concat(frames, ignore_index=True))

    def ellipse_paths(self, readings: pd.DataFrame) -> list[Path]:
        return [self.root / schema.ellipses_path(rid) for rid in readings["reflacx_id"]]

    def cxr(self) -> pd.DataFrame:
        return self._table(schema.CXR_METADATA, CXR)

    def patients(self) -> pd.DataFrame:
        return read_table(find_patients_table(self.root), PATIENTS.columns, PATIENTS.types)

    def stays(self) -> pd.DataFrame:
        return self._table(schema.EDSTAYS, STAYS)

    def triage(self) -> pd.DataFrame:
        return self._table(schema.TRIAGE, TRIAGE)

    def image_relpath(self, subject_id: int, study_id: int, dicom_id: str) -> str:
        return schema.image_relpath(self.layout, subject_id, study_id, dicom_id)

    def _table(self, relpath: str, spec: TableSpec) -> pd.DataFrame:
        return read_table(require_table(self.root, relpath), spec.columns, spec.types)
