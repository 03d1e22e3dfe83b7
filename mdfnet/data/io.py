"""Fast, typed reading of the source tables (``.csv`` or ``.csv.gz``) with pyarrow."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from mdfnet.data import schema


class SourceError(FileNotFoundError):
    """A required source table is missing or lacks required columns."""


class JoinError(ValueError):
    """The sources cannot be joined (bad values); the message names the file, row and value."""


def read_table(source: Path | bytes, columns: tuple[str, ...], types: dict[str, pa.DataType] | None = None, *,
               optional: tuple[str, ...] = (), name: str | None = None) -> pd.DataFrame:
    """Read ``columns`` (and those of ``optional`` the header has) of a CSV into pandas.

    ``source`` is a path (gz by extension) or the CSV's bytes (then ``name`` says where they came from, for
    errors). Missing columns raise naming the file. Free-text and id columns are passed in ``types`` so pyarrow
    never guesses them from the first block.
    """
    types = dict(types or {})
    name = name or str(source)

    def handle() -> Path | io.BytesIO:
        return io.BytesIO(source) if isinstance(source, bytes) else source

    try:
        header = pacsv.open_csv(handle(), read_options=pacsv.ReadOptions(block_size=1 << 16)).schema.names
    except pa.ArrowInvalid as e:  # empty file or not a CSV
        raise SourceError(f"{name}: cannot read as CSV ({e})") from e
    missing = [c for c in columns if c not in header]
    if missing:
        raise SourceError(f"{name}: missing column(s) {missing}; found {header}")
    wanted = [*columns, *(c for c in optional if c in header and c not in columns)]
    conv = pacsv.ConvertOptions(
        include_columns=wanted,
        column_types={k: v for k, v in types.items() if k in wanted},
        strings_can_be_null=True,
        null_values=[""],
    )
    return pacsv.read_csv(handle(), convert_options=conv).to_pandas()


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
