"""What a reviewer finds in MLflow (issue 21, item 4), read back with ``MlflowClient`` from a real local MLflow store
(sqlite, one per module): each cell run's train/val/test splits as dataset inputs with their digests and source, the
source/git tags, the synthetic marker carried from the generator to the run, and the registered version's model
card (description, tags, ``model_card.md``), on 40 synthetic studies at 64 px, MDF-Net and its shuffled-triage
control. Nothing is trained here (``train_step`` logs the datasets with the same call, on a real server through an
outage of its artefact store: ``test_integration_mlflow.py``)."""

from __future__ import annotations

import json
import math

import pytest
from servers import private_mlflow_store

from mdfnet import model_card, tracking, tracking_datasets
from mdfnet import tracking_names as names
from mdfnet.data import schema
from mdfnet.pipeline import steps
from mdfnet.provenance import git_sha

TINY = ["model.backbone=mobilenet_v3_small", "model.backbone_stride=8", "model.use_mask=false",
        "model.anchor_sizes=[8,16,32,64]", "model.box_batch_size_per_image=32", "train.batch_size=4",
        "train.epochs=1", "train.num_workers=0", "train.device=cpu", "train.progress=false",
        "eval.train_ap_images=0", "eval.attribution_repeats=0"]
GRID = {"card": {"name": "card", "base": TINY, "cells": [
    {"name": "mdf", "set": ["model.variant=mdf"]},
    {"name": "mdf-shuffled", "set": ["model.variant=mdf", "data.shuffle_clinical=true"]}]}}
MODEL = "mdfnet-card"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """A private sqlite MLflow store; environment restored afterwards."""
    with private_mlflow_store(tmp_path_factory.mktemp("mlflow")):
        yield tracking.configure()


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    """40 synthetic studies → join → preprocess (64 px): (sources, preprocessed folder, preprocess summary)."""
    from mdfnet.data.synthetic import generate

    root = tmp_path_factory.mktemp("card_data")
    generate(root / "src", n_studies=40, seed=0, image_size=48)
    steps.join_step(str(root / "src"), root / "joined")
    pre = steps.preprocess_step(root / "joined", root / "pre", ["image_size=64", "workers=1"])
    return root / "src", root / "pre", pre


def coco_test_split(data) -> tuple[dict, list]:
    """The evaluate step's COCO files for the test split of preprocessed folder ``data``: the ground truth boxes, and
    a detector that finds every box, with one false positive (the highest score) on the first image."""
    import pandas as pd

    inst = pd.read_parquet(data / "instances.parquet")
    boxes = pd.read_parquet(data / "boxes.parquet")
    test = inst[inst["split"] == "test"]["reflacx_id"].tolist()
    gt = {"images": [{"id": i + 1, "file_name": r, "width": 64, "height": 64} for i, r in enumerate(test)],
          "categories": [{"id": k + 1, "name": c} for k, c in enumerate(schema.CLASSES)], "annotations": []}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [1.0, 1.0, 6.0, 6.0], "score": 0.95}]
    for i, r in enumerate(test):
        for b in boxes[boxes["reflacx_id"] == r].itertuples():
            box = [b.xmin, b.ymin, b.xmax - b.xmin, b.ymax - b.ymin]
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1,
                                      "category_id": int(b.label_id), "bbox": box, "area": box[2] * box[3],
                                      "iscrowd": 0})
            dets.append({"image_id": i + 1, "category_id": int(b.label_id), "bbox": box, "score": 0.9})
    return gt, dets


@pytest.fixture(scope="module")
def chain(client, synthetic_data):
    """The runs as the steps leave them, without training: ``expand_grid_step`` (both cells) opens the pipeline
    run; each cell run gets what ``train_step`` logs before training (params, ``log_data_and_source``) and what
    ``evaluate_step`` logs after (final metrics; for MDF-Net its test split's COCO files), and MDF-Net a (stand-in)
    model; then ``register_step`` registers it and writes its card."""
    from stand_in_model import log_stand_in_model

    from mdfnet.evaluation import evaluate
    from mdfnet.metrics_log import flatten_params

    _, data, _ = synthetic_data
    commit = git_sha()  # when the runs are tagged (other commits may land while the tests run)
    items = dict(zip(("mdf", "mdf-shuffled"), steps.expand_grid_step(GRID, "card", [0], [], data, "exp-card",
                                                                      "pipe-card"), strict=True))
    gt, dets = coco_test_split(data)
    weaker = dets[:1]  # the control finds no box: only the false positive
    coco = {"mdf": dets, "mdf-shuffled": weaker}
    metrics = {"mdf": {"final/val/ap": 0.5, "final/test/ap": evaluate(gt, dets).ap, "final/test/lookalike_bacc": 0.75,
                       "final/test/lookalike_missed": 1.0},
               "mdf-shuffled": {"final/val/ap": 0.25, "final/test/ap": evaluate(gt, weaker).ap,
                                "final/test/lookalike_bacc": 0.5}}
    runs = {}
    for cell, item in items.items():
        run_id = tracking.open_cell_run(client, item["parent_run_id"], item["run_name"], {names.TAG_CELL: cell})
        logger = tracking.MlflowLogger(run_id, client)
        logger.log_params({names.PARAM_CELL: cell, **item["labels"], **flatten_params(item["config"])})
        tracking_datasets.log_data_and_source(logger, data, "train_step")
        logger.log_metrics(metrics[cell], step=1)
        logger.close()
        client.log_dict(run_id, gt, "evaluation/gt_test.json")
        client.log_dict(run_id, coco[cell], "evaluation/predictions_test.json")
        runs[cell] = {"run_id": run_id, "metrics": metrics[cell]}
    best = {**runs["mdf"], "model_uri": log_stand_in_model(client, runs["mdf"]["run_id"]),
            "parent_run_id": items["mdf"]["parent_run_id"]}
    decision = steps.register_step(best, MODEL, card_bootstrap=50)
    return {"items": list(items.values()), "results": runs, "decision": decision, "coco": (gt, coco),
            "commit": commit}


def test_the_synthetic_marker_travels_from_the_generator_to_the_preprocessed_folder(synthetic_data, tiny_joined):
    from mdfnet.data import schema
    from mdfnet.data.join import join_meta

    src, pre, _ = synthetic_data
    marker = json.loads((src / schema.SYNTHETIC_MARKER).read_text())
    assert marker == {"generator": "mdfnet.data.synthetic", "seed": 0, "studies": 40, "image_size": 48,
                      "layout": "physionet", "tables_only": False}
    assert join_meta(pre)["synthetic"] == marker and join_meta(pre)["source_uri"] == src.resolve().as_uri()
    origin = tracking_datasets.DataOrigin.of(pre)
    assert (origin.kind, origin.tags()[names.TAG_SYNTHETIC]) == ("synthetic", "true")
    # sources without the marker (hand-built tables, as real downloads) are not called synthetic
    assert join_meta(tiny_joined)["synthetic"] is None
    assert tracking_datasets.DataOrigin.of(tiny_joined).tags()[names.TAG_SYNTHETIC] == "false"


def test_each_cell_run_logs_its_splits_as_datasets_and_its_source(client, chain, synthetic_data):
    src, data, pre = synthetic_data
    for cell in ("mdf", "mdf-shuffled"):
        run = client.get_run(chain["results"][cell]["run_id"])
        inputs = {{t.key: t.value for t in d.tags}[names.INPUT_CONTEXT]: d.dataset for d in run.inputs.dataset_inputs}
        assert sorted(inputs) == ["test", "training", "validation"]
        for split, context in names.DATASET_CONTEXTS.items():
            ds = inputs[context]
            profile = json.loads(ds.profile)
            assert ds.name == f"synthetic-{split}" and ds.source_type == "local"
            assert json.loads(ds.source)["uri"] == src.resolve().as_uri()
            assert profile["num_rows"] == pre["splits"][split] > 0
            assert profile["sha256"] == tracking_datasets.split_sha256(data, split)
            assert ds.digest == profile["sha256"][:16] and profile["synthetic"]["seed"] == 0
        assert len({d.digest for d in inputs.values()}) == 3  # the splits differ, so do their digests
        tags = run.data.tags
        assert tags[names.TAG_SOURCE_NAME] == "mdfnet.pipeline.steps.train_step"
        assert tags[names.TAG_SOURCE_TYPE] == "JOB" and tags[names.TAG_SYNTHETIC] == "true"
        assert tags.get(names.TAG_GIT_COMMIT) in ({chain["commit"], git_sha()} - {"unknown"} or {None})
    parent = client.get_run(chain["items"][0]["parent_run_id"]).data.tags
    assert parent[names.TAG_SOURCE_NAME] == "mdfnet.pipeline.steps.expand_grid_step"


def test_a_changed_table_changes_the_digest_of_its_split_only(synthetic_data, tmp_path):
    import shutil

    import pandas as pd

    _, data, _ = synthetic_data
    copy = tmp_path / "pre"
    shutil.copytree(data, copy)
    inst = pd.read_parquet(copy / "instances.parquet")
    inst.loc[inst.index[inst["split"] == "test"][0], "temperature"] += 0.5
    inst.to_parquet(copy / "instances.parquet", index=False)
    before = {s: tracking_datasets.split_sha256(data, s) for s in tracking_datasets.SPLITS}
    after = {s: tracking_datasets.split_sha256(copy, s) for s in tracking_datasets.SPLITS}
    assert [s for s in before if before[s] != after[s]] == ["test"]


def test_the_registered_version_carries_its_model_card(client, chain):
    mdf, ctrl = chain["results"]["mdf"], chain["results"]["mdf-shuffled"]
    mv = client.get_model_version(MODEL, chain["decision"]["version"])
    card = mv.description
    assert card.startswith(f"# {MODEL} v1: mdf\n") and len(card) <= model_card.MAX_DESCRIPTION
    assert card.count("**Trained on synthetic data**") == 2  # at the top and among the limitations
    assert "seed 0, studies 40, image_size 48, layout physionet" in card
    for section in ("## Intended use", "## Data", "## Metrics", "## Its pipeline run", "## Limitations",
                    "## Champion decision"):
        assert section in card, section
    assert "**Not a medical device**" in card and chain["decision"]["reason"] in card
    from mdfnet.evaluation import Scored, bootstrap, paired_bootstrap

    gt, coco = chain["coco"]
    ap, c_ap = mdf["metrics"]["final/test/ap"], ctrl["metrics"]["final/test/ap"]
    d = paired_bootstrap([(Scored(gt, coco["mdf"]), Scored(gt, coco["mdf-shuffled"]))], n=50, seed=0)
    assert d.interval[0] > 0  # the control finds nothing: the paired interval excludes 0
    delta = f"{100 * d.delta:+.1f} [{100 * d.interval[0]:+.1f}, {100 * d.interval[1]:+.1f}]"
    assert (f"test AP {100 * c_ap:.1f} % (mean of 1 seed); this model {100 * ap:.1f} %, paired Δ test AP of its "
            f"cell {delta} points on the same test images: higher") in card
    assert f"| mdf-shuffled | control: shuffled triage | 1 | 25.0 % | {100 * c_ap:.1f} % | {delta} | 50.0 % |" in card
    lo, hi = bootstrap(gt, coco["mdf"], n=50, seed=0, overlap="iobb", thresholds=(0.5,)).ap  # the run's own files
    assert f"| test AP | {100 * ap:.1f} % | [{100 * lo:.1f}, {100 * hi:.1f}] |" in card and "50 resamples" in card
    assert "| look-alike bAcc (Consolidation vs Pulmonary edema), test | 75.0 % (1 missed) | — |" in card
    run = client.get_run(mdf["run_id"])
    train = next(d.dataset for d in run.inputs.dataset_inputs if d.dataset.name == "synthetic-train")
    assert f"| train | `synthetic-train` | `{train.digest}` | {json.loads(train.profile)['num_rows']} |" in card
    tags = mv.tags
    assert tags[names.TAG_SYNTHETIC] == "true" and tags[names.TAG_CELL] == "mdf"
    assert tags[names.TAG_CONTROL_TEST_AP] == f"{c_ap:.4f}"
    value, lo, hi = tags[names.TAG_TEST_AP].replace("[", "").replace("]", "").replace(",", "").split()
    assert float(value) == pytest.approx(ap, abs=5e-5) and 0 <= float(lo) <= float(hi) <= 1
    assert tags[f"{names.TAG_DATASET_PREFIX}train"].startswith(f"synthetic-train {train.digest} (")
    assert tags[names.TAG_CHAMPION_DECISION] == "promoted"
    assert client.download_artifacts(mdf["run_id"], model_card.CARD_ARTIFACT) and \
        open(client.download_artifacts(mdf["run_id"], model_card.CARD_ARTIFACT)).read() == card


def _facts(**kw) -> model_card.CardFacts:
    base = dict(model_name="m", version="3", run_id="r" * 32, run_name="mdf-s0", cell="mdf",
                labels={"variant": "mdf"}, synthetic=False, data_source="s3://bucket/mimic-eye", git_commit="a" * 40,
                datasets=[model_card.DatasetFact("test", "reflacx-test", "0123456789abcdef", "s3://bucket/mimic-eye",
                                                 {"num_rows": 101})],
                metrics={"final/test/ap": 0.31, "final/val/ap": 0.4}, intervals={"test/ap": (0.25, 0.38)}, n_boot=200)
    return model_card.CardFacts(**{**base, **kw})


def test_the_card_says_synthetic_only_when_it_was_and_what_it_could_not_check():
    real = model_card.render(_facts())
    assert "Trained on synthetic data" not in real and "origin: not synthetic (no generator marker)" in real
    assert "No shuffled-triage control ran beside it" in real
    assert "101 test readings: the 95 % interval of test AP is 13.0 points wide" in real
    assert "| test AP | 31.0 % | [25.0, 38.0] |" in real and "| val AR | — | — |" in real
    unknown = model_card.render(_facts(synthetic=None))
    assert "origin: not recorded" in unknown and "not recorded on the run" in unknown
    ctrl = model_card.CellFact("mdf-shuffled", {"variant": "mdf"}, 3, {"test/ap": 0.2}, control=True, this=True)
    assert "This model **is** the shuffled-triage control" in model_card.render(_facts(cells=[ctrl]))
    tags = model_card.card_tags(_facts(cells=[ctrl]))
    assert names.TAG_CONTROL_TEST_AP not in tags and tags[names.TAG_SYNTHETIC] == "false"
    assert tags[names.TAG_TEST_AP] == "0.3100 [0.2500, 0.3800]"
    assert tags[f"{names.TAG_DATASET_PREFIX}test"] == "reflacx-test 0123456789abcdef (101 readings)"
    assert not math.isnan(float(tags[names.TAG_TEST_AP].split()[0]))


def test_a_big_grid_keeps_the_card_short_and_a_long_card_points_to_the_whole_one():
    def cell(name: str, ap: float, **kw) -> model_card.CellFact:
        return model_card.CellFact(name, {"variant": kw.pop("variant", "mdf")}, 3, {"val/ap": ap, "test/ap": ap},
                                   control=kw.get("control", False), this=kw.get("this", False))

    cells = [cell(f"fs-{k:02d}", 0.9 - k / 100) for k in range(18)]
    cells += [cell("mdf", 0.5, this=True), cell("shuffled", 0.3, control=True), cell("base", 0.2, variant="baseline")]
    card = model_card.render(_facts(cells=cells))
    rows = [line.split(" | ")[0].lstrip("| ") for line in card.splitlines() if line.startswith("| fs-")
            or line.startswith(("| mdf ", "| shuffled", "| base "))]
    assert rows == ["fs-00", "fs-01", "fs-02", "fs-03", "fs-04", "mdf", "shuffled", "base"]  # ranked, 8 at most
    assert "13 more cells: the pipeline run's comparison table." in card
    assert "Control (`shuffled`, each study trained with another study's triage values): test AP 30.0 %" in card
    long = model_card.description("x" * 6000, "run1")
    assert len(long) == model_card.MAX_DESCRIPTION and long.endswith("`model_card.md` on run `run1`)\n")
    assert model_card.description("short", "run1") == "short"


def test_datasets_and_source_tags_wait_for_a_tracking_server_that_is_away(client, tiny_preprocessed, monkeypatch):
    """The train step logs them through MlflowLogger: while every call to the server fails they are kept, in
    order, and training goes on; the flush at the end of training sends them."""
    run_id = client.create_run(tracking.get_or_create_experiment(client, "exp-card-outage")).info.run_id
    logger = tracking.MlflowLogger(run_id, client)
    away = {"on": True}
    for method in ("log_inputs", "log_batch"):
        real = getattr(client, method)

        def failing(*a, _real=real, **kw):
            if away["on"]:
                raise ConnectionError("tracking server away")
            return _real(*a, **kw)

        monkeypatch.setattr(client, method, failing)
    tracking_datasets.log_data_and_source(logger, tiny_preprocessed, "train_step")
    assert len(logger._pending_inputs.items) == 3 and len(logger._pending_tags.items) >= 4
    assert client.get_run(run_id).inputs.dataset_inputs == []
    away["on"] = False
    logger.flush()
    run = client.get_run(run_id)
    assert sorted(d.dataset.name for d in run.inputs.dataset_inputs) == ["reflacx-test", "reflacx-train", "reflacx-val"]
    assert run.data.tags[names.TAG_SOURCE_NAME] == "mdfnet.pipeline.steps.train_step"
    assert run.data.tags[names.TAG_SYNTHETIC] == "false"
    tracking_datasets.log_data_and_source(logger, tiny_preprocessed, "train_step")  # a retried task: nothing added
    assert len(client.get_run(run_id).inputs.dataset_inputs) == 3
