"""Join on hand-built tiny sources: every rule of the join stated by a reading built for it."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from handbuilt import build_sources, patient, stay, triage_row

from mdfnet.data import join as J
from mdfnet.data.join import join, parse_study_datetime

DATE = 21500312  # 2150-03-12


def R(rid, subject, study, dicom, time, **kw):
    base = dict(reflacx_id=rid, subject_id=subject, study_id=study, dicom_id=dicom, date=DATE, time=time,
                width=80, height=64, ellipses=[(10, 10, 40, 30, 4, ["Consolidation"])])
    base.update(kw)
    return base


@pytest.fixture(scope="module")
def joined(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    readings = [
        # 1. morning study (08:05:03.5 → StudyTime 80503.5): must be kept (the authors' bug dropped these)
        R("P1R1", 10000001, 50000001, "d-morning", 80503.5),
        # 2. afternoon study inside the stay, phase-1 synonyms: Pleural effusion + thickening → one class
        R("P1R2", 10000002, 50000002, "d-phase1", 143000.0, phase=1,
          ellipses=[(5, 5, 30, 30, 5, ["Pleural effusion", "Pleural thickening"]), (0, 0, 200, 200, 3, ["Atelectasis"]),
                    (1, 1, 5, 5, 2, ["Support devices"]), (2, 2, 9, 9, 4, ["Emphysema", "Fibrosis"])]),
        # 3. study outside every stay of its patient
        R("P1R3", 10000003, 50000003, "d-outside", 120000.0),
        # 4. two stays contain the study: latest intime wins (stay 304)
        R("P1R4", 10000004, 50000004, "d-twostays", 120000.0, ellipses=[]),
        # 5. no CXR metadata row
        R("P1R5", 10000005, 50000005, "d-nocxr", 120000.0, in_cxr=False),
        # 6. lateral view
        R("P1R6", 10000006, 50000006, "d-lateral", 120000.0, view="LATERAL"),
        # 7. stay without triage
        R("P1R7", 10000007, 50000007, "d-notriage", 120000.0),
        # 8. image missing on disk
        R("P1R8", 10000008, 50000008, "d-noimage", 120000.0, image=False),
        # 9. corrupt image file
        R("P1R9", 10000009, 50000009, "d-corrupt", 120000.0, image="corrupt"),
        # 10. second reading of image 1 by another radiologist (phase 2)
        R("P2R10", 10000001, 50000001, "d-morning", 80503.5, phase=2,
          ellipses=[(12, 8, 44, 33, 1, ["Consolidation"])]),
        # 11. no patient record
        R("P1R11", 10000011, 50000011, "d-nopatient", 120000.0),
        # 12. just after midnight (00:05:12 → StudyTime 512.0)
        R("P1R12", 10000012, 50000012, "d-midnight", 512.0),
        # 13. phase 3: "Pleural abnormality" itself, with non-target labels of phases 2-3 on the same ellipse
        R("P3R13", 10000013, 50000013, "d-phase3", 120000.0, phase=3,
          ellipses=[(5, 5, 30, 30, 4, ["Pleural abnormality", "Support devices"]), (2, 2, 20, 20, 2, ["Pneumothorax"])]),
        # 14. REFLACX discarded its eye tracking (its ellipse file exists): dropped by default
        R("P1R14", 10000014, 50000014, "d-discarded", 120000.0, discarded=True),
    ]
    patients = [patient(s, "M" if s % 2 else "F", age=50, year=2148) for s in
                (10000001, 10000002, 10000003, 10000004, 10000005, 10000006, 10000007, 10000008, 10000009, 10000012,
                 10000013, 10000014)]
    # (subject, stay, intime, outtime); most stays run 10:00-13:00 on the study day
    late_morning = ("2150-03-12 10:00:00", "2150-03-12 13:00:00")
    stays = [stay(*row) for row in [
        (10000001, 101, "2150-03-12 07:00:00", "2150-03-12 11:00:00"),
        (10000001, 199, "2150-01-01 07:00:00", "2150-01-01 11:00:00"),
        (10000002, 201, "2150-03-12 13:00:00", "2150-03-12 18:00:00"),
        (10000003, 301, "2150-03-12 13:00:00", "2150-03-12 18:00:00"),
        (10000004, 303, "2150-03-12 01:00:00", "2150-03-12 23:00:00"),
        *((subject, stay_id, *late_morning) for subject, stay_id in [
            (10000004, 304), (10000005, 501), (10000006, 601), (10000007, 701), (10000008, 801), (10000009, 901),
            (10000011, 1101), (10000013, 1301), (10000014, 1401)]),
        (10000012, 1201, "2150-03-11 22:00:00", "2150-03-12 03:00:00"),
    ]]
    triage = [triage_row(s["subject_id"], s["stay_id"]) for s in stays if s["stay_id"] != 701]
    build_sources(src, readings, patients, stays, triage)
    out = tmp_path_factory.mktemp("joined")
    result = join(src, out)
    return result, out


def test_kept_plus_excluded_equals_input(joined):
    result, out = joined
    inst = pd.read_parquet(out / "instances.parquet")
    excl = pd.read_parquet(out / "excluded.parquet")
    assert result.n_input == 14
    assert len(inst) + len(excl) == 14
    assert set(inst["reflacx_id"]).isdisjoint(excl["reflacx_id"])
    table = pd.read_csv(out / "exclusions.csv")
    assert list(table.columns) == ["reason", "count"]
    assert table["count"].sum() == len(excl)


def test_morning_and_midnight_studies_kept(joined):
    _, out = joined
    inst = pd.read_parquet(out / "instances.parquet").set_index("reflacx_id")
    assert inst.loc["P1R1", "stay_id"] == 101
    assert inst.loc["P1R1", "study_datetime"] == pd.Timestamp("2150-03-12 08:05:03.5")
    assert inst.loc["P1R12", "stay_id"] == 1201
    assert inst.loc["P1R12", "study_datetime"] == pd.Timestamp("2150-03-12 00:05:12")


def test_each_exclusion_has_its_reason(joined):
    _, out = joined
    excl = pd.read_parquet(out / "excluded.parquet").set_index("reflacx_id")["reason"].to_dict()
    assert excl == {
        "P1R3": J.R_NO_STAY, "P1R5": J.R_NO_CXR, "P1R6": J.R_NOT_FRONTAL, "P1R7": J.R_NO_TRIAGE,
        "P1R8": J.R_NO_IMAGE, "P1R9": J.R_BAD_IMAGE, "P1R11": J.R_NO_PATIENT, "P1R14": J.R_DISCARDED,
    }
    counts = pd.read_csv(out / "exclusions.csv").set_index("reason")["count"]
    assert counts[J.R_NO_STAY] == 1 and counts[J.R_NEGATIVE] == 0 and counts[J.R_DISCARDED] == 1
    assert list(counts.index) == list(J.REASONS)


def test_several_stays_resolved_by_latest_intime(joined):
    _, out = joined
    inst = pd.read_parquet(out / "instances.parquet").set_index("reflacx_id")
    assert inst.loc["P1R4", "stay_id"] == 304


def test_age_gender_and_columns(joined):
    _, out = joined
    inst = pd.read_parquet(out / "instances.parquet").set_index("reflacx_id")
    assert inst.loc["P1R1", "age"] == 52  # 50 + (2150 - 2148)
    assert inst.loc["P1R1", "gender"] == "M"
    for c in J.INSTANCE_COLUMNS:
        assert c in inst.reset_index().columns
    assert inst.loc["P1R1", "image_width"] == 80 and inst.loc["P1R1", "image_height"] == 64
    assert inst.loc["P3R13", "reflacx_phase"] == 3 and inst.loc["P1R2", "reflacx_phase"] == 1


def test_synonyms_mapped_and_boxes_clipped(joined):
    _, out = joined
    boxes = pd.read_parquet(out / "boxes.parquet")
    b2 = boxes[boxes["reflacx_id"] == "P1R2"].sort_values("label")
    # effusion + thickening on one ellipse → one "Pleural abnormality" box; support devices, emphysema, fibrosis
    # (phase-1 labels outside the 5 classes) ignored
    assert b2["label"].tolist() == ["Atelectasis", "Pleural abnormality"]
    b13 = boxes[boxes["reflacx_id"] == "P3R13"]
    assert b13["label"].tolist() == ["Pleural abnormality"]  # phases 2-3 name the class itself
    atel = b2[b2["label"] == "Atelectasis"].iloc[0]
    assert (atel["xmax"], atel["ymax"]) == (80, 64)  # clipped to the 80x64 image
    assert set(boxes["label"]) <= set(J.schema.CLASSES)
    # negatives kept by default
    assert "P1R4" in set(pd.read_parquet(out / "instances.parquet")["reflacx_id"])
    assert "P1R4" not in set(boxes["reflacx_id"])


def test_non_target_labels_of_both_phases_are_known(joined):
    """Emphysema, Fibrosis (phase 1), Pneumothorax, Support devices (both): not targets, and not "unknown"."""
    result, out = joined
    assert not [k for k in result.box_report if k.startswith("unknown label")], result.box_report
    assert not [k for k in json.loads((out / "join_meta.json").read_text())["box_report"] if "unknown" in k]


def test_discarded_readings_kept_on_request(joined, tmp_path):
    result, out = joined
    src = J.image_root(out)
    assert json.loads((out / "join_meta.json").read_text())["keep_discarded_eye_tracking"] is False
    assert result.exclusions[J.R_DISCARDED] == 1
    assert f"excluded: {J.R_DISCARDED}" in result.summary_table()
    kept = join(src, tmp_path / "all", keep_discarded_eye_tracking=True)
    assert kept.exclusions[J.R_DISCARDED] == 0 and kept.n_kept == result.n_kept + 1
    inst = pd.read_parquet(tmp_path / "all" / "instances.parquet")
    assert "P1R14" in set(inst["reflacx_id"])
    boxes = pd.read_parquet(tmp_path / "all" / "boxes.parquet")
    assert boxes.loc[boxes["reflacx_id"] == "P1R14", "label"].tolist() == ["Consolidation"]  # its ellipses exist
    assert json.loads((tmp_path / "all" / "join_meta.json").read_text())["keep_discarded_eye_tracking"] is True


def test_cli_and_join_step_pass_the_discarded_option_through(joined, tmp_path):
    """``mdfnet join --keep-discarded-eye-tracking`` and the pipeline's join step keep the discarded reading."""
    from typer.testing import CliRunner

    from mdfnet.cli import app
    from mdfnet.pipeline.steps import join_step

    result, out = joined
    src = J.image_root(out)
    for flag, kept in (("--drop-discarded-eye-tracking", result.n_kept), ("--keep-discarded-eye-tracking",
                                                                          result.n_kept + 1)):
        r = CliRunner().invoke(app, ["join", str(src), str(tmp_path / flag), flag])
        assert r.exit_code == 0, r.output
        assert len(pd.read_parquet(tmp_path / flag / "instances.parquet")) == kept
    step = join_step(str(src), tmp_path / "step", keep_discarded_eye_tracking=True)
    assert step["n_kept"] == result.n_kept + 1 and step["exclusions"].get(J.R_DISCARDED, 0) == 0
    default = join_step(str(src), tmp_path / "step-default")
    assert default["exclusions"][J.R_DISCARDED] == 1 and J.R_DISCARDED in default["report_markdown"]


@pytest.mark.parametrize("value", ["true", "FALSE", " 1", "0", "1.0"])
def test_discarded_flag_spellings(tmp_path, value):
    src = build_sources(tmp_path / "s", [R("P1R1", 10000001, 50000001, "d1", 91500.0, discarded=value)],
                        [patient(10000001)], [stay(10000001, 1, "2150-03-12 09:00:00", "2150-03-12 10:00:00")],
                        [triage_row(10000001, 1)])
    r = join(src, tmp_path / "o")
    assert r.exclusions[J.R_DISCARDED] == (value.strip().lower() in ("true", "1", "1.0"))


@pytest.mark.parametrize("value", ["yes", "", "2", "discarded"])
def test_bad_discarded_flag_names_file_row_and_value(tmp_path, value):
    readings = [R("P1R1", 10000001, 50000001, "d1", 91500.0),
                R("P1R2", 10000001, 50000002, "d2", 91500.0, discarded=value)]
    src = build_sources(tmp_path / "s", readings, [patient(10000001)],
                        [stay(10000001, 1, "2150-03-12 09:00:00", "2150-03-12 10:00:00")], [triage_row(10000001, 1)])
    path = src / J.schema.reflacx_metadata_path(1)
    shown = repr(value) if value else "an empty cell"
    with pytest.raises(J.JoinError, match=rf"{path}, line 3 \(reading 'P1R2'\): {re.escape(shown)}"):
        join(src, tmp_path / "o")


def test_drop_negatives_and_certainty_options(joined, tmp_path):
    result, out = joined
    src = J.image_root(out)
    r2 = join(src, tmp_path / "j2", keep_negatives=False, min_certainty=3)
    excl = pd.read_parquet(tmp_path / "j2" / "excluded.parquet").set_index("reflacx_id")["reason"]
    assert excl["P1R4"] == J.R_NEGATIVE
    assert excl["P2R10"] == J.R_NEGATIVE  # its only ellipse has certainty 1
    assert r2.exclusions[J.R_NEGATIVE] == 2
    assert r2.n_kept == result.n_kept - 2


def test_csv_gz_read_and_core_patients(tmp_path):
    """CXR metadata and edstays are .csv.gz; patients under core/ (MIMIC-IV v1)."""
    src = build_sources(tmp_path / "s", [R("P1R1", 10000001, 50000001, "d1", 91500.0)],
                        [patient(10000001)], [stay(10000001, 1, "2150-03-12 09:00:00", "2150-03-12 10:00:00")],
                        [triage_row(10000001, 1, pain="UA")], gz_cxr=True, patients_dir="core")
    assert (src / "mimic-cxr-jpg/mimic-cxr-2.0.0-metadata.csv.gz").is_file()
    r = join(src, tmp_path / "o")
    assert r.n_kept == 1
    inst = pd.read_parquet(tmp_path / "o" / "instances.parquet")
    assert inst.loc[0, "pain"] == "UA"  # kept as found; cleaned in preprocess


def test_parse_study_datetime_unpadded():
    s = parse_study_datetime(pd.Series([21500312, 21500312, 21500312, 21500312]),
                             pd.Series([93512.125, 512.5, 235959.0, 7000.0]))
    assert s[0] == pd.Timestamp("2150-03-12 09:35:12.125")
    assert s[1] == pd.Timestamp("2150-03-12 00:05:12.5")
    assert s[2] == pd.Timestamp("2150-03-12 23:59:59")
    assert pd.isna(s[3])  # 00:70:00 is not a time


def test_missing_sources_are_clear_errors(tmp_path):
    from mdfnet.data.io import SourceError

    with pytest.raises(SourceError, match="does not exist"):
        join(tmp_path / "nope", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="metadata_phase"):
        join(tmp_path / "empty", tmp_path / "o")
