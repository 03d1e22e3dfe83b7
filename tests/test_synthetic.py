"""The synthetic source generator: layout and types, planted messiness, join exclusions, signal (determinism and
the CLI: ``test_synthetic_determinism.py``; the learnable signal: ``test_synthetic_signal.py``; the shared 600-study
tree: ``conftest.py``).

One 600-study tree at ~32 px (≈2 s) serves the layout, messiness, join and signal tests; determinism uses 30-study
trees. Numbers asserted here are properties of the generative model (see :mod:`mdfnet.data.synthetic`), with
margins wide enough to hold for any seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mdfnet.data import schema
from mdfnet.data import synthetic as S
from mdfnet.data.clean import PLAUSIBLE
from mdfnet.data.join import REASONS, join, parse_study_datetime

PLANTED = {  # generate() summary key → join exclusion reason
    "excl_eye_tracking_discarded": "eye-tracking data discarded (REFLACX eye_tracking_data_discarded)",
    "excl_no_cxr_metadata": "no CXR metadata",
    "excl_missing_image": "missing image file",
    "excl_no_containing_stay": "no ED stay containing the study",
    "excl_no_triage": "no triage record",
}


def read(root: Path, rel: str) -> pd.DataFrame:
    path = schema.find_table(root, rel)
    assert path is not None, f"{rel}[.gz] not written under {root}"
    return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"pain": str})


def reflacx_metadata(root: Path) -> pd.DataFrame:
    frames = [read(root, schema.reflacx_metadata_path(p)).assign(phase=p) for p in schema.REFLACX_PHASES]
    return pd.concat(frames, ignore_index=True)


class Ellipses:
    """One ``anomaly_location_ellipses.csv``: header, int ``[k, 5]`` coordinates+certainty, bool ``[k, L]`` labels."""

    def __init__(self, path: Path) -> None:
        lines = path.read_text().splitlines()
        self.columns = lines[0].split(",")
        rows = [ln.split(",") for ln in lines[1:]]
        self.values = np.array([[int(v) for v in r[:5]] for r in rows], dtype=np.int64).reshape(-1, 5)
        marks = [[v == "True" for v in r[5:]] for r in rows]
        assert all(v in ("True", "False") for r in rows for v in r[5:]), path
        self.marks = np.array(marks, dtype=bool).reshape(len(rows), len(self.columns) - 5)
        self.labels = self.columns[5:]

    def __len__(self) -> int:
        return len(self.values)

    def mark(self, label: str) -> np.ndarray:
        return self.marks[:, self.labels.index(label)]


def ellipses(root: Path, rid: str) -> Ellipses:
    return Ellipses(root / schema.ellipses_path(rid))


# ----------------------------------------------------------------------------- layout, columns, types
def test_layout_files_and_exact_columns(big):
    root, summary = big
    gz = {schema.CXR_METADATA: True, schema.PATIENTS_CANDIDATES[0]: True, schema.EDSTAYS: True,
          schema.TRIAGE: False, **{schema.reflacx_metadata_path(p): False for p in schema.REFLACX_PHASES}}
    for rel, is_gz in gz.items():
        path = schema.find_table(root, rel)
        assert path is not None and path.name.endswith(".gz") == is_gz, rel
        assert (path.read_bytes()[:2] == b"\x1f\x8b") == is_gz, f"{path} gzip magic"
    header = {rel: list(read(root, rel).columns) for rel in gz}
    assert header[schema.CXR_METADATA] == list(schema.CXR_METADATA_COLUMNS)
    assert header[schema.PATIENTS_CANDIDATES[0]] == list(schema.PATIENTS_COLUMNS)
    assert header[schema.EDSTAYS] == list(schema.EDSTAYS_COLUMNS)
    assert header[schema.TRIAGE] == list(schema.TRIAGE_COLUMNS)
    # exactly the phase's label columns, sorted: phase 1 (18) vs phases 2-3 (16), as REFLACX writes them
    assert header[schema.reflacx_metadata_path(1)] == [*schema.REFLACX_METADATA_COLUMNS, *schema.REFLACX_PHASE1_LABELS]
    for p in (2, 3):
        assert header[schema.reflacx_metadata_path(p)] == [*schema.REFLACX_METADATA_COLUMNS,
                                                          *schema.REFLACX_PHASE23_LABELS]
    assert list(schema.REFLACX_PHASE1_LABELS) == sorted(schema.REFLACX_PHASE1_LABELS)
    assert list(schema.REFLACX_PHASE23_LABELS) == sorted(schema.REFLACX_PHASE23_LABELS)
    meta = reflacx_metadata(root)
    assert len(meta) == summary["readings"] and meta["id"].is_unique
    for rid, phase in zip(meta["id"], meta["phase"], strict=True):
        labels = schema.reflacx_labels(phase)
        path = root / schema.ellipses_path(rid)
        assert list(ellipses(root, rid).columns) == [*schema.REFLACX_ELLIPSE_COLUMNS, *labels], rid
        raw = path.read_bytes()  # CRLF line ends, as REFLACX writes them
        assert raw.endswith(b"\r\n") and raw.count(b"\n") == raw.count(b"\r\n"), rid
    for p in schema.REFLACX_PHASES:
        raw = (root / schema.reflacx_metadata_path(p)).read_bytes()
        assert raw.count(b"\n") == raw.count(b"\r\n") > 1, p
    assert len(list((root / schema.REFLACX_DIR).glob("*/anomaly_location_ellipses.csv"))) == summary["readings"]


def test_column_types_and_formats(big):
    root, _ = big
    cxr = read(root, schema.CXR_METADATA)
    for c in ("subject_id", "study_id", "Rows", "Columns", "StudyDate"):
        assert cxr[c].dtype == np.int64, c
    assert cxr["StudyTime"].dtype == np.float64
    assert cxr["dicom_id"].str.fullmatch(r"([0-9a-f]{8}-){4}[0-9a-f]{8}").all() and cxr["dicom_id"].is_unique
    assert cxr["StudyDate"].between(21000101, 22191231).all()
    dates = pd.to_datetime(cxr["StudyDate"].astype(str), format="%Y%m%d", errors="coerce")
    assert dates.notna().all()
    assert set(cxr["ViewPosition"].dropna()) <= {"PA", "AP", "LATERAL", "LL"}
    pat = read(root, schema.PATIENTS_CANDIDATES[0])
    assert pat["subject_id"].is_unique and pat["subject_id"].between(10_000_000, 19_999_999).all()
    assert set(pat["gender"]) == {"F", "M"} and pat["anchor_age"].between(18, 91).all()
    assert pat["anchor_age"].dtype == np.int64 and pat["anchor_year"].dtype == np.int64
    stays = read(root, schema.EDSTAYS)
    assert stays["stay_id"].is_unique and stays["hadm_id"].isna().any() and stays["hadm_id"].notna().any()
    intime = pd.to_datetime(stays["intime"], format="%Y-%m-%d %H:%M:%S")
    outtime = pd.to_datetime(stays["outtime"], format="%Y-%m-%d %H:%M:%S")
    assert (outtime > intime).all()
    tri = read(root, schema.TRIAGE)
    assert tri["stay_id"].is_unique and tri["stay_id"].isin(stays["stay_id"]).all()
    for c in ("temperature", "heartrate", "resprate", "o2sat", "sbp", "dbp", "acuity"):
        assert tri[c].dtype == np.float64, c
    pain_num = pd.to_numeric(tri["pain"], errors="coerce")
    assert pain_num.notna().mean() > 0.8 and (pain_num.isna() & tri["pain"].notna()).sum() > 0  # free text
    meta = reflacx_metadata(root)
    assert set(meta["split"]) == {"train", "validate", "test"}
    assert meta["id"].str.fullmatch(r"P(300|[12]0[1-5])R\d{6}").all()
    assert meta["dicom_id"].isin(cxr["dicom_id"]).mean() > 0.97


def test_jpegs_match_metadata_and_sizes_vary(big):
    root, summary = big
    meta = reflacx_metadata(root).drop_duplicates("dicom_id")
    cxr = read(root, schema.CXR_METADATA).set_index("dicom_id")
    jpgs = sorted((root / schema.CXR_DIR / "files").glob("p1*/p*/s*/*.jpg"))
    assert len(jpgs) == summary["jpegs"] == summary["images"] - 6  # 1 % of 600 images have no JPEG
    by_dicom = {p.stem: p for p in jpgs}
    sizes = set()
    for row in meta.itertuples():
        if row.dicom_id not in by_dicom:
            continue
        p = by_dicom[row.dicom_id]
        assert p.parent.name.startswith("s") and p.parent.parent.name == f"p{row.subject_id}"
        assert p.parent.parent.parent.name == f"p{str(row.subject_id)[:2]}"
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.mode == "L"
            assert im.size == (row.image_size_x, row.image_size_y)
            sizes.add(im.size)
        if row.dicom_id in cxr.index:
            assert (cxr.at[row.dicom_id, "Columns"], cxr.at[row.dicom_id, "Rows"]) == im.size
    assert len(sizes) > 100 and all(w != h for w, h in sizes)
    widths = [w for w, _ in sizes]
    assert min(widths) < 28 and max(widths) > 36  # 0.75–1.25 × 32 px


def test_ellipses_in_original_pixels_and_labels(big):
    root, summary = big
    meta = reflacx_metadata(root)
    n_ell = n_p1_pleural = n_p23_pleural = 0
    for row in meta.itertuples():
        e = ellipses(root, row.id)
        n_ell += len(e)
        x0, y0, x1, y1, cert = e.values.T  # integer pixels of the original image
        assert (x0 >= 0).all() and (x1 <= row.image_size_x).all() and (y0 >= 0).all() and (y1 <= row.image_size_y).all()
        assert (x1 > x0).all() and (y1 > y0).all() and ((cert >= 1) & (cert <= 5)).all()
        assert (e.marks.sum(axis=1) >= 1).all()  # every ellipse marks a label
        for lab in e.labels:  # metadata label column = max certainty of the reading's ellipses with it
            expect = int(cert[e.mark(lab)].max()) if e.mark(lab).any() else 0
            assert meta.at[row.Index, lab] == expect, (row.id, lab)
        if row.phase == 1:
            n_p1_pleural += int((e.mark("Pleural effusion") | e.mark("Pleural thickening")).sum())
        else:
            n_p23_pleural += int(e.mark("Pleural abnormality").sum())
    assert n_ell == summary["ellipses"] and n_p1_pleural > 0 and n_p23_pleural > 0


# ----------------------------------------------------------------------------- messiness
def test_messiness_is_planted(big):
    root, summary = big
    meta = reflacx_metadata(root)
    cxr = read(root, schema.CXR_METADATA)
    reflacx_cxr = cxr[cxr["dicom_id"].isin(meta["dicom_id"])]
    time_text = pd.read_csv(schema.find_table(root, schema.CXR_METADATA), usecols=["StudyTime"],
                            dtype=str)["StudyTime"]  # as written in the file
    counts = {
        # StudyTime unpadded HHMMSS.fff float: morning studies have fewer than 6 integer digits
        "morning reflacx studies": int((reflacx_cxr["StudyTime"] < 100_000).sum()),
        "unpadded StudyTime text": int((time_text.str.split(".").str[0].str.len() < 6).sum()),
        "StudyTime with milliseconds": int((time_text.str.split(".").str[1].str.len() == 3).sum()),
        "empty ViewPosition": int(cxr["ViewPosition"].isna().sum()),
        "lateral rows": int(cxr["ViewPosition"].isin(["LATERAL", "LL"]).sum()),
        "images read by >= 2 radiologists": int((meta["dicom_id"].value_counts() >= 2).sum()),
        "readings without ellipses": summary["readings_without_ellipses"],
        "phase-3 readings": int((meta["phase"] == 3).sum()),
        "phase-1 readings": int((meta["phase"] == 1).sum()),
        "phase-2 readings": int((meta["phase"] == 2).sum()),
        "phase-1 pleural effusion": int((meta["Pleural effusion"] > 0).sum()),
        "phase-1 pleural thickening": int((meta["Pleural thickening"] > 0).sum()),
        "phase-2/3 pleural abnormality": int((meta["Pleural abnormality"] > 0).sum()),
        "eye tracking discarded": int(meta["eye_tracking_data_discarded"].sum()),
    }
    tri = read(root, schema.TRIAGE)
    pain = tri["pain"]
    counts |= {f"pain {v!r}": int((pain == v).sum()) for v in ("UA", "unable", "8-10")}
    counts["pain empty"] = int(pain.isna().sum())
    counts["pain numeric text"] = int(pain.str.fullmatch(r"\d+").sum())
    counts["temperature in °C"] = int(tri["temperature"].between(25, 45).sum())
    for c in ("temperature", "heartrate", "resprate", "o2sat", "sbp", "dbp", "acuity"):
        counts[f"{c} missing"] = int(tri[c].isna().sum())
    for c, (lo, hi) in PLAUSIBLE.items():
        if c in ("heartrate", "resprate", "o2sat", "dbp"):
            counts[f"{c} implausible"] = int((~tri[c].between(lo, hi) & tri[c].notna()).sum())
    stays = read(root, schema.EDSTAYS)
    counts["patients with several stays"] = int((stays["subject_id"].value_counts() >= 2).sum())
    counts["stays without triage"] = int((~stays["stay_id"].isin(tri["stay_id"])).sum())
    counts["patients with several reflacx studies"] = int(
        (cxr[cxr["dicom_id"].isin(meta["dicom_id"])].groupby("subject_id")["study_id"].nunique() >= 2).sum())
    # frontal CXR studies that no ED stay of their patient contains
    fr = cxr[cxr["ViewPosition"].isin(["PA", "AP"])].copy()
    fr["dt"] = parse_study_datetime(fr["StudyDate"], fr["StudyTime"])
    st = stays.assign(intime=pd.to_datetime(stays["intime"]), outtime=pd.to_datetime(stays["outtime"]))
    m = fr.merge(st[["subject_id", "intime", "outtime"]], on="subject_id")
    contained = set(m.loc[(m["intime"] <= m["dt"]) & (m["dt"] <= m["outtime"]), "dicom_id"])
    counts["frontal CXR without ED stay"] = int((~fr["dicom_id"].isin(contained)).sum())
    counts["frontal CXR within an ED stay"] = len(contained)
    zero = [k for k, v in counts.items() if v <= 0]
    assert not zero, f"messiness missing: {zero}; counts {counts}"
    # shares are in the documented ranges (wide margins: 600 studies)
    assert 0.25 < counts["morning reflacx studies"] / len(reflacx_cxr) < 0.55
    assert 0.02 < counts["temperature in °C"] / len(tri) < 0.09
    assert 0.1 < summary["readings_without_ellipses"] / summary["readings"] < 0.7


@pytest.mark.parametrize("seed", range(4))
def test_guaranteed_cases_at_minimum_size(tmp_path, seed):
    """With n_studies = 10 every documented special case is still present (forced when chance misses it)."""
    summary = S.generate(tmp_path, S.MIN_RESERVED_STUDIES, seed=seed, image_size=32, tables_only=True)
    assert all(summary[k] >= 1 for k in PLANTED if k != "excl_missing_image")
    assert summary["readings_two_containing_stays"] >= 1 and summary["readings_without_ellipses"] >= 1
    meta = reflacx_metadata(tmp_path)
    assert set(meta["phase"]) == {1, 2, 3} and (meta["dicom_id"].value_counts() >= 2).any()
    p1 = meta[meta["phase"] == 1]
    assert ((p1["Pleural effusion"] > 0) | (p1["Pleural thickening"] > 0)).any()
    assert meta["eye_tracking_data_discarded"].any() and summary["excl_eye_tracking_discarded"] >= 1
    cxr = read(tmp_path, schema.CXR_METADATA)
    assert (cxr.loc[cxr["dicom_id"].isin(meta["dicom_id"]), "StudyTime"] < 100_000).any()
    tri = read(tmp_path, schema.TRIAGE)
    assert {"UA", "unable", "8-10"} <= set(tri["pain"].dropna()) and tri["pain"].isna().any()
    assert tri["temperature"].between(25, 45).any()
    for c in ("heartrate", "resprate", "o2sat", "dbp"):
        lo, hi = PLAUSIBLE[c]
        assert (tri[c].notna() & ~tri[c].between(lo, hi)).any(), c


def test_morning_study_time_roundtrip():
    dt = np.array(["2150-03-12T09:35:12.125", "2150-03-12T00:05:12.500", "2150-03-12T00:00:00",
                   "2150-03-12T23:59:59.999", "2150-03-12T10:00:00.001"], dtype="datetime64[ms]")
    assert S.study_time_float(dt).tolist() == [93512.125, 512.5, 0.0, 235959.999, 100000.001]
    assert S.study_date_int(dt).tolist() == [21500312] * 5
    rng = np.random.default_rng(0)
    rand = (np.datetime64("2150-01-01T00:00", "ms") + rng.integers(0, 400 * 86_400_000, 2000)
            * np.timedelta64(1, "ms"))
    back = parse_study_datetime(pd.Series(S.study_date_int(rand)), pd.Series(S.study_time_float(rand)))
    err = np.abs((back.to_numpy() - rand.astype("datetime64[ns]")).astype(np.int64))
    assert err.max() < 1_000  # < 1 µs: float HHMMSS.fff survives the round trip


# ----------------------------------------------------------------------------- join on the generated tree
def test_join_keeps_most_and_excludes_exactly_what_was_planted(big, big_joined):
    root, summary = big
    out, result = big_joined
    assert result.n_input == summary["readings"]
    assert result.n_kept >= 0.85 * result.n_input
    excl = pd.read_csv(out / "exclusions.csv").set_index("reason")["count"]
    assert list(excl.index) == list(REASONS)
    for key, reason in PLANTED.items():
        assert summary[key] > 0, key
        assert excl[reason] == summary[key], (reason, excl[reason], summary[key])
    assert excl.drop(list(PLANTED.values())).sum() == 0  # nothing else excluded
    assert result.n_kept + excl.sum() == summary["readings"]
    assert summary["readings_two_containing_stays"] > 0  # kept: both stays have triage
    assert result.n_boxes == summary["boxes"] - _boxes_of_excluded(root, out)


def _boxes_of_excluded(root: Path, out: Path) -> int:
    """Boxes (distinct classes per ellipse) of the excluded readings, counted from their ellipse files."""
    excluded = pd.read_parquet(out / "excluded.parquet")["reflacx_id"]
    n = 0
    for rid in excluded:
        e = ellipses(root, rid)
        for marks in e.marks:
            n += len({schema.LABEL_SYNONYMS[lab] for lab, m in zip(e.labels, marks, strict=True)
                      if m and lab in schema.LABEL_SYNONYMS})
    return n


def test_tables_only_scale_and_join(tmp_path):
    summary = S.generate(tmp_path, 12, seed=5, tables_only=True)
    assert not list(tmp_path.rglob("*.jpg")) and summary["jpegs"] == 0 and summary["excl_missing_image"] == 0
    assert summary["ed_stays"] >= 148 * 12 and summary["cxr_rows"] >= 126 * 12
    assert summary["patients"] == 99 * 12 + summary["reflacx_patients"]
    result = join(tmp_path, tmp_path / "joined", check_images=False)
    for key, reason in PLANTED.items():
        assert result.exclusions[reason] == summary[key], reason
    assert result.n_kept + result.n_excluded == summary["readings"]


@pytest.mark.parametrize("n", [1, 4])
def test_tiny_runs_have_no_planted_exclusions(tmp_path, n):
    summary = S.generate(tmp_path, n, seed=n, image_size=32)
    assert summary["images"] == n and all(summary[k] == 0 for k in PLANTED)
    result = join(tmp_path, tmp_path / "joined")
    assert result.n_kept == summary["readings"] >= n


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="n_studies"):
        S.generate(tmp_path, 0, seed=0)
    with pytest.raises(ValueError, match="n_studies"):
        S.generate(tmp_path, "5", seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image_size"):
        S.generate(tmp_path, 5, seed=0, image_size=16)


def test_rewriting_replaces_the_gz_twin(tmp_path):
    stale = tmp_path / (schema.TRIAGE + ".gz")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale")
    plain = tmp_path / schema.EDSTAYS
    plain.parent.mkdir(parents=True, exist_ok=True)
    plain.write_text("stale\n")
    S.generate(tmp_path, 3, seed=0, image_size=32)
    assert not stale.exists() and (tmp_path / schema.TRIAGE).is_file()
    assert not plain.exists() and (tmp_path / (schema.EDSTAYS + ".gz")).is_file()
