"""Clinical model of the synthetic cohort: latent conditions → lesions (noisy-OR) and triage vitals, then the
triage table's messiness (see :mod:`mdfnet.data.synthetic` for the tables of numbers)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mdfnet.data import schema

CONDITIONS: tuple[str, ...] = ("infection", "fluid_overload", "cardiomegaly", "splinting")
ECS, ATEL, PLEURAL, CONSOL, EDEMA = range(5)  # indices into schema.CLASSES

CAUSE = np.array(
    [
        # ECS  Atel  Pleu  Cons  Edema
        [0.00, 0.10, 0.20, 0.95, 0.00],  # infection
        [0.30, 0.00, 0.35, 0.00, 0.95],  # fluid_overload
        [0.85, 0.00, 0.00, 0.00, 0.00],  # cardiomegaly
        [0.00, 0.70, 0.05, 0.00, 0.00],  # splinting
    ]
)
"""Noisy-OR weights: P(condition c alone causes lesion j)."""
LEAK = np.array([0.03, 0.04, 0.03, 0.0, 0.0])
"""P(lesion j) with no condition (none for the look-alike pair: each of its lesions has its clinical cause)."""
P_INFECTION = 0.35
FLUID_OVERLOAD_LOGIT = -0.62
"""P(fluid overload) = σ(FLUID_OVERLOAD_LOGIT + 0.04·(age − 62)) (≈ 0.35 at 62), capped at 1 − P_INFECTION."""
MAX_LESIONS = 3

IMPLAUSIBLE: dict[str, tuple[float, ...]] = {
    "dbp": (278.0,), "heartrate": (0.0, 400.0), "o2sat": (150.0,), "resprate": (0.0,),
}
VITALS = ("temperature", "heartrate", "resprate", "o2sat", "sbp", "dbp", "acuity")
COMPLAINTS: dict[str, tuple[str, ...]] = {
    "infection": ("Fever", "Cough", "Fever, Cough", "Dyspnea", "Fever, Weakness"),
    "fluid_overload": ("Dyspnea", "SOB", "Shortness of breath", "Leg swelling", "Dyspnea, Edema"),
    "splinting": ("s/p Fall", "Abd pain", "Chest pain", "Back pain", "Post-op pain"),
    "cardiomegaly": ("Chest pain", "Palpitations", "Dyspnea"),
    "none": ("Chest pain", "Abd pain", "Headache", "Weakness", "Dizziness", "s/p Fall", "Nausea/Vomiting", "Transfer"),
}


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def ensure_one(rng: np.random.Generator, mask: np.ndarray, eligible: np.ndarray | None = None) -> np.ndarray:
    """If no element of ``mask`` is set, set one random (eligible) element; returns the index set or -1."""
    if mask.any():
        return -1
    idx = np.flatnonzero(eligible if eligible is not None else np.ones(len(mask), dtype=bool))
    if len(idx) == 0:
        return -1
    i = int(rng.choice(idx))
    mask[i] = True
    return i


def sample_conditions(rng: np.random.Generator, age: np.ndarray) -> np.ndarray:
    """Latent episode conditions, bool ``[n, 4]`` in :data:`CONDITIONS` order.

    Infection and fluid overload are mutually exclusive (one acute cause per episode: a fever or a congested
    lung, not both), so the look-alike pair never shares an episode; cardiomegaly and splinting are independent.
    """
    n = len(age)
    a = np.asarray(age, dtype=float) - 62.0
    p_inf = np.full(n, P_INFECTION)
    p_fo = np.minimum(sigmoid(FLUID_OVERLOAD_LOGIT + 0.04 * a), 1.0 - p_inf)
    acute = rng.random(n)
    cond = np.zeros((n, len(CONDITIONS)), dtype=bool)
    cond[:, 0] = acute < p_inf
    cond[:, 1] = (acute >= p_inf) & (acute < p_inf + p_fo)
    cond[:, 2] = rng.random(n) < sigmoid(-1.4 + 0.06 * a)
    cond[:, 3] = rng.random(n) < 0.2
    return cond


def lesion_probabilities(cond: np.ndarray) -> np.ndarray:
    """Noisy-OR ``[n, 5]`` lesion probabilities from conditions ``[n, 4]``."""
    keep = (1.0 - LEAK)[None, :] * np.prod(1.0 - cond[:, :, None] * CAUSE[None, :, :], axis=1)
    return 1.0 - keep


def sample_lesions(rng: np.random.Generator, cond: np.ndarray) -> np.ndarray:
    """Bool ``[n, 5]`` lesion presence; at most :data:`MAX_LESIONS` per row (a random subset kept)."""
    les = rng.random((len(cond), len(schema.CLASSES))) < lesion_probabilities(cond)
    keys = np.where(les, rng.random(les.shape), np.inf)
    rank = np.argsort(np.argsort(keys, axis=1), axis=1)
    return les & (rank < MAX_LESIONS)


def sample_vitals(rng: np.random.Generator, age: np.ndarray, cond: np.ndarray) -> pd.DataFrame:
    """Clean triage values (°F, integers except temperature; pain int 0..10; acuity 1..5)."""
    n = len(age)
    a = np.asarray(age, dtype=float) - 62.0
    inf, fo, card, spl = (cond[:, i].astype(float) for i in range(4))
    temp = 98.0 + rng.normal(0, 0.55, n) + inf * rng.uniform(1.8, 4.2, n)
    hr = 80 + rng.normal(0, 12, n) + 20 * inf + 12 * fo
    rr = 16 + rng.normal(0, 1.8, n) + 9 * fo + 3 * inf
    o2 = 98.3 - np.abs(rng.normal(0, 1.3, n)) - fo * rng.uniform(4, 12, n) - inf * rng.uniform(0, 3, n)
    sbp = 125 + 0.45 * a + 18 * card + rng.normal(0, 17, n)
    dbp = 74 + 0.12 * a + 6 * card + rng.normal(0, 10, n)
    base_pain = np.where(rng.random(n) < 0.45, 0, rng.integers(0, 7, n))
    pain = np.where(spl > 0, rng.integers(5, 11, n), base_pain)
    sick = cond.any(axis=1)
    acuity_sick = rng.choice(5, n, p=(0.03, 0.30, 0.50, 0.15, 0.02)) + 1
    acuity_well = rng.choice(5, n, p=(0.01, 0.10, 0.50, 0.30, 0.09)) + 1
    return pd.DataFrame({
        "temperature": np.round(temp, 1),
        "heartrate": np.round(np.clip(hr, 35, 220)),
        "resprate": np.round(np.clip(rr, 8, 60)),
        "o2sat": np.round(np.clip(o2, 60, 100)),
        "sbp": np.round(np.clip(sbp, 70, 250)),
        "dbp": np.round(np.clip(dbp, 30, 150)),
        "pain": pain.astype(np.int64),
        "acuity": np.where(sick, acuity_sick, acuity_well).astype(float),
    })


def make_messy(rng: np.random.Generator, vitals: pd.DataFrame, ensure: bool = True) -> pd.DataFrame:
    """Raw MIMIC-IV-ED triage values: °C temperatures, missing and implausible vitals, free-text pain.

    With ``ensure`` (and ≥ 8 rows) every text pain value, an empty pain, a °C temperature and an implausible
    value of each :data:`IMPLAUSIBLE` vital occur at least once (never blanked by the missing-value step).
    """
    n = len(vitals)
    out = vitals.copy()
    temp = out["temperature"].to_numpy(dtype=float)
    celsius = rng.random(n) < 0.05
    pain = out["pain"].to_numpy()
    r = rng.random(n)
    ua, unable, empty = r < 0.03, (r >= 0.03) & (r < 0.04), (r >= 0.04) & (r < 0.08)
    rng8_10 = (pain >= 8) & (rng.random(n) < 0.15) & ~(ua | unable | empty)
    if ensure and n >= 8:
        taken = ua | unable | empty | rng8_10
        for m in (ua, unable, empty):
            i = ensure_one(rng, m, ~taken)
            if i >= 0:
                taken[i] = True
        ensure_one(rng, rng8_10, ~taken)
        ensure_one(rng, celsius)
    temp = np.where(celsius, np.round((temp - 32.0) * 5.0 / 9.0, 1), temp)
    out["temperature"] = temp
    text = pain.astype(str).astype(object)
    text[ua], text[unable], text[rng8_10], text[empty] = "UA", "unable", "8-10", None
    out["pain"] = text
    for col in VITALS:
        v = out[col].to_numpy(dtype=float).copy()
        bad = np.zeros(n, dtype=bool) if col != "temperature" else celsius.copy()  # kept visible (not missing)
        if col in IMPLAUSIBLE:
            bad = rng.random(n) < 0.003
            if ensure and n >= 8:
                ensure_one(rng, bad)
            v[bad] = rng.choice(np.array(IMPLAUSIBLE[col]), int(bad.sum()))
        v[(rng.random(n) < 0.05) & ~bad] = np.nan
        out[col] = v
    return out


def chief_complaints(rng: np.random.Generator, cond: np.ndarray) -> np.ndarray:
    """Free-text chief complaint by the dominant condition (priority infection > fluid > splinting > cardio)."""
    n = len(cond)
    group = np.full(n, "none", dtype=object)
    for c in ("cardiomegaly", "splinting", "fluid_overload", "infection"):  # later wins
        group[cond[:, CONDITIONS.index(c)]] = c
    out = np.empty(n, dtype=object)
    for g, options in COMPLAINTS.items():
        m = group == g
        out[m] = np.array(options, dtype=object)[rng.integers(0, len(options), int(m.sum()))]
    out[rng.random(n) < 0.01] = None
    return out
