"""Per-detection reasons (:mod:`mdfnet.serving.explain`): on a stand-in detector with a known clinical rule
(``stand_in_detector.RuleDetector``) every score change equals the hand-computed softmax difference and the top
reason is the feature of the rule (temperature for Consolidation, resprate / o2sat for Pulmonary edema, as on the
demo's example study); on a tiny real MDF-Net the plumbing (median = the model's own imputation, one batched pass
per feature, the pyfunc's ``explain`` param, ``mdfnet predict --explain``) holds."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from stand_in_detector import (
    MEAN,
    MEDIAN,
    STD,
    expected_probability,
    rule_predictor,
    save_pyfunc,
    tiny_mdf_predictor,
)

from mdfnet.data import schema
from mdfnet.serving.explain import CHANGE_PREFIX, EXPLAIN_COLUMNS, explain_predict, reason_text, score_changes
from mdfnet.serving.inputs import encode_image, request_frame

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FEVER = {"age": 63, "gender": "F", "temperature": 102.6, "heartrate": 82, "resprate": 16, "o2sat": 98,
         "sbp": 119, "dbp": 83, "pain": "0", "acuity": 3}
"""The demo example's kind of study: fever, normal breathing (README: P103R305769)."""
EDEMA = {**FEVER, "temperature": 98.3, "resprate": 24, "o2sat": 87}
"""The same study with the edema triage (the README's variant)."""


def _png(width: int, height: int, value: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((height, width), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _frame(*studies: dict, sizes: tuple[tuple[int, int], ...] = ((64, 48), (40, 80), (32, 32))) -> pd.DataFrame:
    return request_frame([{"study": f"s{i}", "image": encode_image(_png(*sizes[i % len(sizes)], 60 + 30 * i)), **values}
                          for i, values in enumerate(studies)])


def _cleaned(values: dict) -> dict:
    """The stand-in's inputs as the cleaning leaves them (numbers as float, pain as a number)."""
    return {f: (None if values[f] is None else float(values[f])) for f in schema.NUMERIC_FEATURES}


def test_changes_equal_the_hand_computed_softmax_differences():
    dets = explain_predict(rule_predictor(), _frame(FEVER, EDEMA))
    assert list(dets.columns[-len(EXPLAIN_COLUMNS):]) == list(EXPLAIN_COLUMNS)
    assert dets["study"].tolist() == ["s0", "s0", "s1", "s1"]
    for d in dets.to_dict("records"):
        values = _cleaned(FEVER if d["study"] == "s0" else EDEMA)
        p = expected_probability(values, d["label"])
        assert d["base_score"] == pytest.approx(p, abs=1e-6)
        assert d["score"] == pytest.approx(p, abs=1e-6)  # the stand-in scores any box alike
        for f in schema.NUMERIC_FEATURES:
            want = p - expected_probability({**values, f: MEDIAN[f]}, d["label"])
            assert d[f"{CHANGE_PREFIX}{f}"] == pytest.approx(want, abs=1e-6), f
        assert d[f"{CHANGE_PREFIX}age"] == 0.0  # not in the rule
    assert f"{CHANGE_PREFIX}gender" not in dets.columns  # no median; its 'missing' code is untrained
    fever_cons = dets[(dets["study"] == "s0") & (dets["label"] == "Consolidation")].iloc[0]
    edema_edema = dets[(dets["study"] == "s1") & (dets["label"] == "Pulmonary edema")].iloc[0]
    assert fever_cons["top_reason"] == "temperature" and fever_cons[f"{CHANGE_PREFIX}temperature"] > 0.5
    assert edema_edema["top_reason"] in ("resprate", "o2sat")
    assert edema_edema[f"{CHANGE_PREFIX}o2sat"] > 0.1 and edema_edema[f"{CHANGE_PREFIX}resprate"] > 0.01
    d = fever_cons
    assert d["reasons"].startswith(f"temperature 102.6 °F {d[CHANGE_PREFIX + 'temperature']:+.2f}")


def test_a_missing_value_is_the_median_so_its_change_is_zero():
    dets = explain_predict(rule_predictor(), _frame({**FEVER, "temperature": None, "o2sat": ""}))
    assert (dets[f"{CHANGE_PREFIX}temperature"] == 0.0).all() and (dets[f"{CHANGE_PREFIX}o2sat"] == 0.0).all()
    assert not dets["reasons"].str.contains("temperature").any()


def test_one_batched_pass_per_feature_and_boxes_in_model_pixels():
    """Studies of different original sizes: the kept boxes reach the box head in the model's pixels; one pass
    with the actual inputs plus one per feature, each over the whole chunk of images."""
    predictor = rule_predictor()
    dets = explain_predict(predictor, _frame(FEVER, EDEMA, FEVER), batch_size=4)
    model = predictor.model
    assert model.calls == [3] * (1 + len(schema.NUMERIC_FEATURES))
    seen = torch.cat(model.boxes_seen[:3])
    torch.testing.assert_close(seen, torch.cat(model.emitted), atol=1e-4, rtol=0)
    assert len(dets) == 6
    model.calls.clear()
    explain_predict(predictor, _frame(FEVER, EDEMA, FEVER), batch_size=2)
    assert model.calls == [2] * 10 + [1] * 10


def test_repeated_study_ids_and_studies_without_detections_keep_their_rows():
    """Rows are matched by position, not by study id: two rows named alike, the middle one with no detection
    above the threshold (normal triage: neither class reaches 0.5)."""
    calm = {**FEVER, "temperature": 98.6, "resprate": 18, "o2sat": 97}
    frame = _frame(FEVER, calm, EDEMA).assign(study=["same", "calm", "same"])
    dets = explain_predict(rule_predictor(), frame, score_threshold=0.5)
    assert dets["study"].tolist() == ["same", "same"]
    assert dets["label"].tolist() == ["Consolidation", "Pulmonary edema"]
    assert dets["top_reason"].tolist() == ["temperature", dets.iloc[1]["top_reason"]]
    assert dets.iloc[1]["top_reason"] in ("resprate", "o2sat")


def test_models_without_the_feature_or_without_a_clinical_path_give_nan():
    dets = explain_predict(rule_predictor(features=["resprate", "o2sat"]), _frame(FEVER))
    assert dets[f"{CHANGE_PREFIX}temperature"].isna().all() and dets[f"{CHANGE_PREFIX}o2sat"].notna().all()
    base = explain_predict(rule_predictor(variant="baseline"), _frame(EDEMA))
    assert base[[f"{CHANGE_PREFIX}{f}" for f in schema.NUMERIC_FEATURES]].isna().all().all()
    assert (base["reasons"] == "").all() and base["top_reason"].isna().all()


def test_reason_text_format():
    values = {"temperature": 102.6, "resprate": 16.0, "o2sat": 98.0, "sbp": 132.0, "pain": None}
    text = reason_text({"temperature": 0.61, "resprate": 0.05, "o2sat": -0.004, "sbp": -0.02, "pain": 0.03}, values)
    assert text == "temperature 102.6 °F +0.61, resprate 16/min +0.05, pain missing +0.03"


# ------------------------------------------------------------------------------------------ a real MDF-Net
@pytest.fixture(scope="module")
def tiny_mdf():
    return tiny_mdf_predictor()


def test_real_model_change_is_the_score_drop_with_the_standardised_median(tiny_mdf):
    """On MDF-Net, Δ for temperature equals the box head's class probability with the actual inputs minus that
    with the numeric input set to (median − mean) / std directly: setting a value missing is the median."""
    frame = _frame(FEVER, EDEMA, sizes=((64, 64),))
    dets = explain_predict(tiny_mdf, frame)
    assert len(dets) == 10
    images, _ = tiny_mdf.decode(frame)
    from mdfnet.serving.inputs import clean_request

    clinical = tiny_mdf.clinical_tensors(clean_request(frame))
    j = schema.NUMERIC_FEATURES.index("temperature")
    altered = {**clinical, "numeric": clinical["numeric"].clone()}
    altered["numeric"][:, j] = (MEDIAN["temperature"] - MEAN["temperature"]) / STD["temperature"]
    boxes = [torch.tensor(dets.loc[dets["study"] == s, ["xmin", "ymin", "xmax", "ymax"]].to_numpy(),
                          dtype=torch.float32) for s in ("s0", "s1")]
    labels = torch.tensor([schema.CLASS_TO_ID[c] for c in dets["label"]]).view(-1, 1)
    with torch.no_grad():
        p = torch.softmax(tiny_mdf.model.classify_boxes(images, clinical, boxes), -1).gather(1, labels).view(-1)
        q = torch.softmax(tiny_mdf.model.classify_boxes(images, altered, boxes), -1).gather(1, labels).view(-1)
    np.testing.assert_allclose(dets["base_score"], p.double().numpy(), atol=1e-6)
    np.testing.assert_allclose(dets[f"{CHANGE_PREFIX}temperature"], (p - q).double().numpy(), atol=1e-6)
    assert (dets[f"{CHANGE_PREFIX}temperature"].abs() > 1e-6).any()  # random weights still read the input


def test_score_changes_checks_its_inputs(tiny_mdf):
    with pytest.raises(ValueError, match="2 images, 1 clinical rows and 2 box sets"):
        score_changes(tiny_mdf, [torch.zeros(1, 64, 64, dtype=torch.uint8)] * 2, pd.DataFrame([FEVER]),
                      [torch.zeros(0, 4)] * 2, torch.zeros(0, dtype=torch.int64))


@pytest.fixture(scope="module")
def tiny_pyfunc(tiny_mdf, tmp_path_factory):
    return save_pyfunc(tiny_mdf, tmp_path_factory.mktemp("explain") / "model")


def test_pyfunc_explain_param_adds_the_columns(tiny_mdf, tiny_pyfunc, monkeypatch):
    import mlflow

    from mdfnet.serving.predictor import DEVICE_ENV

    monkeypatch.setenv(DEVICE_ENV, "cpu")
    model = mlflow.pyfunc.load_model(str(tiny_pyfunc))
    frame = _frame(FEVER, EDEMA, sizes=((64, 64),))
    plain = model.predict(frame)
    explained = model.predict(frame, params={"explain": True, "score_threshold": 0.0})
    assert list(plain.columns) == ["study", "label", "score", "xmin", "ymin", "xmax", "ymax"]
    assert list(explained.columns) == [*plain.columns, *EXPLAIN_COLUMNS]
    pd.testing.assert_frame_equal(explained[plain.columns], plain)

    # the same detections explained in-process agree; random weights give near-tied candidates, so the served
    # path (its own thread count) may keep a slightly different top 5: compare the detections both kept
    key = ["study", "label", "xmin", "ymin", "xmax", "ymax"]
    both = pd.merge(explained.round({c: 3 for c in key[2:]}), explain_predict(tiny_mdf, frame).round(
        {c: 3 for c in key[2:]}), on=key, suffixes=("", "_direct"))
    assert len(both) >= len(explained) // 2
    for c in ("score", "base_score", *(f"{CHANGE_PREFIX}{f}" for f in schema.NUMERIC_FEATURES)):
        np.testing.assert_allclose(both[c], both[f"{c}_direct"], atol=1e-4, err_msg=c)


def test_cli_explain_prints_reasons_and_json(tiny_pyfunc, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mdfnet.cli import app
    from mdfnet.serving.predictor import DEVICE_ENV

    monkeypatch.setenv(DEVICE_ENV, "cpu")
    image, clinical = tmp_path / "study.png", tmp_path / "clinical.json"
    image.write_bytes(_png(64, 64))
    clinical.write_text(json.dumps(FEVER))
    res = CliRunner().invoke(app, ["predict", "--model", tiny_pyfunc.as_uri(), "--image", str(image), "--clinical",
                                   str(clinical), "--explain", "--out", str(tmp_path / "drawn.png")])
    assert res.exit_code == 0, res.output
    records = json.loads(res.stdout)
    assert len(records) == 5 and {"reasons", "top_reason", f"{CHANGE_PREFIX}temperature"} <= set(records[0])
    lines = [ln for ln in res.stderr.splitlines() if " — " in ln]
    assert len(lines) == 5
    assert lines[0].startswith(f"{records[0]['label']} {records[0]['score']:.2f} — ")
    assert (tmp_path / "drawn.png").stat().st_size > 0
