"""Property-based fuzzing of the source values people and hospitals actually write: any text in ``pain``,
numbers as text, units, negatives, huge values, NaN/inf, empty cells in the triage; unpadded and impossible
``StudyTime`` values. For every generated source tree, join + preprocess never crash, every reading is kept with
finite model inputs or excluded for exactly one reason, and the counts add up."""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from handbuilt import build_sources, patient, stay, triage_row
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdfnet.data import schema

N = 6
FIELDS = ("temperature", "heartrate", "resprate", "o2sat", "sbp", "dbp", "pain", "acuity")
number = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-10**9, 10**9))
# any printable text (a bare CR/LF inside an unquoted field is not CSV: the writer would produce a broken file,
# which the join refuses with a SourceError naming the file and line, see test_join.py)
text = st.one_of(st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12), number.map(str), number.map(lambda v: f"{v} bpm"),
                 st.sampled_from(["8-10", "UA", "unable", "", " 7 ", "10/10", "98.6F", "37C", "-", "nan", "inf"]))
value = st.one_of(st.none(), number, text)
study_time = st.one_of(st.floats(0, 240000, allow_nan=False), st.sampled_from([512.5, 80000.0, 76100.0, 235960.0,
                                                                              -5.0, 999999.0, float("nan")]))


def _tree(root: Path, triage: list[dict], times: list[float]) -> Path:
    readings, patients, stays, rows = [], [], [], []
    for k in range(N):
        sid = 10000200 + k
        readings.append(dict(reflacx_id=f"P3R{k:03d}", subject_id=sid, study_id=50000200 + k, dicom_id=f"fz-{k:03d}",
                             date=21500312, time=times[k], width=32, height=24, phase=3,
                             ellipses=[(2.0, 2.0, 20.0, 20.0, 3, ["Consolidation"])] if k % 2 else []))
        patients.append(patient(sid, "F" if k % 2 else "M", age=30 + k))
        stays.append(stay(sid, 2000 + k, "2150-03-12 00:00:00", "2150-03-13 00:00:00"))
        rows.append(triage_row(sid, 2000 + k, **triage[k]))
    return build_sources(root, readings, patients, stays, rows)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(triage=st.lists(st.fixed_dictionaries({f: value for f in FIELDS}), min_size=N, max_size=N),
       times=st.lists(study_time, min_size=N, max_size=N))
def test_join_and_preprocess_never_crash_and_account_for_every_reading(triage, times):
    from mdfnet.data.join import join
    from mdfnet.data.preprocess import PreprocessConfig, PreprocessError, load_transform, preprocess

    root = Path(tempfile.mkdtemp(prefix="mdfnet-fuzz-"))
    try:
        res = join(_tree(root / "src", triage, times), root / "joined")
        assert res.n_kept + res.n_excluded == res.n_input == N  # every reading: kept, or excluded for one reason
        assert sum(res.exclusions.values()) == res.n_excluded
        excluded = pd.read_parquet(root / "joined" / "excluded.parquet")
        assert len(excluded) == res.n_excluded and excluded["reflacx_id"].is_unique
        if res.n_kept == 0:
            return
        try:
            preprocess(root / "joined", root / "pre", PreprocessConfig(image_size=16, fractions=(1.0, 0.0, 0.0),
                                                                        workers=1))
        except PreprocessError as e:  # a clear refusal is allowed, a crash is not
            assert "train split is empty" in str(e) or "nothing to preprocess" in str(e)
            return
        inst = pd.read_parquet(root / "pre" / "instances.parquet")
        assert len(inst) == res.n_kept
        numeric, categorical = load_transform(root / "pre")[0].transform(inst)
        assert numeric.shape == (res.n_kept, len(schema.NUMERIC_FEATURES)) and np.isfinite(numeric).all()
        assert set(categorical.ravel()) <= {0, 1, 2}
        for f in schema.NUMERIC_FEATURES:  # cleaned values are missing or inside the plausible range
            lo, hi = __import__("mdfnet.data.clean", fromlist=["PLAUSIBLE"]).PLAUSIBLE[f]
            assert all(math.isnan(v) or lo <= v <= hi for v in inst[f].astype(float)), (f, inst[f].tolist())
    finally:
        shutil.rmtree(root, ignore_errors=True)
