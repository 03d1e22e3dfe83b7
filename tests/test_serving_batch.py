"""Batch scoring (:mod:`mdfnet.serving.batch`, ``mdfnet predict --batch / --from-split``): every good row scored
exactly as a single request would be, every bad row (missing, unreadable or undecodable image, a path outside
``--images``, an implausible value) itemised in ``exclusions.csv`` without stopping the batch; Parquet and COCO
outputs; the split helper's rows line up with ``export-coco``'s image ids."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from stand_in_detector import rule_predictor, save_pyfunc, tiny_mdf_predictor

from mdfnet.data import schema
from mdfnet.serving.batch import (
    EXCLUSION_COLUMNS,
    BatchError,
    read_studies,
    score_batch,
    studies_from_split,
    to_coco_results,
    write_batch,
)
from mdfnet.serving.explain import EXPLAIN_COLUMNS, explain_predict
from mdfnet.serving.inputs import RequestError, encode_image, request_frame

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROW = {"age": 71, "gender": "M", "temperature": 101.8, "heartrate": 96, "resprate": 20, "o2sat": 95, "sbp": 128,
       "dbp": 79, "pain": "8-10", "acuity": 2}


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((height, width), 120, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _scorer(predictor):
    def score(frame, threshold, explain=False):
        if explain:
            return explain_predict(predictor, frame, score_threshold=threshold)
        return predictor.predict(frame, score_threshold=threshold)

    return score


@pytest.fixture()
def batch_dir(tmp_path):
    """``images/`` with three readable PNGs and a truncated one; ``studies.csv`` with 9 rows, 5 of them bad."""
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    (images / "a.png").write_bytes(_png(64, 48))
    (images / "sub" / "b.png").write_bytes(_png(40, 80))
    (images / "c.png").write_bytes(_png(32, 32))
    (images / "broken.png").write_bytes(_png(32, 32)[:40])
    (tmp_path / "outside.png").write_bytes(_png(32, 32))
    rows = [
        {"study": 50000101, "image": "a.png", **ROW},                                   # 0 ints
        {"study": 50000102, "image": "sub/b.png", **ROW, "temperature": "38.4"},        # 1 °C as text
        {"study": 50000103, "image": "missing.png", **ROW},                             # 2 no such file
        {"study": 50000104, "image": "c.png", **ROW, "heartrate": 900},                 # 3 implausible
        {"study": 50000105, "image": "broken.png", **ROW},                              # 4 undecodable
        {"study": None, "image": "c.png", **ROW, "o2sat": None, "pain": "UA"},           # 5 gaps, no study id
        {"study": 50000107, "image": "../outside.png", **ROW},                          # 6 outside --images
        {"study": 50000108, "image": None, **ROW},                                      # 7 no file name
        {"study": 50000101, "image": "a.png", **ROW, "resprate": 30, "extra": "x"},     # 8 study id repeated
    ]
    pd.DataFrame(rows).astype({"study": "Int64"}).to_csv(tmp_path / "studies.csv", index=False)
    return tmp_path


def test_good_rows_are_scored_as_single_requests_and_bad_rows_itemised(batch_dir):
    predictor = rule_predictor()
    studies = read_studies(batch_dir / "studies.csv")
    assert studies["age"].dtype == np.int64 and studies["study"].iloc[0] == "50000101"
    result = score_batch(_scorer(predictor), studies, batch_dir / "images", chunk_size=3, progress=False)
    excl = result.exclusions
    assert list(excl.columns) == list(EXCLUSION_COLUMNS)
    assert excl["row"].tolist() == [2, 3, 4, 6, 7]
    assert excl["field"].tolist() == ["image", "heartrate", "image", "image", "image"]
    assert excl["study"].tolist() == ["50000103", "50000104", "50000105", "50000107", "50000108"]
    assert excl["value"].tolist() == ["missing.png", "900", "broken.png", "../outside.png", ""]
    reasons = excl["reason"].tolist()
    assert reasons[0] == f"no such file under {batch_dir / 'images'}"
    assert reasons[1] == "heartrate=900.0 is outside the plausible range 20-300"
    assert "cannot decode image" in reasons[2]
    assert reasons[3].startswith("the file name leads outside") and reasons[4] == "no image file name"
    assert result.n_studies == 9 and result.n_scored == 4 and result.studies_per_s > 0
    dets = result.detections
    assert dets["row"].tolist() == [0, 0, 1, 1, 5, 5, 8, 8]
    assert dets["study"].tolist() == ["50000101"] * 2 + ["50000102"] * 2 + ["5"] * 2 + ["50000101"] * 2
    assert dets["image"].tolist()[::2] == ["a.png", "sub/b.png", "c.png", "a.png"]
    # the same rows sent as one request give the same detections
    records = [{"study": s, "image": encode_image((batch_dir / "images" / im).read_bytes()),
                **{f: studies.at[r, f] for f in schema.ALL_FEATURES}}
               for r, s, im in ((0, "a", "a.png"), (1, "b", "sub/b.png"), (5, "c", "c.png"), (8, "d", "a.png"))]
    single = predictor.predict(pd.DataFrame(records))
    np.testing.assert_allclose(dets[["score", "xmin", "ymin", "xmax", "ymax"]].to_numpy(),
                               single[["score", "xmin", "ymin", "xmax", "ymax"]].to_numpy(), atol=1e-9)
    assert dets["label"].tolist() == single["label"].tolist()


def test_parquet_coco_and_exclusions_files(batch_dir):
    studies = read_studies(batch_dir / "studies.csv")
    result = score_batch(_scorer(rule_predictor()), studies, batch_dir / "images", explain=True, progress=False)
    files = write_batch(result, batch_dir / "out" / "predictions.parquet")
    assert files == [batch_dir / "out" / "predictions.parquet", batch_dir / "out" / "exclusions.csv"]
    back = pd.read_parquet(files[0])
    assert len(back) == 8 and set(EXPLAIN_COLUMNS) <= set(back.columns)
    cons = back[back["label"] == "Consolidation"].set_index("row")
    assert cons["top_reason"].to_dict() == {0: "temperature", 1: "temperature", 5: "temperature", 8: "resprate"}
    assert cons.at[8, "change_resprate"] < 0  # resprate 30 speaks for edema, against Consolidation
    assert pd.read_csv(files[1])["row"].tolist() == [2, 3, 4, 6, 7]
    coco_path = write_batch(result, batch_dir / "out" / "predictions.json")[0]
    coco = json.loads(coco_path.read_text())
    assert coco == to_coco_results(result.detections) and len(coco) == 8
    first, d = coco[0], result.detections.iloc[0]
    assert first["image_id"] == 1 and first["category_id"] == schema.CLASS_TO_ID[d["label"]]
    assert first["bbox"] == pytest.approx([d["xmin"], d["ymin"], d["xmax"] - d["xmin"], d["ymax"] - d["ymin"]])
    assert {c["image_id"] for c in coco} == {1, 2, 6, 9}


def test_batch_level_problems_are_named(batch_dir, tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame([{"image": "a.png", **{k: v for k, v in ROW.items() if k != "o2sat"}}]).to_csv(bad, index=False)
    with pytest.raises(BatchError, match=r"missing column\(s\) \['o2sat'\]"):
        read_studies(bad)
    with pytest.raises(BatchError, match="cannot read studies"):
        read_studies(tmp_path / "absent.csv")
    studies = read_studies(batch_dir / "studies.csv")
    with pytest.raises(BatchError, match="not a folder"):
        score_batch(_scorer(rule_predictor()), studies, tmp_path / "nope", progress=False)

    def refuse(frame, threshold, explain=False):
        raise RequestError("the model is not ready")

    with pytest.raises(BatchError, match="the model refused the batch: the model is not ready"):
        score_batch(refuse, studies, batch_dir / "images", progress=False)


def test_split_helper_rows_are_export_coco_image_ids(tiny_preprocessed, tiny_joined):
    from mdfnet.data import MDFDataset
    from mdfnet.data.join import image_root

    table, root = studies_from_split(tiny_preprocessed, "test")
    ds = MDFDataset(tiny_preprocessed, "test", with_masks=False)
    assert table["study"].tolist() == ds.instances["reflacx_id"].astype(str).tolist()
    assert root == image_root(tiny_joined)
    assert all((root / p).is_file() for p in table["image"])
    inst = pd.read_parquet(tiny_preprocessed / "instances.parquet").set_index("reflacx_id")
    for r in table.itertuples():
        assert str(r.pain) == str(inst.at[r.study, "raw_pain"]) and r.age == inst.at[r.study, "raw_age"]
    request_frame([{"image": "", **{f: (None if pd.isna(v) else v) for f, v in r.items() if f in schema.ALL_FEATURES}}
                   for r in table.to_dict("records")])
    with pytest.raises(BatchError, match="split 'dev'"):
        studies_from_split(tiny_preprocessed, "dev")


@pytest.fixture(scope="module")
def tiny_pyfunc(tmp_path_factory):
    return save_pyfunc(tiny_mdf_predictor(), tmp_path_factory.mktemp("batch") / "model")


def test_cli_from_split_then_batch_through_the_pyfunc(tiny_pyfunc, tiny_preprocessed, tmp_path, monkeypatch):
    """``--from-split`` writes studies.csv and scores it; ``--batch`` on that file gives the same predictions
    (an MLflow pyfunc model, with --explain)."""
    from typer.testing import CliRunner

    from mdfnet.cli import app
    from mdfnet.serving.predictor import DEVICE_ENV

    monkeypatch.setenv(DEVICE_ENV, "cpu")
    model = tiny_pyfunc.as_uri()
    res = CliRunner().invoke(app, ["predict", "--model", model, "--from-split", str(tiny_preprocessed),
                                   "--out", str(tmp_path / "a" / "predictions.parquet"), "--chunk-size", "3"])
    assert res.exit_code == 0, res.output
    assert "studies of split 'test'" in res.stdout and "studies/s" in res.stdout
    studies = pd.read_csv(tmp_path / "a" / "studies.csv")
    first = pd.read_parquet(tmp_path / "a" / "predictions.parquet")
    assert len(first) == 5 * len(studies) and sorted(set(first["row"])) == list(range(len(studies)))
    _, root = studies_from_split(tiny_preprocessed, "test")
    res = CliRunner().invoke(app, ["predict", "--model", model, "--batch", str(tmp_path / "a" / "studies.csv"),
                                   "--images", str(root), "--out", str(tmp_path / "b" / "p.parquet"), "--explain"])
    assert res.exit_code == 0, res.output
    assert "top reason per detected class" in res.stdout
    second = pd.read_parquet(tmp_path / "b" / "p.parquet")
    pd.testing.assert_frame_equal(second[first.columns], first, atol=1e-6)
    assert set(EXPLAIN_COLUMNS) <= set(second.columns)


@pytest.mark.parametrize(("args", "message"), [
    ([], "give exactly one of --image, --batch or --from-split (got none)"),
    (["--batch", "s.csv", "--from-split", "pre"], "(got --batch, --from-split)"),
    (["--batch", "s.csv", "--out", "p.parquet"], "--batch needs --images"),
    (["--batch", "s.csv", "--images", "."], "batch scoring needs --out"),
    (["--image", "x.png"], "--image needs --clinical"),
])
def test_cli_modes_are_checked(args, message):
    from typer.testing import CliRunner

    from mdfnet.cli import app

    res = CliRunner().invoke(app, ["predict", "--model", "m.pt", *args])
    assert res.exit_code == 2 and message in res.output
