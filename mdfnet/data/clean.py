"""Cleaning of the raw clinical values, with a report of every change (column, rule, count).

Rules, applied in this order:

- numeric features given as text (triage tables are read as text, so one odd cell never stops a join): parsed;
  what is not a number ("n/a", "12 bpm") → missing, counted;
- ``pain`` (free text in MIMIC-IV-ED): a number → that number; a range "a-b" → its midpoint ("8-10" → 9);
  anything else ("UA", "unable", "", "Critical" …) → missing;
- ``temperature``: values in [25, 45] are taken as °C (a °C value in the °F field) and converted to °F;
- every numeric feature outside its physiological range (:data:`PLAUSIBLE`) → missing;
- ``acuity`` must be an integer 1..5;
- ``gender``: "F"/"M" in any case or spelled out ("female", "Male") → "F"/"M"; anything else → missing.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from mdfnet.data import schema

PLAUSIBLE: dict[str, tuple[float, float]] = {
    "age": (0, 120),
    "temperature": (85.0, 110.0),  # °F, after the °C conversion
    "heartrate": (20, 300),
    "resprate": (4, 80),
    "o2sat": (50, 100),
    "sbp": (50, 300),
    "dbp": (20, 200),
    "pain": (0, 10),
    "acuity": (1, 5),
}
"""Inclusive physiological ranges; values outside are implausible and set missing."""

CELSIUS_RANGE = (25.0, 45.0)
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")
_RANGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*$")
_GENDER = {"f": "F", "female": "F", "m": "M", "male": "M"}


def parse_pain(values: pd.Series) -> tuple[pd.Series, dict[str, int]]:
    """Free-text pain → float (NaN when not a number or range); returns the values and rule counts."""
    text = values.astype("string").str.strip()
    num = text.str.extract(_NUMBER)[0].astype("float64")
    rng = text.str.extract(_RANGE).astype("float64")
    mid = (rng[0] + rng[1]) / 2
    out = num.fillna(mid)
    is_missing = text.isna() | (text == "")
    counts = {
        "text range a-b -> midpoint": int(mid.notna().sum()),
        "non-numeric text -> missing": int((out.isna() & ~is_missing).sum()),
    }
    return out.set_axis(values.index), counts


def _empty(values: pd.Series) -> pd.Series:
    """Missing or blank text (a numeric column has no text: only its missing values)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.isna()  # as the text test below, without its string conversion (serving cleans per request)
    return values.isna() | (values.astype("string").str.strip() == "")


def _to_numbers(values: pd.Series) -> tuple[pd.Series, int]:
    """A column as float64 (text such as ``" 98.6 "`` parsed; ``"n/a"``, ``"12 bpm"`` → NaN) and how many non-blank
    values were not numbers. Numeric columns pass through unchanged."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64"), 0
    parsed = pd.to_numeric(values.astype("string").str.strip(), errors="coerce").astype("float64")
    return parsed, int((parsed.isna() & ~_empty(values)).sum())


def clean_clinical(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clean the 9 numeric features and gender of ``df``; return (cleaned copy, report).

    The report has one row per (column, rule) with the number of values it changed, including
    ``missing in source`` counts, so every value that became missing is accounted for.
    """
    out = df.copy()
    rows: list[tuple[str, str, int]] = []
    missing_cols = [c for c in (*schema.NUMERIC_FEATURES, "gender") if c not in out.columns]
    if missing_cols:
        raise KeyError(f"clinical columns {missing_cols} missing; found {list(out.columns)}")

    raw_missing: dict[str, int] = {}
    for c in schema.NUMERIC_FEATURES:
        raw_missing[c] = int(_empty(out[c]).sum())
    pain, pain_counts = parse_pain(out["pain"])
    out["pain"] = pain
    rows += [("pain", rule, n) for rule, n in pain_counts.items()]

    for c in schema.NUMERIC_FEATURES:
        if c == "pain":
            continue
        values, not_numbers = _to_numbers(out[c])
        out[c] = values
        rows.append((c, "not a number -> missing", not_numbers))

    t = out["temperature"]
    celsius = t.between(*CELSIUS_RANGE)
    out["temperature"] = t.mask(celsius, t * 9.0 / 5.0 + 32.0)
    rows.append(("temperature", f"value in [{CELSIUS_RANGE[0]:g}, {CELSIUS_RANGE[1]:g}] taken as °C -> °F",
                 int(celsius.sum())))

    acuity = out["acuity"]
    non_int = acuity.notna() & (acuity != np.round(acuity))
    out["acuity"] = acuity.mask(non_int)
    rows.append(("acuity", "not an integer -> missing", int(non_int.sum())))

    for c, (lo, hi) in PLAUSIBLE.items():
        v = out[c]
        bad = v.notna() & ~v.between(lo, hi)
        out[c] = v.mask(bad)
        rows.append((c, f"outside plausible range [{lo:g}, {hi:g}] -> missing", int(bad.sum())))
    for c in schema.NUMERIC_FEATURES:
        rows.append((c, "missing in source", raw_missing[c]))

    g = out["gender"].astype("string").str.strip().str.lower().map(_GENDER)
    changed = out["gender"].notna() & (g.astype("object") != out["gender"].astype("object"))
    rows.append(("gender", "normalised to F/M (unknown -> missing)", int(changed.sum())))
    out["gender"] = g.astype("object").where(g.notna(), None)

    report = pd.DataFrame(rows, columns=["column", "rule", "count"])
    return out, report
