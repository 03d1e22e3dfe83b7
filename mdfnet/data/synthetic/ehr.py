"""EHR side: patients (MIMIC-IV), ED stays (MIMIC-IV-ED) and CXR metadata rows (MIMIC-CXR-JPG)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mdfnet.data.synthetic.clinical import CONDITIONS
from mdfnet.data.synthetic.common import study_date_int, study_time_float, time_of_day_ms, year_start_ms

ANCHOR_YEAR_GROUPS = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022")
RACES = ("WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC/LATINO - PUERTO RICAN", "ASIAN", "WHITE - OTHER EUROPEAN",
         "OTHER", "UNKNOWN")
RACE_P = (0.55, 0.2, 0.06, 0.05, 0.04, 0.05, 0.05)
TRANSPORTS = ("WALK IN", "AMBULANCE", "UNKNOWN", "OTHER", "HELICOPTER")
TRANSPORT_P = (0.6, 0.33, 0.04, 0.025, 0.005)
DISPOSITIONS = ("HOME", "ADMITTED", "TRANSFER", "LEFT WITHOUT BEING SEEN", "ELOPED", "LEFT AGAINST MEDICAL ADVICE",
                "OTHER", "EXPIRED")
DISPOSITION_P = (0.5, 0.38, 0.02, 0.03, 0.02, 0.03, 0.015, 0.005)


def sample_patients(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Patient attributes (without ids): gender, anchor_age, anchor_year, anchor_year_group, race, dod."""
    anchor_year = rng.integers(2110, 2187, n)
    dod = np.full(n, None, dtype=object)
    dead = np.flatnonzero(rng.random(n) < 0.04)
    if len(dead):
        d = year_start_ms(anchor_year[dead] + 9) + rng.integers(0, 365, len(dead)) * np.timedelta64(1, "D")
        dod[dead] = np.datetime_as_string(d.astype("datetime64[D]"), unit="D")
    return pd.DataFrame({
        "gender": np.where(rng.random(n) < 0.5, "F", "M"),
        "anchor_age": np.clip(np.round(rng.normal(60, 17, n)), 18, 91).astype(np.int64),
        "anchor_year": anchor_year.astype(np.int64),
        "anchor_year_group": np.array(ANCHOR_YEAR_GROUPS)[rng.integers(0, len(ANCHOR_YEAR_GROUPS), n)],
        "race": np.array(RACES)[rng.choice(len(RACES), n, p=RACE_P)],
        "dod": dod,
    })


def reflacx_stays(rng: np.random.Generator, studies: pd.DataFrame, n_patients: int) -> pd.DataFrame:
    """ED stays of the REFLACX patients: containing, overlapping, near-miss and unrelated stays.

    Columns: pidx, intime, outtime (datetime64[s]), the 4 conditions (None = draw from the prior), has_triage.
    """
    n = len(studies)
    dt = studies["study_dt"].to_numpy().astype("datetime64[ms]")
    role = studies["role"].to_numpy()
    cond = studies[list(CONDITIONS)].to_numpy(dtype=bool)
    pidx = studies["pidx"].to_numpy()
    s = np.timedelta64(1, "s")
    parts: list[pd.DataFrame] = []

    def part(mask: np.ndarray, intime: np.ndarray, outtime: np.ndarray, has_triage: np.ndarray | bool = True,
             conds: np.ndarray | None = None) -> None:
        k = int(mask.sum())
        df = pd.DataFrame({"pidx": pidx[mask], "intime": intime.astype("datetime64[s]"),
                           "outtime": outtime.astype("datetime64[s]"),
                           "has_triage": np.broadcast_to(has_triage, (k,)).copy()})
        c = cond[mask] if conds is None else conds
        for i, name in enumerate(CONDITIONS):
            df[name] = c[:, i]
        df["prior"] = conds is not None
        parts.append(df)

    dur = rng.integers(2 * 3600, 24 * 3600 + 1, n)
    frac = rng.uniform(0.1, 0.9, n)
    intime = (dt - (frac * dur * 1000).astype(np.int64) * np.timedelta64(1, "ms")).astype("datetime64[s]")
    outtime = intime + dur * s
    prim = role != "no_stay"
    part(prim, intime[prim], outtime[prim], role[prim] != "no_triage")

    two = role == "two_stays"
    earlier = rng.random(n) < 0.5
    in2_early = intime - rng.integers(1800, 6 * 3600, n) * s
    out2_early = dt.astype("datetime64[s]") + rng.integers(720, 3 * 3600, n) * s
    in2_late = (intime + ((dt - intime).astype("timedelta64[s]").astype(np.int64) * rng.uniform(0.2, 0.8, n))
                .astype(np.int64) * s)
    out2_late = dt.astype("datetime64[s]") + rng.integers(1800, 6 * 3600, n) * s
    part(two, np.where(earlier, in2_early, in2_late)[two], np.where(earlier, out2_early, out2_late)[two])

    near = (role == "no_stay") & (rng.random(n) < 0.7)
    before = rng.random(n) < 0.5
    gap = rng.integers(3600, 12 * 3600, n) * s
    dt_s = dt.astype("datetime64[s]")
    near_in = np.where(before, dt_s - gap - dur * s, dt_s + gap + s)
    part(near, near_in[near], (near_in + dur * s)[near])

    parts.append(_unrelated_stays(rng, dt, pidx, n_patients))
    return pd.concat(parts, ignore_index=True)


def _unrelated_stays(rng: np.random.Generator, dt: np.ndarray, pidx: np.ndarray, n_patients: int) -> pd.DataFrame:
    """0-3 stays per REFLACX patient, ≥ 3 days before the patient's first or after their last study (conditions
    drawn from the prior later)."""
    s = np.timedelta64(1, "s")
    first = pd.Series(dt).groupby(pidx).min().reindex(range(n_patients)).to_numpy()
    last = pd.Series(dt).groupby(pidx).max().reindex(range(n_patients)).to_numpy()
    owner = np.repeat(np.arange(n_patients), rng.choice(4, n_patients, p=(0.45, 0.3, 0.15, 0.1)))
    m = len(owner)
    offset = rng.integers(3 * 86_400, 900 * 86_400, m) * s
    start = np.where(rng.random(m) < 0.5, first[owner].astype("datetime64[s]") - offset - 86_400 * s,
                     last[owner].astype("datetime64[s]") + offset)
    extra = pd.DataFrame({"pidx": owner, "intime": start, "outtime": start + rng.integers(2 * 3600, 24 * 3600 + 1, m) * s,
                          "has_triage": True})
    for name in CONDITIONS:
        extra[name] = False
    extra["prior"] = True
    return extra


def background_stays(rng: np.random.Generator, n: int, patient_rows: np.ndarray, anchor_year: np.ndarray) -> pd.DataFrame:
    """``n`` ED stays of random background patients at random times within 8 years of their anchor year."""
    pidx = patient_rows[rng.integers(0, len(patient_rows), n)] if len(patient_rows) else np.zeros(0, np.int64)
    n = len(pidx)
    start = (year_start_ms(anchor_year[pidx]).astype("datetime64[s]")
             + rng.integers(0, 8 * 365 * 86_400, n) * np.timedelta64(1, "s"))
    dur = rng.integers(2 * 3600, 24 * 3600 + 1, n) * np.timedelta64(1, "s")
    df = pd.DataFrame({"pidx": pidx, "intime": start, "outtime": start + dur,
                       "has_triage": rng.random(n) >= 0.01})
    for name in CONDITIONS:
        df[name] = False
    df["prior"] = True
    return df


def _cxr_frame(subject_id: np.ndarray, study_id: np.ndarray, dicom: np.ndarray, view: np.ndarray,
               rows: np.ndarray, cols: np.ndarray, dt: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    n = len(dicom)
    portable = view == "AP"
    proc = np.where(portable, "CHEST (PORTABLE AP)", np.where(view == "", None, "CHEST (PA AND LAT)"))
    view_meaning = pd.Series(view).map({"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral",
                                        "LL": "left lateral"}).to_numpy(dtype=object)
    orient = np.where(portable & (rng.random(n) < 0.5), "Recumbent", "Erect").astype(object)
    orient[rng.random(n) < 0.02] = None
    return pd.DataFrame({
        "dicom_id": dicom, "subject_id": subject_id, "study_id": study_id,
        "PerformedProcedureStepDescription": proc, "ViewPosition": np.where(view == "", None, view),
        "Rows": rows, "Columns": cols, "StudyDate": study_date_int(dt), "StudyTime": study_time_float(dt),
        "ProcedureCodeSequence_CodeMeaning": proc, "ViewCodeSequence_CodeMeaning": view_meaning,
        "PatientOrientationCodeSequence_CodeMeaning": orient,
    })


def image_sizes(rng: np.random.Generator, n: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    w = np.round(image_size * rng.uniform(0.75, 1.25, n)).astype(np.int64)
    h = np.round(image_size * rng.uniform(0.75, 1.25, n)).astype(np.int64)
    return h, w


def cxr_rows(rng: np.random.Generator, studies: pd.DataFrame, patients: pd.DataFrame, stays: pd.DataFrame,
              dicoms: np.ndarray, study_ids: np.ndarray, view: np.ndarray, bg_lateral: np.ndarray,
              image_size: int) -> pd.DataFrame:
    """CXR metadata: REFLACX frontal rows (minus ``no_cxr``), their LATERAL rows, then background studies.

    ``dicoms`` holds the ids not yet used (REFLACX laterals first, then background frontals and laterals);
    a study's images share its StudyDate/StudyTime.
    """
    subj = studies["subject_id"].to_numpy()
    sid = studies["study_id"].to_numpy()
    dt = studies["study_dt"].to_numpy().astype("datetime64[ms]")
    fr = studies["role"].to_numpy() != "no_cxr"
    parts = [_cxr_frame(subj[fr], sid[fr], studies["dicom_id"].to_numpy()[fr], studies["view"].to_numpy()[fr],
                        studies["height"].to_numpy()[fr], studies["width"].to_numpy()[fr], dt[fr], rng)]
    lat = studies["has_lateral"].to_numpy()
    k = int(lat.sum())
    h, w = image_sizes(rng, k, image_size)
    parts.append(_cxr_frame(subj[lat], sid[lat], dicoms[:k], np.full(k, "LATERAL"), h, w, dt[lat], rng))
    dicoms = dicoms[k:]

    # background studies: half during a random ED stay (its patient), half at a random time of any patient
    m = len(study_ids)
    rand_p = rng.integers(0, len(patients), m)
    bdt = (year_start_ms(patients["anchor_year"].to_numpy()[rand_p])
           + rng.integers(0, 8 * 365, m) * np.timedelta64(1, "D") + time_of_day_ms(rng, m) * np.timedelta64(1, "ms"))
    pidx = rand_p
    during = np.flatnonzero(rng.random(m) < 0.5) if len(stays) else np.zeros(0, np.int64)
    pick = rng.integers(0, len(stays), len(during))
    st_in = stays["intime"].to_numpy().astype("datetime64[ms]")[pick]
    st_len = (stays["outtime"].to_numpy()[pick] - stays["intime"].to_numpy()[pick]).astype("timedelta64[ms]")
    bdt[during] = st_in + (st_len.astype(np.int64) * rng.uniform(0.1, 0.9, len(during))).astype(np.int64) * \
        np.timedelta64(1, "ms")
    pidx[during] = stays["pidx"].to_numpy()[pick]
    bsubj = patients["subject_id"].to_numpy()[pidx]
    h, w = image_sizes(rng, m, image_size)
    parts.append(_cxr_frame(bsubj, study_ids, dicoms[:m], view, h, w, bdt, rng))
    nl = int(bg_lateral.sum())
    lview = np.where(rng.random(nl) < 0.9, "LATERAL", "LL")
    h, w = image_sizes(rng, nl, image_size)
    parts.append(_cxr_frame(bsubj[bg_lateral], study_ids[bg_lateral], dicoms[m:m + nl], lview, h, w, bdt[bg_lateral],
                            rng))
    return pd.concat(parts, ignore_index=True)
