"""Small helpers of the generator: distinct ids, MIMIC dicom ids, and the date/time encodings of the tables."""

from __future__ import annotations

import numpy as np

MS_PER_DAY = 86_400_000


def unique_ints(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    """``n`` distinct ints in ``[low, high)`` in random order."""
    if n > high - low:
        raise ValueError(f"cannot draw {n} distinct ids from [{low}, {high})")
    return rng.choice(high - low, size=n, replace=False).astype(np.int64) + low


def dicom_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` MIMIC-style dicom ids: five dash-separated groups of 8 lowercase hex digits (44 chars)."""
    raw = np.frombuffer(rng.bytes(20 * n), dtype=np.uint8).reshape(n, 20)
    hexchars = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    digits = np.empty((n, 40), dtype=np.uint8)
    digits[:, 0::2] = hexchars[raw >> 4]
    digits[:, 1::2] = hexchars[raw & 15]
    out = np.full((n, 44), ord("-"), dtype=np.uint8)
    for g in range(5):
        out[:, g * 9: g * 9 + 8] = digits[:, g * 8: (g + 1) * 8]
    ids = out.view("S44").ravel().astype(str)
    if len(np.unique(ids)) != n:  # 160 random bits: never in practice
        raise RuntimeError("dicom id collision")
    return ids


def year_start_ms(years: np.ndarray) -> np.ndarray:
    return (np.asarray(years, dtype=np.int64) - 1970).astype("datetime64[Y]").astype("datetime64[ms]")


def time_of_day_ms(rng: np.random.Generator, n: int) -> np.ndarray:
    """Milliseconds since midnight; 40 % before 10:00."""
    morning = rng.random(n) < 0.4
    hours = np.where(morning, rng.uniform(0, 10, n), rng.uniform(10, 24, n))
    return np.minimum((hours * 3_600_000).astype(np.int64), MS_PER_DAY - 1)


def study_time_float(dt: np.ndarray) -> np.ndarray:
    """datetime64 → MIMIC-CXR ``StudyTime`` HHMMSS.fff float (not zero padded: 00:05:12.5 → 512.5)."""
    dt = dt.astype("datetime64[ms]")
    ms = (dt - dt.astype("datetime64[D]")).astype(np.int64)
    hh, mm, ss, frac = ms // 3_600_000, (ms // 60_000) % 60, (ms // 1000) % 60, ms % 1000
    return (hh * 10_000_000 + mm * 100_000 + ss * 1000 + frac) / 1000.0  # k/1000: shortest repr ≤ 3 decimals


def study_date_int(dt: np.ndarray) -> np.ndarray:
    """datetime64 → ``StudyDate`` int YYYYMMDD."""
    day = np.asarray(dt).astype("datetime64[D]")
    month = day.astype("datetime64[M]")
    year = month.astype("datetime64[Y]")
    dd = (day - month).astype(np.int64) + 1
    mm = month.astype(np.int64) % 12 + 1
    return (year.astype(np.int64) + 1970) * 10_000 + mm * 100 + dd


def datetime_strings(dt: np.ndarray) -> np.ndarray:
    """datetime64 → "YYYY-MM-DD HH:MM:SS" (MIMIC-IV-ED intime/outtime)."""
    if len(dt) == 0:  # np.char.replace fails on empty arrays
        return np.zeros(0, dtype="<U19")
    return np.char.replace(np.datetime_as_string(dt.astype("datetime64[s]"), unit="s"), "T", " ")


def years_of(dt: np.ndarray) -> np.ndarray:
    return dt.astype("datetime64[Y]").astype(np.int64) + 1970
