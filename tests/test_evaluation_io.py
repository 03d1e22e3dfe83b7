"""mdfnet.evaluation's edges: converters between model outputs / datasets and COCO, malformed inputs named by
entry, PNG plots, and the ``evaluate`` / ``export-coco`` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_evaluation import make_dets, make_gt, random_case

from mdfnet.evaluation import (
    EvaluationError,
    bootstrap,
    coco_to_outputs,
    dataset_to_coco,
    evaluate,
    outputs_to_coco,
    save_plots,
    sweep,
)


# ---------------------------------------------------------------------------------------------- converters
def test_outputs_coco_round_trip():
    outputs = [
        {"boxes": torch.tensor([[1.5, 2.0, 10.25, 20.0], [0.0, 0.0, 3.0, 4.0]]), "labels": torch.tensor([2, 5]),
         "scores": torch.tensor([0.9, 0.25])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)},
        {"boxes": torch.tensor([[5.0, 6.0, 7.0, 9.0]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.5])},
    ]
    coco = outputs_to_coco(outputs, [3, 1, 2])
    assert coco[0] == {"image_id": 3, "category_id": 2, "bbox": [1.5, 2.0, 8.75, 18.0], "score": pytest.approx(0.9)}
    assert [r["image_id"] for r in coco] == [3, 3, 2]
    back = coco_to_outputs(json.loads(json.dumps(coco)), [3, 1, 2])
    for a, b in zip(outputs, back, strict=True):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])
        assert torch.equal(a["scores"], b["scores"])
    with pytest.raises(EvaluationError, match="detection #0: image_id 3 not among"):
        coco_to_outputs(coco, [1, 2])
    with pytest.raises(EvaluationError, match="output #0: missing key"):
        outputs_to_coco([{"boxes": torch.zeros((0, 4))}], [1])


def test_dataset_to_coco_on_preprocessed_splits(tiny_preprocessed):
    from mdfnet.data import MDFDataset, schema

    empty_images = 0
    for split in ("train", "val", "test"):
        ds = MDFDataset(tiny_preprocessed, split)
        gt = dataset_to_coco(ds)
        assert [im["id"] for im in gt["images"]] == list(range(1, len(ds) + 1))
        assert [im["file_name"] for im in gt["images"]] == ds.ids
        assert gt["categories"] == [{"id": k + 1, "name": n} for k, n in enumerate(schema.CLASSES)]
        anns = iter(gt["annotations"])
        for i in range(len(ds)):
            t = ds.target(i)
            empty_images += len(t["labels"]) == 0
            for box, label in zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True):
                a = next(anns)
                assert (a["image_id"], a["category_id"]) == (i + 1, label)
                np.testing.assert_allclose(a["bbox"], [box[0], box[1], box[2] - box[0], box[3] - box[1]])
        assert next(anns, None) is None
        # the targets themselves, as detections, are perfect
        outputs = [dict(ds.target(i), scores=torch.ones(len(ds.target(i)["labels"]))) for i in range(len(ds))]
        r = evaluate(gt, outputs_to_coco(outputs, list(range(1, len(ds) + 1))), overlap="iou")
        if gt["annotations"]:
            assert (r.ap, r.ar) == (pytest.approx(1.0, abs=1e-12), 1.0)
    assert empty_images > 0  # readings without boxes stay in as images without annotations


# ------------------------------------------------------------------------------------------ malformed input
def _base():
    gt = make_gt([1, 2], [(1, 1, [0, 0, 10, 10]), (2, 2, [1, 1, 5, 5])])
    return gt, make_dets([(1, 1, [0, 0, 10, 10], 0.9), (2, 2, [0, 0, 4, 4], 0.8), (2, 1, [0, 0, 4, 4], 0.7)])


def _del(entry, key):
    del entry[key]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda gt, d: gt.pop("annotations"), "ground truth: missing key 'annotations'"),
        (lambda gt, d: _del(gt["annotations"][1], "bbox"), "annotation #1 (id=2): missing key 'bbox'"),
        (lambda gt, d: _del(d[2], "score"), "detection #2: missing key 'score'"),
        (lambda gt, d: d[1].update(category_id=7), "detection #1: category_id 7 not in categories [1, 2]"),
        (lambda gt, d: gt["annotations"][0].update(category_id=9), "annotation #0 (id=1): category_id 9 not in"),
        (lambda gt, d: d[0].update(image_id=5), "detection #0: image_id 5 not in ground-truth images"),
        (lambda gt, d: gt["annotations"][1]["bbox"].__setitem__(2, -1.0), "annotation #1 (id=2): bbox width -1.0 is negative"),
        (lambda gt, d: d[2]["bbox"].__setitem__(3, -0.5), "detection #2: bbox height -0.5 is negative"),
        (lambda gt, d: d[1].update(bbox=[0, 0, 4]), "detection #1: bbox must be 4 numbers"),
        (lambda gt, d: d[0].update(score="high"), "detection #0: score must be a number"),
        (lambda gt, d: gt["images"].append({"id": 1}), "image #2: duplicate id 1"),
        (lambda gt, d: gt["annotations"][0].update(iscrowd=1), "annotation #0 (id=1): iscrowd=1 is not supported"),
        (lambda gt, d: gt["categories"][1].update(name="a"), "category #1 (id=2): duplicate name 'a'"),
        (lambda gt, d: d[1].update(image_id=1.0), "detection #1: image_id must be an integer, got 1.0"),
    ],
)
def test_malformed_inputs_name_the_offending_entry(mutate, message):
    gt, dets = _base()
    evaluate(gt, dets)  # the unmodified case is fine
    mutate(gt, dets)
    with pytest.raises(EvaluationError) as err:
        evaluate(gt, dets)
    assert message in str(err.value)


def test_wrong_container_types():
    gt, dets = _base()
    with pytest.raises(EvaluationError, match="must be a COCO object"):
        evaluate([gt], dets)
    with pytest.raises(EvaluationError, match="detections must be a list"):
        evaluate(gt, {"0": dets})
    with pytest.raises(EvaluationError, match="detection #1: expected an object"):
        evaluate(gt, [dets[0], 3])


# ------------------------------------------------------------------------------------------------- plots
def test_plots_write_png_files(tmp_path):
    gt, dets = random_case(6, n_images=10, n_dets=60)
    result = evaluate(gt, dets)
    paths = save_plots(result, tmp_path / "plots", sweep(gt, dets, thresholds=(0.0, 0.5, 1.0)))
    assert sorted(p.name for p in paths) == ["counts.png", "pr_curves.png", "sweep.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    no_gt = save_plots(evaluate(make_gt([1], [], cats=(1,)), []), tmp_path / "empty")  # nothing to draw: still PNGs
    assert all(p.stat().st_size > 0 for p in no_gt)


# --------------------------------------------------------------------------------------------------- CLI
def _write(tmp_path, gt, dets):
    g, d = tmp_path / "gt.json", tmp_path / "dets.json"
    g.write_text(json.dumps(gt))
    d.write_text(json.dumps(dets))
    return str(g), str(d)


def test_cli_evaluate_json_and_table(tmp_path):
    from typer.testing import CliRunner

    from mdfnet.cli import app

    gt, dets = random_case(7, n_images=10, n_dets=60)
    g, d = _write(tmp_path, gt, dets)
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", g, d, "--json", "--overlap", "iou", "--threshold", "0.3",
                              "--threshold", "0.5", "--max-dets", "5", "--score-threshold", "0.2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)  # stdout holds exactly one JSON object
    assert set(out) == {"ap", "ar", "per_class"}
    expected = evaluate(gt, dets, overlap="iou", thresholds=(0.3, 0.5), max_dets=5, score_threshold=0.2).to_dict()
    assert out["ap"] == pytest.approx(expected["ap"]) and out["ar"] == pytest.approx(expected["ar"])
    assert out["per_class"] == expected["per_class"]

    res = runner.invoke(app, ["evaluate", g, d, "--bootstrap", "20", "--sweep", str(tmp_path / "s.csv"),
                              "--plots", str(tmp_path / "plots")])
    assert res.exit_code == 0, res.output
    assert "IOBB @ 0.5" in res.stdout and "bootstrap intervals (20 resamples" in res.stdout
    assert all(name in res.stdout for name in "abc")
    assert (tmp_path / "s.csv").read_text().startswith("threshold,ap,ar,tp,fp,fn")
    assert (tmp_path / "plots" / "sweep.png").stat().st_size > 0

    res = runner.invoke(app, ["evaluate", g, d, "--json", "--bootstrap", "10", "--seed", "3"])
    assert json.loads(res.stdout)["bootstrap"] == bootstrap(gt, dets, n=10, seed=3).to_dict()


def test_cli_evaluate_errors(tmp_path):
    from typer.testing import CliRunner

    from mdfnet.cli import app

    gt, dets = _base()
    dets[1]["bbox"][2] = -3.0
    g, d = _write(tmp_path, gt, dets)
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", g, d, "--json"])
    assert res.exit_code == 2 and res.stdout == ""
    assert "detection #1: bbox width -3.0 is negative" in res.stderr
    (tmp_path / "bad.json").write_text("{not json")
    res = runner.invoke(app, ["evaluate", str(tmp_path / "bad.json"), d])
    assert res.exit_code == 2 and "is not valid JSON" in res.stderr
    res = runner.invoke(app, ["evaluate", g, g])  # a ground-truth file given as detections
    assert res.exit_code == 2 and "detections must be a list" in res.stderr
    res = runner.invoke(app, ["evaluate", *_write(tmp_path, *_base()), "--overlap", "giou"])
    assert res.exit_code == 2 and "unknown overlap 'giou'" in res.stderr


def test_cli_export_coco(tiny_preprocessed, tmp_path):
    from typer.testing import CliRunner

    from mdfnet.cli import app
    from mdfnet.data import MDFDataset

    out = tmp_path / "gt" / "test.json"
    res = CliRunner().invoke(app, ["export-coco", str(tiny_preprocessed), "--split", "test", str(out)])
    assert res.exit_code == 0, res.output
    written = json.loads(out.read_text())
    expected = dataset_to_coco(MDFDataset(tiny_preprocessed, "test"))
    assert {k: written[k] for k in ("images", "annotations", "categories")} == expected
    assert f"{len(expected['images'])} images" in res.stdout
    res = CliRunner().invoke(app, ["export-coco", str(tiny_preprocessed), "--split", "dev", str(out)])
    assert res.exit_code == 2 and "split must be one of" in res.stderr
