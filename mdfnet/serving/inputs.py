"""A request as a person types it → checked model inputs (torch-free).

A request is a table with one row per study: ``image`` (base64 of the JPEG/PNG/DICOM file), the ten clinical
fields by their triage names (:data:`FIELDS`) and an optional ``study`` id. Clinical values go through the same
cleaning as ``preprocess`` (:func:`mdfnet.data.clean.clean_clinical`: pain ``"8-10"`` → 9, a temperature in °C →
°F, ``female`` → ``F``); empty values (``null``, ``""``) are imputed later with the train split's medians. A
value the cleaning would have to throw away is refused instead (:class:`RequestError` names row, field, value and
what is expected): in training data an implausible value is noise to drop, in a request it is a typo to fix. The
one exception is free text in ``pain`` ("unable", "UA"), which MIMIC-IV-ED records routinely and which the
training data also treats as missing.
"""

from __future__ import annotations

import base64
import binascii
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mdfnet.data import schema
from mdfnet.data.clean import _NUMBER, _RANGE, CELSIUS_RANGE, PLAUSIBLE, clean_clinical

FIELDS: tuple[str, ...] = schema.ALL_FEATURES
"""Clinical fields of a request (all required as columns; values may be empty)."""
TEXT_FIELDS: tuple[str, ...] = ("pain", "gender")
"""Fields sent as text (pain may be a range such as ``"8-10"``); the others are numbers."""
MAX_IMAGE_BYTES = 64 * 1024 * 1024
"""Largest accepted encoded image (64 MiB); a MIMIC-CXR DICOM is ~10 MB."""


class RequestError(ValueError):
    """A request cannot be scored; the message names the row, the field, the value and what was expected."""


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _number(row: int, name: str, value: Any) -> float:
    """A numeric field's value → float (NaN when empty); numbers written as text are accepted."""
    if _missing(value):
        return math.nan
    if isinstance(value, bool) or not isinstance(value, numbers.Real | str):
        raise RequestError(f"row {row}: {name}={value!r} ({type(value).__name__}) is not a number")
    try:
        out = float(value)
    except ValueError:
        raise RequestError(f"row {row}: {name}={value!r} is not a number") from None
    if not math.isfinite(out):
        raise RequestError(f"row {row}: {name}={value!r} is not a finite number")
    return out


def _text(row: int, name: str, value: Any) -> str | None:
    if _missing(value):
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real | str):
        raise RequestError(f"row {row}: {name}={value!r} ({type(value).__name__}) is not text or a number")
    return str(value).strip()


def request_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Records (e.g. parsed JSON) → the typed request table: numeric fields float64, ``pain``/``gender``/``image``/
    ``study`` object. Unknown keys are refused (a misspelt field would otherwise be silently imputed)."""
    allowed = {"image", "study", *FIELDS}
    rows = []
    for i, rec in enumerate(records):
        unknown = sorted(set(rec) - allowed)
        if unknown:
            raise RequestError(f"row {i}: unknown field(s) {unknown}; expected {sorted(allowed)}")
        missing = [f for f in ("image", *FIELDS) if f not in rec]
        if missing:
            raise RequestError(f"row {i}: missing field(s) {missing} (send null for an unknown value)")
        row = {f: (_text(i, f, rec[f]) if f in TEXT_FIELDS else _number(i, f, rec[f])) for f in FIELDS}
        rows.append({"image": rec["image"], **({"study": str(rec["study"])} if "study" in rec else {}), **row})
    frame = pd.DataFrame(rows)
    for f in FIELDS:
        if f not in TEXT_FIELDS and f in frame:
            frame[f] = frame[f].astype("float64")
    return frame


def _refusal(field: str, raw: Any) -> str:
    """Why a provided value of ``field`` would be cleaned away (what is expected instead)."""
    lo, hi = PLAUSIBLE[field]
    if field == "temperature":
        return (f"outside the plausible range ({lo:g}-{hi:g} °F, or {CELSIUS_RANGE[0]:g}-{CELSIUS_RANGE[1]:g} °C "
                "converted)")
    if field == "acuity":
        return "not an integer acuity 1-5 (ESI)"
    if field == "pain":
        return f"outside the pain scale {lo:g}-{hi:g}"
    return f"outside the plausible range {lo:g}-{hi:g}"


def clean_request(frame: pd.DataFrame) -> pd.DataFrame:
    """Check a request table and clean its clinical values exactly as ``preprocess`` does; returns the cleaned
    clinical columns (:data:`FIELDS`, one row per request row). Raises :class:`RequestError`."""
    (cleaned,) = clean_requests([frame])
    if isinstance(cleaned, RequestError):
        raise cleaned
    return cleaned


def clean_requests(frames: Sequence[pd.DataFrame]) -> list[pd.DataFrame | RequestError]:
    """:func:`clean_request` of several requests at once: what it returns for each request, or the
    :class:`RequestError` it raises (row numbers within that request) in its place.

    The values of all requests go through one call of :func:`~mdfnet.data.clean.clean_clinical`, whose pandas
    work costs about the same for one row as for a hundred (~10-40 ms on 2 shared cores, the largest part of a
    one-study request after the model): concurrent requests scored together pay it once."""
    results: list[pd.DataFrame | RequestError | None] = [None] * len(frames)
    typed: list[tuple[int, pd.DataFrame]] = []
    for k, frame in enumerate(frames):
        try:
            typed.append((k, _typed(frame)))
        except RequestError as e:
            results[k] = e
    if typed:
        cleaned, _report = clean_clinical(pd.concat([t for _, t in typed], ignore_index=True))
        start = 0
        for k, t in typed:
            part = cleaned.iloc[start:start + len(t)].reset_index(drop=True)[list(FIELDS)]
            start += len(t)
            refusal = _first_refusal(t, part)
            results[k] = RequestError(refusal) if refusal else part
    return results  # type: ignore[return-value]


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The request's clinical columns, each value checked for its type: numbers float64 (NaN when empty), text
    fields object (``None`` when empty)."""
    missing = [f for f in FIELDS if f not in frame.columns]
    if missing:
        raise RequestError(f"missing field(s) {missing}; a request has columns image, {', '.join(FIELDS)} "
                           "(null for an unknown value)")
    raw = frame[list(FIELDS)].reset_index(drop=True)
    return pd.DataFrame({f: pd.Series([_text(i, f, v) for i, v in enumerate(raw[f])], dtype="object")
                         if f in TEXT_FIELDS else
                         pd.Series([_number(i, f, v) for i, v in enumerate(raw[f])], dtype="float64")
                         for f in FIELDS})


def _first_refusal(typed: pd.DataFrame, cleaned: pd.DataFrame) -> str | None:
    """The first value (field by field, then row) that was given but cleaned away, as a refusal message."""
    for f in FIELDS:
        for i, (given, value) in enumerate(zip(typed[f], cleaned[f], strict=True)):
            if _missing(given) or not _missing(value):
                continue
            if f == "gender":
                return f"row {i}: gender={given!r} is not one of F, M, female, male (or null)"
            if f == "pain" and not (_NUMBER.match(str(given)) or _RANGE.match(str(given))):
                continue  # free text ("unable"): missing, as in the training data
            return f"row {i}: {f}={given!r} is {_refusal(f, given)}"
    return None


def decode_base64_image(row: int, value: Any) -> bytes:
    """The ``image`` cell → file bytes; refuses non-text, invalid base64, empty and oversized images."""
    if not isinstance(value, str | bytes) or _missing(value):
        raise RequestError(f"row {row}: image must be the base64 text of a JPEG, PNG or DICOM file, "
                           f"got {type(value).__name__}")
    if len(value) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise RequestError(f"row {row}: image is {len(value)} base64 characters; the limit is "
                           f"{MAX_IMAGE_BYTES // 2**20} MiB of image data")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(f"row {row}: image is not valid base64 ({e})") from None
    if not data:
        raise RequestError(f"row {row}: image is empty")
    return data


def encode_image(data: bytes) -> str:
    """File bytes → the base64 text a request carries."""
    return base64.b64encode(data).decode("ascii")


def study_ids(frame: pd.DataFrame) -> list[str]:
    """The ``study`` column as text, or the row numbers when the request has none."""
    if "study" in frame.columns:
        return [str(s) if not _missing(s) else str(i) for i, s in enumerate(frame["study"])]
    return [str(i) for i in range(len(frame))]


def example_request(medians: Mapping[str, float], image: bytes) -> pd.DataFrame:
    """A one-row request with ``image`` and the train medians as typed values (the logged input example:
    no patient's data in the model artefact)."""
    row: dict[str, Any] = {"study": "example", "image": encode_image(image)}
    for f in FIELDS:
        if f == "gender":
            row[f] = "F"
        elif f == "pain":
            row[f] = f"{round(medians.get(f, 0.0)):d}"
        elif f == "acuity":
            row[f] = float(min(max(round(medians.get(f, 3.0)), 1), 5))
        else:
            row[f] = float(np.round(medians.get(f, 0.0), 1))
    return pd.DataFrame([row])
