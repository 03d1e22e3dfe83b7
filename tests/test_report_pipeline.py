"""The report as the pipeline writes it, at tiny scale (64 px, 16 readings, 2 epochs): the steps run with the demo
grid's ``eval`` settings (train AP per epoch, clinical attribution in the evaluate step), and the compare step's
report on the pipeline run holds the champion's attribution table and figure, the train-vs-val figure and FROC; the
evaluate step logs FROC; ``mdfnet.demo.write_report`` copies that report to ``OUT/report``."""

from __future__ import annotations

import json

import pytest

from mdfnet import demo, tracking
from mdfnet.data import schema
from mdfnet.evaluation import froc
from mdfnet.pipeline import steps

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASE = ["model.backbone=mobilenet_v3_small", "model.backbone_stride=8", "model.use_mask=false",
        "model.anchor_sizes=[8,16,32,64]", "model.box_batch_size_per_image=32", "train.batch_size=4",
        "train.epochs=2", "train.num_workers=0", "train.device=cpu", "train.progress=false", "train.lr=0.01",
        "eval.train_ap_images=4", "eval.attribution_repeats=1"]
GRID = {"tiny-report": {"name": "tiny-report", "base": BASE, "cells": [  # both with clinical input: either is champion
    {"name": "mdf", "set": ["model.variant=mdf"]},
    {"name": "mdf-shuffled", "set": ["model.variant=mdf", "data.shuffle_clinical=true"]}]}}


@pytest.fixture(scope="module")
def pipeline(tiny_preprocessed, tmp_path_factory):
    """expand_grid → train → evaluate (both cells) → compare, in a private sqlite store (experiment
    :data:`mdfnet.demo.EXPERIMENT`, as ``make demo``)."""
    tmp = tmp_path_factory.mktemp("report-pipeline")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(tracking.ENV_TRACKING_URI, uri)
        for key in (tracking.ENV_RUN_ID, tracking.ENV_EXPERIMENT_ID):
            mp.delenv(key, raising=False)
        client = tracking.configure()
        items = steps.expand_grid_step(GRID, "tiny-report", [0], [], tiny_preprocessed, demo.EXPERIMENT, "pipe")
        results = []
        for k, item in enumerate(items):
            steps.train_step(item, tiny_preprocessed, tmp / f"model{k}")
            results.append(steps.evaluate_step(tmp / f"model{k}", tiny_preprocessed, tmp / f"eval{k}", client=client))
        compared = steps.compare_step(results, client=client)
        yield {"client": client, "uri": uri, "tmp": tmp, "results": results, "compared": compared,
               "parent": items[0]["parent_run_id"]}


def test_the_pipelines_report_holds_attribution_and_the_train_vs_val_figure(pipeline):
    client, parent = pipeline["client"], pipeline["parent"]
    files = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/report.md", "report/report.html", "report/attribution.png", "report/generalisation.png",
            "report/froc.png"} <= files
    md = (pipeline["tmp"] / "dl" / "report" / "report.md")
    client.download_artifacts(parent, "report", str(md.parents[1].mkdir() or md.parents[1]))
    text = md.read_text()
    champion = pipeline["compared"]["best"]["run_id"]
    att = json.loads((pipeline["tmp"] / f"eval{[r['run_id'] for r in pipeline['results']].index(champion)}"
                      / "attribution.json").read_text())  # the champion's own evaluate step computed it
    part = text.split("## Clinical attribution\n", 1)[1]
    assert f"with every clinical input at the train medians {100 * att['ap_train_medians']:.2f} %" in part
    assert "| feature | AP drop (% points) |" in part and "![clinical attribution](attribution.png)" in part
    rows = [line.split("|")[1].strip() for line in part.splitlines() if line.startswith("| ")][1:]
    assert sorted(rows) == sorted(schema.ALL_FEATURES)  # one row per clinical feature of the champion
    gen = text.split("## Generalisation\n", 1)[1].split("\n## ", 1)[0]
    assert gen.strip() == "![train vs validation AP](generalisation.png)"
    train_ap = client.get_metric_history(champion, "train/ap")
    assert len(train_ap) == 2  # one point per epoch (the figure's dashed line)
    assert "## FROC (test split)" in text and "Δ test AP vs" in text
    html = pipeline["compared"]["html"]
    assert html.count("data:image/png;base64,") >= 4 and "Clinical attribution" in html


def test_evaluate_logs_froc_and_compare_reports_the_paired_delta(pipeline):
    client = pipeline["client"]
    for k, res in enumerate(pipeline["results"]):
        ev = pipeline["tmp"] / f"eval{k}"
        gt, dets = (json.loads((ev / f"{n}_test.json").read_text()) for n in ("gt", "predictions"))
        expected = froc(gt, dets).metrics("final/test")
        logged = client.get_run(res["run_id"]).data.metrics
        assert expected and {m: logged[m] for m in expected} == pytest.approx(expected)
        assert json.loads((ev / "metrics.json").read_text())["test"]["froc"]["fp_rates"] == [0.125, 0.25, 0.5, 1, 2,
                                                                                               4, 8]
    ranking = pipeline["compared"]["ranking"]
    ref = ranking[0]["cell"]  # no baseline in this grid: the top cell is the reference
    assert ranking[0]["test_ap_vs_reference"] == "reference" and ranking[1]["reference"] == ref
    d = ranking[1]["delta_test_ap"]
    assert d["pairs"] == 1 and d["interval"][0] <= d["delta"] <= d["interval"][1]
    assert f"Δ test AP vs {ref} [95 % CI] (points)" in pipeline["compared"]["markdown"]


def test_demo_copies_the_pipeline_runs_report(pipeline):
    out = pipeline["tmp"] / "demo-out"
    out.mkdir()
    (out / demo.REPORT_DIR).mkdir()
    (out / demo.REPORT_DIR / "stale.png").write_bytes(b"old")  # a previous demo's report is replaced
    page = demo.write_report(out, pipeline["uri"])
    assert page == out / "report" / "report.html" and "Clinical attribution" in page.read_text()
    assert {p.name for p in page.parent.iterdir()} >= {"report.md", "attribution.png", "generalisation.png",
                                                      "froc.png"}
    assert not (page.parent / "stale.png").exists()
