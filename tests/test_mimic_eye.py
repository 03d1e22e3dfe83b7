"""MIMIC-Eye as a source: one synthetic cohort written in both layouts joins to the same tables (the MIMIC-Eye tree
as the builder lays it out: patients only in ``spreadsheets/Hosp/``, only the REFLACX images, pandas' index first in
every table); layout detection and its errors; the variants of the per-patient layout the authors' code shows (flat
reading folders, per-patient ``Core/``/``Hosp/`` patients tables, ``\\r\\n``, ``.csv.gz``, extra folders);
duplicates across per-patient files; S3.

Compared after normalising only ``instances.image_path`` (the JPEG's path relative to the source folder differs by
layout by design: ``mimic-cxr-jpg/files/pXX/p<subject>/s<study>/<dicom>.jpg`` vs
``patient_<subject>/CXR-JPG/s<study>/<dicom>.jpg``; the test checks both formulas and that the two files hold the
same bytes). Every other column of ``instances.parquet``, all of ``boxes.parquet``, ``excluded.parquet`` and
``exclusions.csv`` must be equal, row order included.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from servers import upload_tree

from mdfnet.data import schema
from mdfnet.data import synthetic as S
from mdfnet.data.io import SourceError
from mdfnet.data.join import R_DUPLICATE, join
from mdfnet.data.sources import detect_layout, open_source

N_STUDIES, SEED = 80, 7
EYE_FILES = (schema.MIMIC_EYE_EDSTAYS, schema.MIMIC_EYE_TRIAGE, schema.MIMIC_EYE_CXR_METADATA,
             schema.MIMIC_EYE_REFLACX_METADATA)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Seed 7, 80 studies at ~32 px in both layouts, each joined (images checked)."""
    base = tmp_path_factory.mktemp("cohort")
    out = {}
    for layout in schema.LAYOUTS:
        summary = S.generate(base / layout, N_STUDIES, seed=SEED, image_size=32, layout=layout)
        result = join(base / layout, base / f"joined-{layout}")
        out[layout] = (base / layout, base / f"joined-{layout}", summary, result)
    return out


def joined_tables(joined: Path) -> dict[str, pd.DataFrame]:
    return {"instances": pd.read_parquet(joined / "instances.parquet"),
            "boxes": pd.read_parquet(joined / "boxes.parquet"),
            "excluded": pd.read_parquet(joined / "excluded.parquet"),
            "exclusions": pd.read_csv(joined / "exclusions.csv")}


def assert_same_join(a: Path, b: Path) -> None:
    ta, tb = joined_tables(a), joined_tables(b)
    pd.testing.assert_frame_equal(ta["instances"].drop(columns="image_path"), tb["instances"].drop(columns="image_path"))
    for name in ("boxes", "excluded", "exclusions"):
        pd.testing.assert_frame_equal(ta[name], tb[name], obj=name)


def copy_tree(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


# ----------------------------------------------------------------------------- the same cohort, two layouts
def test_generate_writes_the_same_cohort_per_patient(cohort):
    phys_root, _, phys_summary, _ = cohort["physionet"]
    eye_root, _, eye_summary, _ = cohort["mimic-eye"]
    assert eye_summary == phys_summary  # same seed → same rows, readings, JPEGs
    folders = sorted(p.name for p in eye_root.iterdir() if p.is_dir())
    assert (eye_root / schema.SYNTHETIC_MARKER).is_file()  # beside the folders: the generator marks what it made
    assert folders[-1] == "spreadsheets" and len(folders[:-1]) == eye_summary["reflacx_patients"] == 72
    assert all(re.fullmatch(r"patient_1\d{7}", f) for f in folders[:-1])
    assert not (eye_root / "reflacx").exists() and not list(phys_root.glob("patient_*"))
    # patients: only the whole table under spreadsheets/Hosp/, none per patient (the builder at HEAD)
    assert not [p for rel in schema.MIMIC_EYE_PATIENTS_CANDIDATES for p in eye_root.glob(f"patient_*/{rel}")]
    shared = pd.read_csv(eye_root / schema.MIMIC_EYE_SHARED_PATIENTS, index_col=0, keep_default_na=False)
    phys_patients = pd.read_csv(phys_root / (schema.PATIENTS_CANDIDATES[0] + ".gz"), keep_default_na=False)
    pd.testing.assert_frame_equal(shared, phys_patients)  # background patients included, index 0..n-1
    assert len(shared) == eye_summary["patients"] > 72
    files = {rel: sorted(eye_root.glob(f"patient_*/{rel}")) for rel in EYE_FILES}
    assert len(files[schema.MIMIC_EYE_REFLACX_METADATA]) == 72  # every REFLACX patient has readings
    for path in [eye_root / schema.MIMIC_EYE_SHARED_PATIENTS, *(p for ps in files.values() for p in ps)]:
        assert path.read_bytes().startswith(b",") and b"\r" not in path.read_bytes(), path  # pandas' index first
    meta = pd.concat([pd.read_csv(p) for p in files[schema.MIMIC_EYE_REFLACX_METADATA]])
    assert len(meta) == eye_summary["readings"] == 106 and "phase" not in meta.columns
    assert list(meta.columns[:1]) == ["Unnamed: 0"]  # pandas' index, as MIMIC-Eye's builder wrote it
    labels = list(dict.fromkeys([*schema.REFLACX_PHASE1_LABELS, *schema.REFLACX_PHASE23_LABELS]))
    assert list(meta.columns[1:]) == [*schema.REFLACX_METADATA_COLUMNS, *labels] and len(labels) == 26  # merged
    assert meta["eye_tracking_data_discarded"].sum() == eye_summary["excl_eye_tracking_discarded"] >= 1
    # cxr_meta: only the images REFLACX read (no Eye Gaze here), not the laterals or other studies
    cxr_meta = pd.concat([pd.read_csv(p) for p in files[schema.MIMIC_EYE_CXR_METADATA]])
    assert list(cxr_meta.columns) == ["Unnamed: 0", *schema.CXR_METADATA_COLUMNS, "in_eye_gaze", "in_reflacx",
                                      "StudyDateTime", "stay_id"]
    phys_cxr = pd.read_csv(phys_root / (schema.CXR_METADATA + ".gz"))
    assert set(cxr_meta["dicom_id"]) == set(meta["dicom_id"]) & set(phys_cxr["dicom_id"])
    assert cxr_meta["in_reflacx"].all() and not cxr_meta["in_eye_gaze"].any()
    assert len(phys_cxr[phys_cxr["subject_id"].isin(cxr_meta["subject_id"])]) > len(cxr_meta)  # some left out
    ellipse_files = sorted(eye_root.glob("patient_*/REFLACX/main_data/*/anomaly_location_ellipses.csv"))
    assert len(ellipse_files) == 106
    for path in ellipse_files:  # copied as REFLACX wrote them
        assert path.read_bytes() == (phys_root / schema.ellipses_path(path.parent.name)).read_bytes()
    assert len(sorted(eye_root.glob("patient_*/CXR-JPG/s*/*.jpg"))) == eye_summary["jpegs"] == 79


def test_both_layouts_join_to_the_same_tables(cohort):
    phys_root, phys_joined, _, phys_result = cohort["physionet"]
    eye_root, eye_joined, _, eye_result = cohort["mimic-eye"]
    assert (eye_result.n_input, eye_result.n_kept, eye_result.n_boxes) == (phys_result.n_input, phys_result.n_kept,
                                                                           phys_result.n_boxes) == (106, 96, 132)
    assert eye_result.exclusions == phys_result.exclusions and eye_result.n_excluded == 10
    assert eye_result.exclusions["eye-tracking data discarded (REFLACX eye_tracking_data_discarded)"] == 1
    assert_same_join(phys_joined, eye_joined)
    a, b = (pd.read_parquet(j / "instances.parquet") for j in (phys_joined, eye_joined))
    for ra, rb in zip(a.itertuples(), b.itertuples(), strict=True):
        s, t, d = ra.subject_id, ra.study_id, ra.dicom_id
        assert ra.image_path == f"mimic-cxr-jpg/files/p{str(s)[:2]}/p{s}/s{t}/{d}.jpg"
        assert rb.image_path == f"patient_{s}/CXR-JPG/s{t}/{d}.jpg"
        assert (phys_root / ra.image_path).read_bytes() == (eye_root / rb.image_path).read_bytes()
    assert '"layout": "mimic-eye"' in (eye_joined / "join_meta.json").read_text()
    assert '"layout": "physionet"' in (phys_joined / "join_meta.json").read_text()


def test_cli_synth_and_join_in_the_mimic_eye_layout(tmp_path):
    from typer.testing import CliRunner

    from mdfnet.cli import app

    res = CliRunner().invoke(app, ["synth", str(tmp_path / "cli"), "--studies", "12", "--seed", "3",
                                   "--tables-only", "--layout", "mimic-eye"])
    assert res.exit_code == 0, res.output
    S.generate(tmp_path / "api", 12, seed=3, tables_only=True, layout="mimic-eye")

    def hashes(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    eye = hashes(tmp_path / "cli")
    assert eye == hashes(tmp_path / "api") and len(eye) > 50  # same seed → same bytes
    res = CliRunner().invoke(app, ["join", str(tmp_path / "cli"), str(tmp_path / "j"), "--no-check-images"])
    assert res.exit_code == 0, res.output
    kept = len(pd.read_parquet(tmp_path / "j" / "instances.parquet"))
    assert re.search(rf"readings kept\s+{kept}$", res.output, re.M) and kept > 0
    res = CliRunner().invoke(app, ["join", str(tmp_path / "cli"), str(tmp_path / "j2"), "--layout", "physionet"])
    assert res.exit_code == 2 and "layout 'physionet' was asked for" in res.output
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "x"), "--studies", "5", "--layout", "eye"])
    assert res.exit_code == 2 and "layout must be one of" in res.output


# ----------------------------------------------------------------------------- detection and forced layouts
def test_layout_is_detected_or_a_clear_error(cohort, tmp_path):
    assert detect_layout(cohort["physionet"][0]) == "physionet"
    assert detect_layout(cohort["mimic-eye"][0]) == "mimic-eye"
    (tmp_path / "empty" / "spreadsheets").mkdir(parents=True)
    with pytest.raises(SourceError, match=r"looked for reflacx/main_data/ .*metadata_phase.* and for patient_"):
        detect_layout(tmp_path / "empty")
    both = tmp_path / "both"
    (both / schema.REFLACX_DIR).mkdir(parents=True)
    (both / "patient_10000001").mkdir()
    with pytest.raises(SourceError, match="has both .* pass layout"):
        join(both, tmp_path / "o")
    assert isinstance(open_source(both, "mimic-eye"), type(open_source(cohort["mimic-eye"][0])))


def test_forced_layout_must_match_the_folders(cohort, tmp_path):
    with pytest.raises(SourceError, match=r"layout 'physionet' was asked for .* no reflacx/main_data/.*"
                                          r"looks like layout 'mimic-eye'"):
        join(cohort["mimic-eye"][0], tmp_path / "a", layout="physionet")
    with pytest.raises(SourceError, match=r"layout 'mimic-eye' was asked for .* no patient_<subject_id>/ folders"
                                          r".*looks like layout 'physionet'"):
        join(cohort["physionet"][0], tmp_path / "b", layout="mimic-eye")
    with pytest.raises(ValueError, match="layout must be 'auto' or one of"):
        join(cohort["physionet"][0], tmp_path / "c", layout="eye")
    forced = join(cohort["mimic-eye"][0], tmp_path / "d", layout="mimic-eye")
    assert forced.n_kept == cohort["mimic-eye"][3].n_kept


# ----------------------------------------------------------------------------- variants of the per-patient layout
def test_flat_reading_folders_per_patient_patients_crlf_gz_and_extra_folders(cohort, tmp_path):
    """Reading folders directly under REFLACX/; per-patient patients tables as the MDF-Net code reads them
    (``Core/``, or ``Hosp/``): half the patients only there (taken out of spreadsheets/Hosp/patients.csv), the
    other half there and in the shared table (exact duplicates); CRLF and gzip files, folders the join does not
    read."""
    root = copy_tree(cohort["mimic-eye"][0], tmp_path / "eye")
    for folder in sorted(root.glob("patient_*/REFLACX/main_data/*")):
        folder.rename(folder.parent.parent / folder.name)
    shared_path = root / schema.MIMIC_EYE_SHARED_PATIENTS
    shared = pd.read_csv(shared_path, index_col=0)
    moved = []
    for i, d in enumerate(sorted(root.glob("patient_*"))):
        subject = int(d.name.removeprefix("patient_"))
        (d / ("Core" if i % 2 else "Hosp")).mkdir(exist_ok=True)
        shared[shared["subject_id"] == subject].to_csv(d / ("Core" if i % 2 else "Hosp") / "patients.csv")
        moved += [subject] if i % 2 else []
    shared[~shared["subject_id"].isin(moved)].to_csv(shared_path)
    stays = sorted(root.glob("patient_*/ED/edstays.csv"))
    stays[0].write_bytes(stays[0].read_bytes().replace(b"\n", b"\r\n"))
    triage = sorted(root.glob("patient_*/ED/triage.csv"))[1]
    triage.with_name("triage.csv.gz").write_bytes(gzip.compress(triage.read_bytes()))
    triage.unlink()
    for d in sorted(root.glob("patient_*"))[:3]:
        (d / "EyeGaze").mkdir()
        (d / "EyeGaze" / "master_sheet.csv").write_text("dicom_id,path\nx,y\n")
        (d / "CXR-DICOM").mkdir()
        (d / "CXR-DICOM" / "s1.txt").write_text("FINDINGS: none")
    (root / "spreadsheets" / "cxr_meta.csv").write_text("not,read\n")
    result = join(root, tmp_path / "joined")
    assert result.n_kept == cohort["mimic-eye"][3].n_kept == 96
    assert_same_join(cohort["mimic-eye"][1], tmp_path / "joined")


def test_conflicting_duplicate_patient_is_an_error_naming_the_files(cohort, tmp_path):
    root = copy_tree(cohort["mimic-eye"][0], tmp_path / "eye")
    a = sorted(root.glob("patient_*"))[0]
    subject = int(a.name.removeprefix("patient_"))
    shared = pd.read_csv(root / schema.MIMIC_EYE_SHARED_PATIENTS, index_col=0)
    row = shared[shared["subject_id"] == subject]
    (a / "Core").mkdir()
    row.assign(anchor_age=row["anchor_age"] + 7).to_csv(a / "Core/patients.csv")
    with pytest.raises(SourceError) as err:
        join(root, tmp_path / "o")
    msg = str(err.value)
    assert f"subject_id={subject}: columns ['anchor_age'] differ" in msg
    assert str(a / "Core/patients.csv") in msg and str(root / schema.MIMIC_EYE_SHARED_PATIENTS) in msg
    row.to_csv(a / "Core/patients.csv")  # the same row twice: dropped, the join unchanged
    assert_same_join(cohort["mimic-eye"][1], Path(join(root, tmp_path / "same").out_dir))


def test_conflicting_duplicate_stay_is_an_error(cohort, tmp_path):
    root = copy_tree(cohort["mimic-eye"][0], tmp_path / "eye")
    a, b = sorted(root.glob("patient_*"))[:2]
    stays_a, stays_b = (pd.read_csv(d / schema.MIMIC_EYE_EDSTAYS, index_col=0) for d in (a, b))
    moved = stays_a.iloc[:1].assign(outtime="2200-01-01 00:00:00")
    pd.concat([stays_b, moved]).to_csv(b / schema.MIMIC_EYE_EDSTAYS)
    with pytest.raises(SourceError, match=rf"(?s)ED stays: 1 stay_id value.*stay_id={moved['stay_id'].iloc[0]}: "
                                          r"columns \['outtime'\] differ") as err:
        join(root, tmp_path / "o")
    assert str(a / schema.MIMIC_EYE_EDSTAYS) in str(err.value) and str(b / schema.MIMIC_EYE_EDSTAYS) in str(err.value)


def test_conflicting_reading_is_an_itemised_exclusion(cohort, tmp_path):
    root = copy_tree(cohort["mimic-eye"][0], tmp_path / "eye")
    metas = {d: pd.read_csv(d / schema.MIMIC_EYE_REFLACX_METADATA, index_col=0) for d in sorted(root.glob("patient_*"))}
    a = next(d for d, m in metas.items() if len(m) >= 2)  # a patient with two readings
    b = next(d for d in metas if d != a)
    meta_a, meta_b = metas[a], metas[b]
    other = meta_a.iloc[:1].assign(split="test" if meta_a["split"].iloc[0] != "test" else "train")
    pd.concat([meta_b, other, meta_a.iloc[1:2]]).to_csv(b / schema.MIMIC_EYE_REFLACX_METADATA)  # + an exact copy
    base = cohort["mimic-eye"][3]
    result = join(root, tmp_path / "o")
    assert result.n_input == base.n_input + 1  # the exact copy is dropped, the conflicting one counted
    assert result.exclusions[R_DUPLICATE] == 1 and result.n_kept == base.n_kept
    assert result.n_kept + result.n_excluded == result.n_input


def test_phase_is_read_from_the_reflacx_id(cohort, tmp_path):
    root = copy_tree(cohort["mimic-eye"][0], tmp_path / "eye")
    inst = pd.read_parquet(cohort["mimic-eye"][1] / "instances.parquet")
    assert (inst["reflacx_phase"] == inst["reflacx_id"].str[1].astype(int)).all()
    assert set(inst["reflacx_phase"]) == {1, 2, 3}
    meta = next(root.glob("patient_*/REFLACX/metadata.csv"))
    df = pd.read_csv(meta, index_col=0)
    df.assign(id="X" + df["id"]).to_csv(meta)
    with pytest.raises(SourceError, match=r"expected P<phase 1-3><2 digits>R<digits>"):
        join(root, tmp_path / "o")


# ----------------------------------------------------------------------------- S3
def test_mimic_eye_tree_from_s3_through_the_join_step(cohort, tmp_path, fake_aws):
    import boto3
    from moto import mock_aws

    from mdfnet.pipeline import steps

    src = cohort["mimic-eye"][0]
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="physionet")
        upload_tree(s3, src, "physionet", "mimic-eye/1.0.0")
        out = steps.join_step("s3://physionet/mimic-eye/1.0.0", tmp_path / "joined")
    base = cohort["mimic-eye"][3]
    assert (out["n_input"], out["n_kept"], out["exclusions"]) == (base.n_input, base.n_kept, base.exclusions)
    inst = pd.read_parquet(tmp_path / "joined" / "instances.parquet")
    assert inst["image_path"].str.startswith("patient_").all()
    assert len(list((tmp_path / "joined" / "images").rglob("*.jpg"))) == inst["image_path"].nunique() == 72
    assert_same_join(cohort["mimic-eye"][1], tmp_path / "joined")
