"""Fast, typed reading of the source tables (``.csv`` or ``.csv.gz``) with pyarrow."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from mdfnet.data import schema


class SourceError(FileNotFoundError):
    """A required source table is missing or lacks required columns."""


def read_table(path: Path, columns: tuple[str, ...], types: dict[str, pa.DataType] | None = None) -> pd.DataFrame:
    """Read ``columns`` of a CSV (gz by extension) into pandas; missing columns raise naming the file.

    Free-text and id columns are passed in ``types`` so pyarrow never guesses them from the first block.
    """
    types = dict(types or {})
    try:
        header = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16)).schema.names
    except pa.ArrowInvalid as e:  # empty file or not a CSV
        raise SourceError(f"{path}: cannot read as CSV ({e})") from e
    missing = [c for c in columns if c not in header]
    if missing:
        raise SourceError(f"{path}: missing column(s) {missing}; found {header}")
    conv = pacsv.ConvertOptions(
        include_columns=list(columns),
        column_types={k: v for k, v in types.items() if k in columns},
        strings_can_be_null=True,
        null_values=[""],
    )
    table = pacsv.read_csv(path, convert_options=conv)
    return table.to_pandas()


def require_table(source_dir: str | Path, relpath: str) -> Path:
    found = schema.find_table(source_dir, relpath)
    if found is None:
        raise SourceError(f"source table {relpath}[.gz] not found under {source_dir}")
    return found


def find_patients_table(source_dir: str | Path) -> Path:
    for rel in schema.PATIENTS_CANDIDATES:
        found = schema.find_table(source_dir, rel)
        if found is not None:
            return found
    raise SourceError(
        f"patients table not found under {source_dir}: looked for "
        + ", ".join(f"{r}[.gz]" for r in schema.PATIENTS_CANDIDATES)
    )
