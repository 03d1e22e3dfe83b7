"""REFLACX side: the reserved special-case images, the studies (conditions, lesions, sizes, views) and the
readings (jittered ellipses per radiologist, phases, certainties)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mdfnet.data import schema
from mdfnet.data.synthetic.clinical import CONDITIONS, ECS, MAX_LESIONS, PLEURAL, sample_conditions, sample_lesions
from mdfnet.data.synthetic.common import time_of_day_ms, unique_ints, year_start_ms, years_of
from mdfnet.data.synthetic.geometry import Lesion, sample_lesion_geometry

RESERVED_SHARES: dict[str, float] = {
    "no_cxr": 0.01, "no_image": 0.01, "no_stay": 0.05, "two_stays": 0.03, "no_triage": 0.01,
}
"""Share of REFLACX images reserved for each special case (≥ 1 each when n_studies ≥ MIN_RESERVED_STUDIES)."""
MIN_RESERVED_STUDIES = 10
OTHER_LABELS: dict[int, tuple[str, ...]] = {
    1: ("Support devices", "Emphysema", "Nodule", "Other"),
    2: ("Support devices", "Enlarged hilum", "Lung nodule or mass", "Other"),
    3: ("Support devices", "Enlarged hilum", "Lung nodule or mass", "Other"),
}
"""Non-target labels an extra ellipse may mark, per phase (each among :func:`mdfnet.data.schema.reflacx_labels`)."""
DISCARDED_P = 0.03
"""Share of readings (of ordinary images, when n_studies ≥ MIN_RESERVED_STUDIES) whose eye-tracking data REFLACX
discarded (``eye_tracking_data_discarded``; their ellipse files are written all the same, as REFLACX did)."""
CERTAINTY_P = (0.05, 0.10, 0.20, 0.30, 0.35)
READERS_P = (0.80, 0.13, 0.07)
N_RADIOLOGISTS = 5
DETECT_P = 0.9
JITTER = 0.06


def reserve_roles(rng: np.random.Generator, n: int) -> np.ndarray:
    """Role per REFLACX image ("" = ordinary); disjoint special cases (see module docstring)."""
    roles = np.full(n, "", dtype=object)
    if n < MIN_RESERVED_STUDIES:
        return roles
    order = rng.permutation(n)
    start = 0
    for role, share in RESERVED_SHARES.items():
        k = max(1, int(round(share * n)))
        roles[order[start:start + k]] = role
        start += k
    return roles


def sample_studies(rng: np.random.Generator, n: int, patients: pd.DataFrame, n_patients: int,
                   image_size: int) -> pd.DataFrame:
    """The REFLACX images: patient index, study datetime, age, conditions, lesions, size, view, role.

    The first ``n_patients`` rows of ``patients`` are REFLACX patients; ``n − n_patients`` images are second
    studies (40–400 days later) of randomly chosen patients.
    """
    repeat = n - n_patients
    pidx = np.concatenate([np.arange(n_patients), rng.choice(n_patients, repeat, replace=False)])
    episode = np.concatenate([np.zeros(n_patients, np.int64), np.ones(repeat, np.int64)])
    anchor_year = patients["anchor_year"].to_numpy()[pidx]
    first_day = rng.integers(0, 365 * 4, n_patients)[pidx]
    gap = rng.integers(40, 401, n)
    day = first_day + episode * gap
    dt = (year_start_ms(anchor_year) + day * np.timedelta64(1, "D")
          + time_of_day_ms(rng, n) * np.timedelta64(1, "ms"))
    age = patients["anchor_age"].to_numpy()[pidx] + (years_of(dt) - anchor_year)
    cond = sample_conditions(rng, age)
    lesions = sample_lesions(rng, cond)
    width = np.round(image_size * rng.uniform(0.75, 1.25, n)).astype(np.int64)
    height = np.round(image_size * rng.uniform(0.75, 1.25, n)).astype(np.int64)
    height = np.where(height == width, height + 1, height)
    split = np.array(["train", "validate", "test"])[rng.choice(3, n_patients, p=(0.7, 0.15, 0.15))][pidx]
    df = pd.DataFrame({"pidx": pidx, "episode": episode, "split": split, "study_dt": dt, "age": age, "width": width,
                       "height": height, "view": np.where(rng.random(n) < 0.6, "PA", "AP"),
                       "role": reserve_roles(rng, n)})
    df["has_lateral"] = (df["view"] == "PA") & (rng.random(n) < 0.9)
    for i, c in enumerate(CONDITIONS):
        df[c] = cond[:, i]
    for i in range(len(schema.CLASSES)):
        df[f"lesion_{i}"] = lesions[:, i]
    if n >= MIN_RESERVED_STUDIES:  # a morning study among the ordinary ones
        morning = (dt - dt.astype("datetime64[D]")) < np.timedelta64(10, "h")
        ordinary = (df["role"] == "").to_numpy()
        if not (morning & ordinary).any():
            i = int(rng.choice(np.flatnonzero(ordinary)))
            day0 = dt[i].astype("datetime64[D]").astype("datetime64[ms]")
            df.loc[i, "study_dt"] = day0 + np.timedelta64(int(rng.integers(0, 10 * 3_600_000)), "ms")
    return df


def lesion_matrix(studies: pd.DataFrame) -> np.ndarray:
    return studies[[f"lesion_{i}" for i in range(len(schema.CLASSES))]].to_numpy(dtype=bool)


@dataclass
class Reading:
    reflacx_id: str
    image: int  # row of the studies frame
    phase: int
    ellipses: list[tuple[int, int, int, int, int, tuple[str, ...]]]  # xmin, ymin, xmax, ymax, certainty, labels
    eye_tracking_data_discarded: bool = False


def _label_names(cls: int, phase: int, rng: np.random.Generator) -> tuple[str, ...]:
    """The label(s) a reader of ``phase`` marks for lesion class ``cls``: phase 1 has no "Pleural abnormality" but
    "Pleural effusion" and "Pleural thickening" (:data:`mdfnet.data.schema.REFLACX_PHASE1_LABELS`)."""
    if cls == PLEURAL and phase == 1:
        r = rng.random()
        return ("Pleural effusion",) if r < 0.7 else ("Pleural thickening",) if r < 0.8 else (
            "Pleural effusion", "Pleural thickening")
    return (schema.CLASSES[cls],)


def _jitter_box(rng: np.random.Generator, box: tuple[float, ...], w: int, h: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    sx, sy = JITTER * (x1 - x0) + 0.5, JITTER * (y1 - y0) + 0.5
    j = rng.normal(0, 1, 4) * np.array([sx, sy, sx, sy])
    a0, b0 = int(np.clip(round(x0 + j[0]), 0, w - 2)), int(np.clip(round(y0 + j[1]), 0, h - 2))
    a1, b1 = int(np.clip(round(x1 + j[2]), a0 + 2, w)), int(np.clip(round(y1 + j[3]), b0 + 2, h))
    return a0, b0, a1, b1


def sample_readings(rng: np.random.Generator, studies: pd.DataFrame,
                    geometry: list[list[Lesion]]) -> list[Reading]:
    """REFLACX readings with jittered ellipses (see :mod:`mdfnet.data.synthetic` for the reader model)."""
    n = len(studies)
    n_readers = rng.choice(3, n, p=READERS_P) + 1
    ordinary = (studies["role"] == "").to_numpy()
    big = n >= MIN_RESERVED_STUDIES
    if big and not (n_readers[ordinary] > 1).any():
        n_readers[rng.choice(np.flatnonzero(ordinary))] = 2
    phases = [np.array([3 if rng.random() < 0.7 else int(rng.integers(1, 3))]) if k == 1
              else rng.choice(3, k, p=(0.45, 0.45, 0.1)) + 1 for k in n_readers]
    forced_image = _guarantee_pleural_phase1_and_every_phase(rng, studies, geometry, phases, ordinary) if big else -1
    r_numbers = unique_ints(rng, int(n_readers.sum()), 100_000, 1_000_000)
    readings: list[Reading] = []
    for i in range(n):
        w, h = int(studies.at[i, "width"]), int(studies.at[i, "height"])
        radiologists = rng.permutation(N_RADIOLOGISTS)[: n_readers[i]] + 1
        for j, phase in enumerate(int(p) for p in phases[i]):
            prefix = "P300" if phase == 3 else f"P{phase}{radiologists[j]:02d}"
            force_pleural = i == forced_image and j == 0
            ellipses = _ellipses(rng, geometry[i], phase, w, h, force_pleural)
            discarded = bool(rng.random() < DISCARDED_P) and big and ordinary[i] and i != forced_image
            readings.append(Reading(f"{prefix}R{r_numbers[len(readings)]}", i, phase, ellipses, discarded))
    if big and not any(not r.ellipses for r in readings):  # a reading with no ellipse
        cand = [k for k, r in enumerate(readings) if ordinary[r.image] and r.image != forced_image]
        readings[int(rng.choice(cand))].ellipses = []
    if big and not any(r.eye_tracking_data_discarded for r in readings):  # a discarded phase-3 reading
        cand = [k for k, r in enumerate(readings) if ordinary[r.image] and r.image != forced_image and r.phase == 3]
        if cand:
            readings[int(rng.choice(cand))].eye_tracking_data_discarded = True
    return readings


def _guarantee_pleural_phase1_and_every_phase(rng: np.random.Generator, studies: pd.DataFrame,
                                              geometry: list[list[Lesion]], phases: list[np.ndarray],
                                              ordinary: np.ndarray) -> int:
    """Make an ordinary image with a pleural lesion (its first reading phase 1, where the lesion is marked "Pleural
    effusion"/"Pleural thickening", the lesion forced visible) and
    every phase present; returns that image's row (``studies``, ``geometry`` and ``phases`` are updated)."""
    les = lesion_matrix(studies)
    pleural_ok = ordinary & les[:, PLEURAL]
    if not pleural_ok.any():
        roomy = ordinary & (les.sum(axis=1) < MAX_LESIONS)
        i = int(rng.choice(np.flatnonzero(roomy if roomy.any() else ordinary)))
        if not roomy[i]:  # already MAX_LESIONS lesions: swap one (not the heart, drawn by the anatomy)
            drop = les[i] & (np.arange(len(schema.CLASSES)) != ECS)
            studies.loc[i, f"lesion_{int(rng.choice(np.flatnonzero(drop)))}"] = False
        studies.loc[i, f"lesion_{PLEURAL}"] = True
        geometry[i] = sample_lesion_geometry(rng, lesion_matrix(studies)[i], studies.loc[i, "anatomy"],
                                             int(studies.loc[i, "width"]), int(studies.loc[i, "height"]))
        pleural_ok[i] = True
    forced_image = int(np.flatnonzero(pleural_ok)[0])
    phases[forced_image][0] = 1
    all_phases = np.concatenate(phases)
    for ph in (1, 2, 3):  # every phase present
        if not (all_phases == ph).any():
            cand = [i for i in range(len(studies)) if i != forced_image and len(phases[i]) == 1]
            if cand:
                phases[int(rng.choice(cand))][0] = ph
            all_phases = np.concatenate(phases)
    return forced_image


def _ellipses(rng: np.random.Generator, lesions: list[Lesion], phase: int, w: int, h: int,
              force_pleural: bool) -> list[tuple]:
    """One reader's ellipses: each lesion seen w.p. DETECT_P (a forced pleural one always), jittered, with a
    certainty; 12 % add an ellipse of a label outside the 5 classes (:data:`OTHER_LABELS`)."""
    ellipses = []
    for les in lesions:
        if rng.random() < DETECT_P or (force_pleural and les.cls == PLEURAL):
            cert = int(rng.choice(5, p=CERTAINTY_P)) + 1
            ellipses.append((*_jitter_box(rng, les.box, w, h), cert, _label_names(les.cls, phase, rng)))
    if rng.random() < 0.12:
        others = OTHER_LABELS[phase]
        bw, bh = rng.uniform(0.05, 0.2) * w, rng.uniform(0.05, 0.2) * h
        x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        ellipses.append((*_jitter_box(rng, (x0, y0, x0 + bw, y0 + bh), w, h),
                         int(rng.choice(5, p=CERTAINTY_P)) + 1, (str(rng.choice(others)),)))
    return ellipses
