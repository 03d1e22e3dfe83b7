"""Source readers: the same tables (REFLACX readings and ellipses, CXR metadata, patients, ED stays, triage;
frames documented in :mod:`mdfnet.data.sources.tables`) from either layout, behind one small interface
(:class:`Source`), so that one join serves both.

=============  ======================================================  ==========================================
layout         what SOURCE_DIR holds                                   reader
=============  ======================================================  ==========================================
``physionet``  ``reflacx/``, ``mimic-cxr-jpg/``, ``mimic-iv/``,        :class:`~.physionet.PhysionetSource`
               ``mimic-iv-ed/`` (the four downloads)
``mimic-eye``  ``patient_<subject_id>/`` folders (MIMIC-Eye)           :class:`~.mimic_eye.MimicEyeSource`
=============  ======================================================  ==========================================

:func:`open_source` detects the layout (``layout="auto"``) or checks the one asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import pandas as pd

from mdfnet.data import schema
from mdfnet.data.io import SourceError
from mdfnet.data.sources.mimic_eye import MimicEyeSource, patient_dirs
from mdfnet.data.sources.physionet import PhysionetSource
from mdfnet.data.sources.tables import BOX_COLUMNS, read_ellipses

__all__ = ["BOX_COLUMNS", "MimicEyeSource", "PhysionetSource", "Source", "detect_layout", "open_source",
           "read_ellipses"]


class Source(Protocol):
    """One layout's reader; each method returns the frame of the same name in :mod:`mdfnet.data.sources.tables`."""

    layout: str
    root: Path

    def readings(self) -> pd.DataFrame: ...

    def ellipse_paths(self, readings: pd.DataFrame) -> list[Path]:
        """The ``anomaly_location_ellipses.csv`` of each row of ``readings`` (same order; may not exist)."""
        ...

    def cxr(self) -> pd.DataFrame: ...

    def patients(self) -> pd.DataFrame: ...

    def stays(self) -> pd.DataFrame: ...

    def triage(self) -> pd.DataFrame: ...

    def image_relpath(self, subject_id: int, study_id: int, dicom_id: str) -> str:
        """The JPEG's path relative to the source folder."""
        ...


_LOOKED_FOR = {
    "physionet": f"{schema.REFLACX_DIR}/ (with metadata_phase_{{1,2,3}}.csv; the four PhysioNet sets)",
    "mimic-eye": f"{schema.MIMIC_EYE_PATIENT_PREFIX}<subject_id>/ folders (MIMIC-Eye)",
}


def _markers(root: Path) -> dict[str, bool]:
    """Which layouts' top-level folders ``root`` has."""
    return {"physionet": (root / schema.REFLACX_DIR).is_dir(), "mimic-eye": bool(patient_dirs(root))}


def detect_layout(source_dir: str | Path) -> str:
    """``"physionet"`` or ``"mimic-eye"`` from the folders under ``source_dir``; :class:`SourceError` when it has
    neither layout's folders, or both."""
    root = Path(source_dir)
    found = [name for name, present in _markers(root).items() if present]
    if len(found) == 1:
        return found[0]
    if not found:
        raise SourceError(f"cannot tell the source layout of {root}: looked for "
                          f"{' and for '.join(_LOOKED_FOR.values())}; found neither")
    raise SourceError(f"{root} has both {' and '.join(_LOOKED_FOR.values())}: pass layout 'physionet' or "
                      f"'mimic-eye' (mdfnet join --layout)")


def open_source(source_dir: str | Path, layout: str = "auto") -> Source:
    """The reader for ``source_dir``: ``layout`` "auto" detects it (:func:`detect_layout`); "physionet" or
    "mimic-eye" must match the folders found (else :class:`SourceError` saying what is there instead)."""
    root = Path(source_dir)
    if layout not in ("auto", *schema.LAYOUTS):
        raise ValueError(f"layout must be 'auto' or one of {schema.LAYOUTS}, got {layout!r}")
    if not root.is_dir():
        raise SourceError(f"source directory {root} does not exist")
    if layout == "auto":
        layout = detect_layout(root)
    else:
        markers = _markers(root)
        if not markers[layout]:
            other = [name for name, present in markers.items() if present]
            hint = f"; it looks like layout {other[0]!r}" if other else ""
            raise SourceError(f"layout {layout!r} was asked for but {root} has no {_LOOKED_FOR[layout]}{hint}")
    return MimicEyeSource(root) if layout == "mimic-eye" else PhysionetSource(root)
