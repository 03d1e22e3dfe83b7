"""Pipeline step functions (``mdfnet.pipeline``) without KFP: grids, sources, both MLflow tracking modes, compare,
champion registration. One temporary sqlite MLflow store per module; tiny 64 px data from ``conftest``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from servers import private_mlflow_store, upload_tree
from stand_in_model import log_stand_in_model

from mdfnet import tracking
from mdfnet.cells import KEYS
from mdfnet.data import schema
from mdfnet.pipeline import grids as grids_mod
from mdfnet.pipeline import sources, steps

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.backbone=mobilenet_v3_small", "model.mask_head_channels=16", "train.batch_size=2", "train.epochs=1",
        "train.num_workers=0", "train.device=cpu", "train.progress=false", "train.lr=0.01"]
ONE_CELL = {"one": {"name": "one", "base": TINY, "cells": [{"name": "variant-mdf", "set": ["model.variant=mdf"]}]}}


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    """A private sqlite MLflow store and one torch thread (2 shared cores); environment restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with private_mlflow_store(tmp_path_factory.mktemp("mlflow")):
        yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def client(_env):
    return tracking.configure()


# ------------------------------------------------------------------------------------------ grids

def test_repository_grids_resolve_to_the_papers_ablations():
    grids = grids_mod.load_grids(ROOT / "pipelines" / "grids")
    assert {"paper-variants", "paper-fusion", "paper-backbones", "paper-features", "full", "tiny", "demo"} <= set(grids)
    counts = {g: len(grids_mod.grid_cells(grids, g)) for g in grids}
    assert counts["paper-variants"] == 4 and counts["paper-fusion"] == 4 and counts["paper-backbones"] == 5
    assert counts["paper-features"] == 10 and 2 <= counts["tiny"] <= 4
    assert counts["full"] == 4 + 4 + 5 + 10  # includes all (config-level duplicates are dropped by expand_grid)
    from mdfnet.training import config_from_sources

    feats = [tuple(config_from_sources(None, c["set"]).data.features) for c in grids_mod.grid_cells(grids, "paper-features")]
    assert len(set(map(frozenset, feats))) == 10 and all("gender" in f for f in feats if len(f) <= 3)


def test_demo_grid_is_baseline_mdf_and_the_shuffled_control():
    from mdfnet.training import config_from_sources

    cells = grids_mod.grid_cells(grids_mod.load_grids(ROOT / "pipelines" / "grids"), "demo")
    cfgs = {c["name"]: config_from_sources(None, [*c["base"], *c["set"]]) for c in cells}
    assert list(cfgs) == ["baseline", "mdf", "mdf-shuffled"]
    assert [(c.model.variant, c.data.shuffle_clinical) for c in cfgs.values()] == [
        ("baseline", False), ("mdf", False), ("mdf", True)]
    m = cfgs["mdf"].model
    assert (m.backbone_stride, m.box_batch_size_per_image, m.use_mask) == (8, 32, False)
    assert grids_mod.feature_set_name(list(cfgs["mdf-shuffled"].data.features), True) == "all-shuffled"
    assert grids_mod.feature_set_name([], True) == "none"


def test_names_come_from_the_catalog_and_tables_of_parts_must_match_it():
    from mdfnet.model import BACKBONES, FUSIONS, LOSS_WEIGHTINGS, catalog

    assert set(FUSIONS) == set(catalog.FUSION_NAMES) and set(BACKBONES) == set(catalog.BACKBONE_NAMES)
    assert set(LOSS_WEIGHTINGS) == set(catalog.LOSS_WEIGHTINGS)
    assert all(set(spec.cuts) == set(catalog.BACKBONE_STRIDES) for spec in BACKBONES.values())
    with pytest.raises(RuntimeError, match=r"fusion table \['max', 'sum'\] does not match mdfnet.model.catalog"):
        catalog.check_table("fusion", ["sum", "max"], catalog.FUSION_NAMES)
    # the grid step validates with the catalog alone: planning a grid imports no torch
    code = ("import sys; sys.modules['torch'] = None\n"
            "from mdfnet.pipeline.grids import load_grids, plan_grid\n"
            "cells = plan_grid(load_grids('pipelines/grids'), 'full')\n"
            "print(len(cells), sorted({c.labels['fusion'] for c in cells if c.config.model.variant == 'baseline'}))")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["20", "['none']"]  # 23 cells of text, 20 distinct resolved configs


def test_grid_cells_base_include_and_errors():
    grids = {"a": {"name": "a", "base": ["train.epochs=3"], "cells": [{"name": "x", "set": ["model.fusion=sum"]}]},
             "b": {"name": "b", "base": ["seed=1"], "include": ["a"],
                   "cells": [{"name": "y", "set": ["model.fusion=hadamard"]}, {"name": "x2", "set": ["model.fusion=sum"]}]},
             "loop": {"name": "loop", "include": ["loop"]},
             "clash": {"name": "clash", "cells": [{"name": "x", "set": ["a=1"]}, {"name": "x", "set": ["a=2"]}]}}
    cells = grids_mod.grid_cells(grids, "b")
    assert [(c["name"], c["base"], c["set"]) for c in cells] == [
        ("x", ["seed=1", "train.epochs=3"], ["model.fusion=sum"]),
        ("y", ["seed=1"], ["model.fusion=hadamard"]),
        ("x2", ["seed=1"], ["model.fusion=sum"]),
    ]
    with pytest.raises(steps.StepError, match="unknown grid 'nope'"):
        grids_mod.grid_cells(grids, "nope")
    with pytest.raises(steps.StepError, match="includes itself"):
        grids_mod.grid_cells(grids, "loop")
    with pytest.raises(steps.StepError, match="two different cells are named 'x'"):
        grids_mod.grid_cells(grids, "clash")


def test_plan_grid_device_beats_the_grid_base_and_a_runs_override_beats_the_device():
    grids = {"g": {"name": "g", "base": ["train.device=cpu", "train.epochs=2"], "cells": [
        {"name": "mdf", "set": ["model.variant=mdf"]}, {"name": "base", "set": ["model.variant=baseline"]}]}}
    assert {c.config.train.device for c in grids_mod.plan_grid(grids, "g")} == {"cpu"}  # no device: the grid's
    assert {c.config.train.device for c in grids_mod.plan_grid(grids, "g", device="cuda")} == {"cuda"}
    debug = grids_mod.plan_grid(grids, "g", ["train.device=cpu", "train.epochs=3"], device="cuda")
    assert {(c.config.train.device, c.config.train.epochs) for c in debug} == {("cpu", 3)}
    from mdfnet.config import ConfigError

    with pytest.raises(ConfigError, match="train.device: .*got 'gpu'"):
        grids_mod.plan_grid(grids, "g", device="gpu")
    cell_device = {"c": {"name": "c", "cells": [{"name": "x", "set": ["model.variant=mdf", " train.device = cpu"]}]}}
    with pytest.raises(steps.StepError, match="grid 'c': cell 'x' sets train.device"):
        grids_mod.grid_cells(cell_device, "c")


def test_expand_grid_items_dedup_and_validation(tiny_preprocessed, client):
    grids = {"g": {"name": "g", "base": TINY, "cells": [
        {"name": "mdf", "set": ["model.variant=mdf"]},
        {"name": "mdf-sum", "set": ["model.variant=mdf", "model.fusion=sum"]},  # same config as `mdf`: dropped
        {"name": "base", "feature_set": "none", "set": ["model.variant=baseline", "data.features=[]"]},
        # a baseline has no 3D fusion: asking for one gives the same resolved config, dropped too
        {"name": "base-concat", "set": ["model.variant=baseline", "data.features=[]", "model.fusion=concat_conv"]}]}}
    items = steps.expand_grid_step(grids, "g", [3, 1], ["train.lr=0.5"], tiny_preprocessed, "exp-grid", "run-a",
                              train_device="cuda")
    assert [(i["cell"], i["seed"], i["run_name"]) for i in items] == [
        ("mdf", 3, "mdf-s3"), ("mdf", 1, "mdf-s1"), ("base", 3, "base-s3"), ("base", 1, "base-s1")]
    assert items[2]["labels"] == {"variant": "baseline", "fusion": "none", "backbone": "mobilenet_v3_small",
                                  "feature_set": "none"}
    assert items[0]["labels"]["feature_set"] == "all"
    # the item carries the resolved config as data (base ← pipeline ← cell ← seed), read back without parsing
    item = grids_mod.GridItem.from_dict(json.loads(json.dumps(items[1])))
    cfg = item.train_config()
    assert (cfg.seed, cfg.train.lr, cfg.model.variant, cfg.train.batch_size) == (1, 0.5, "mdf", 2)
    assert grids_mod.GridItem.from_dict(item.to_dict()) == item and item.run_name == "mdf-s1"
    assert items[2]["config"]["model"]["fusion"] == "none" and items[2]["config"]["data"]["features"] == []
    assert {i["config"]["train"]["device"] for i in items} == {"cuda"}  # the pipeline's device beats TINY's cpu
    with pytest.raises(steps.StepError, match=r"missing key\(s\) \['config'\]"):
        grids_mod.GridItem.from_dict({k: v for k, v in items[0].items() if k != "config"})
    parent = client.get_run(items[0]["parent_run_id"])
    assert parent.info.run_name == "run-a" and {i["parent_run_id"] for i in items} == {parent.info.run_id}
    assert parent.data.tags[tracking.TAG_FINGERPRINT] == tracking.dataset_fingerprint(tiny_preprocessed)
    assert parent.data.params["runs"] == "4" and parent.data.params["seeds"] == "3,1"
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "reports")} >= {"reports/cleaning.csv"}
    with pytest.raises(steps.StepError, match="distinct"):
        steps.expand_grid_step(grids, "g", [1, 1], [], tiny_preprocessed, "exp-grid", "run-b")
    from mdfnet.config import ConfigError

    with pytest.raises(ConfigError, match="model.fusion"):
        steps.expand_grid_step(grids, "g", [0], ["model.fusion=nope"], tiny_preprocessed, "exp-grid", "run-c")


# ------------------------------------------------------------------------------------------ sources
def test_fetch_source_local_s3_and_errors(tmp_path, fake_aws):
    assert sources.fetch_source(str(tmp_path), tmp_path / "x") == tmp_path
    with pytest.raises(steps.StepError, match="not an existing folder"):
        sources.fetch_source(str(tmp_path / "missing"), tmp_path / "x")
    with pytest.raises(steps.StepError, match="unsupported scheme 'gs'"):
        sources.fetch_source("gs://b/p", tmp_path / "x")
    import boto3
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="src")
        s3.put_object(Bucket="src", Key="data/reflacx/a.csv", Body=b"id\n1\n")
        s3.put_object(Bucket="src", Key="data/mimic-iv/hosp/p.csv", Body=b"\x00\x01")
        s3.put_object(Bucket="src", Key="database/other.csv", Body=b"not under the prefix")
        out = sources.fetch_source("s3://src/data", tmp_path / "dl")
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
            "mimic-iv/hosp/p.csv", "reflacx/a.csv"]
        assert (out / "mimic-iv/hosp/p.csv").read_bytes() == b"\x00\x01"
        with pytest.raises(steps.StepError, match="holds no objects"):
            sources.fetch_source("s3://src/empty", tmp_path / "dl2")


# ------------------------------------------------------------------------------------------ tracking modes
def _run_cell(data, tmp: Path, experiment: str) -> dict:
    items = steps.expand_grid_step(ONE_CELL, "one", [0], [], data, experiment, "pipe")
    assert len(items) == 1
    steps.train_step(items[0], data, tmp / "model", max_steps=2)
    res = steps.evaluate_step(tmp / "model", data, tmp / "eval", batch_size=4)
    best = steps.compare_step([res])["best"]
    decision = steps.register_step(best, f"model-{experiment}")
    return {"item": items[0], "result": res, "decision": decision}


def _shape(client, run_id: str) -> dict:
    run = client.get_run(run_id)
    hist = client.get_metric_history(run_id, "train/loss_total")
    metrics = {k for k in run.data.metrics if not k.startswith("system/")}  # sampled on a clock: timing decides
    return {"name": run.info.run_name, "params": set(run.data.params), "metrics": metrics, "epochs_logged": len(hist)}


def test_train_step_records_system_metrics_and_the_device(tiny_preprocessed, tmp_path, client):
    """MLflow's system-metrics monitor samples CPU and memory while the cell trains (GPU too where NVML finds one);
    the resolved device and AMP dtype are run tags."""
    grid = {"one": {**ONE_CELL["one"], "base": [*TINY, "train.system_metrics_s=0.2", "train.epochs=3"]}}
    items = steps.expand_grid_step(grid, "one", [0], [], tiny_preprocessed, "exp-system-metrics", "pipe")
    info = steps.train_step(items[0], tiny_preprocessed, tmp_path / "model")
    run = client.get_run(info["run_id"])
    system = {k for k in run.data.metrics if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system, system
    samples = client.get_metric_history(info["run_id"], "system/cpu_utilization_percentage")
    assert len(samples) >= 2 and all(0 <= m.value <= 100 * os.cpu_count() for m in samples)
    assert [m.step for m in samples] == list(range(len(samples)))
    assert run.data.tags["mdfnet.device"] == "cpu" and run.data.tags["mdfnet.amp_dtype"] == "off"


def test_both_tracking_modes_give_the_same_runs(tiny_preprocessed, tmp_path, client, monkeypatch):
    # self mode: the steps create the pipeline run and one nested cell run
    own = _run_cell(tiny_preprocessed, tmp_path / "self", "exp-self")
    cell = client.get_run(own["result"]["run_id"])
    parent_id = own["item"]["parent_run_id"]
    assert cell.data.tags[tracking.TAG_PARENT] == parent_id and cell.data.tags[tracking.TAG_MODE] == "self"
    assert cell.info.status == "FINISHED" and client.get_run(parent_id).info.status == "FINISHED"
    exp_self = cell.info.experiment_id
    assert len(client.search_runs([exp_self])) == 2

    # plugin mode (KEP-12862), simulated: KFP made the pipeline run and one nested run per task beforehand
    exp_id = client.create_experiment("exp-plugin")
    pipe = client.create_run(exp_id, run_name="kfp-pipeline-run").info.run_id
    task_runs = {t: client.create_run(exp_id, run_name=t, tags={tracking.TAG_PARENT: pipe}).info.run_id
                 for t in ("expand-grid", "train-iter-0", "evaluate-iter-0", "compare", "register")}
    monkeypatch.setenv(tracking.ENV_EXPERIMENT_ID, exp_id)
    monkeypatch.setenv(tracking.ENV_RUN_ID, task_runs["expand-grid"])
    items = steps.expand_grid_step(ONE_CELL, "one", [0], [], tiny_preprocessed, "ignored-in-plugin-mode", "pipe")
    assert items[0]["parent_run_id"] == pipe and items[0]["experiment_id"] == exp_id
    monkeypatch.setenv(tracking.ENV_RUN_ID, task_runs["train-iter-0"])
    info = steps.train_step(items[0], tiny_preprocessed, tmp_path / "plugin" / "model", max_steps=2)
    assert info["run_id"] == task_runs["train-iter-0"] and info["mode"] == "kfp-plugin"
    monkeypatch.setenv(tracking.ENV_RUN_ID, task_runs["evaluate-iter-0"])
    res = steps.evaluate_step(tmp_path / "plugin" / "model", tiny_preprocessed, tmp_path / "plugin" / "eval")
    monkeypatch.setenv(tracking.ENV_RUN_ID, task_runs["register"])
    steps.register_step(steps.compare_step([res])["best"], "model-exp-plugin")
    monkeypatch.delenv(tracking.ENV_RUN_ID)

    assert len(client.search_runs([exp_id])) == 6  # nothing created
    assert client.get_experiment_by_name("ignored-in-plugin-mode") is None
    plugin_cell = client.get_run(task_runs["train-iter-0"])
    assert plugin_cell.data.tags[tracking.TAG_MODE] == "kfp-plugin"
    assert plugin_cell.info.status == "RUNNING"  # KFP ends its own runs
    assert client.get_run(pipe).data.tags["mdfnet.registered_version"] == "1"
    assert client.get_run(pipe).data.tags["mlflow.note.content"].startswith("# Comparison (1 runs, 1 cells")

    a, b = _shape(client, own["result"]["run_id"]), _shape(client, task_runs["train-iter-0"])
    assert a == b
    assert a["name"] == "variant-mdf-s0" and a["epochs_logged"] == 1
    assert {"cell", "grid", "variant", "fusion", "backbone", "feature_set", "seed", "model.variant",
            "train.lr", "data.features"} <= a["params"]
    assert {"train/loss_total", "train/loss_classifier", "train/sigma/loss_classifier", "val/ap", "val/ar",
            "final/val/ap", "final/val/ar", "final/test/ap", "final/test/ar"} <= a["metrics"]
    metrics = client.get_run(own["result"]["run_id"]).data.metrics
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["final/val/ap"] == own["result"]["metrics"]["final/val/ap"]
    arts = {f.path for f in client.list_artifacts(own["result"]["run_id"], "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/predictions_test.json", "evaluation/plots"} <= arts
    saved = json.loads((tmp_path / "self" / "eval" / "metrics.json").read_text())
    assert set(saved["test"]["per_class"]) == set(schema.CLASSES)
    # the summary compare gets carries the headline metrics only (the rest: metrics.json, MLflow); KFP passes the
    # fan-in of every cell to compare as one command-line argument, capped at 128 KiB by Linux: 60 cells must fit
    headline = {f"final/{k}" for k in KEYS}
    assert set(own["result"]["metrics"]) <= headline and len(saved["metrics"]) > 2 * len(headline)
    assert own["result"]["metrics"] == {k: v for k, v in saved["metrics"].items() if k in headline}
    assert 60 * len(json.dumps(own["result"])) < 128 * 1024
    for split in ("val", "test"):  # the look-alike pair: counts always saved, metrics only when both have ground truth
        pair = saved[split]["lookalike"]
        both = min(c + s + m for c, s, m in zip(pair["correct"], pair["swapped"], pair["missed"], strict=True)) > 0
        assert (f"final/{split}/lookalike_missed" in metrics) == both
        if both and pair["balanced_accuracy"] is not None:
            assert metrics[f"final/{split}/lookalike_bacc"] == pytest.approx(pair["balanced_accuracy"])
    assert own["decision"]["promoted"] and own["decision"]["champion_version"] == "1"


def test_evaluate_step_rejects_a_folder_without_run_info(tmp_path, tiny_preprocessed):
    with pytest.raises(steps.StepError, match="run.json not found"):
        steps.evaluate_step(tmp_path, tiny_preprocessed, tmp_path / "out")


# ------------------------------------------------------------------------------------------ compare / register
def _summary(cell: str, seed: int, val_ap: float, **kw) -> dict:
    return {"cell": cell, "seed": seed, "run_name": f"{cell}-s{seed}", "labels": {"variant": cell},
            "metrics": {"final/val/ap": val_ap, "final/test/ap": val_ap / 2}, **kw}


def test_compare_ranks_cells_by_mean_val_ap_over_seeds():
    res = steps.compare_step([_summary("a", 0, 0.9), _summary("a", 1, 0.1), _summary("b", 0, 0.6), _summary("b", 1, 0.5),
                         _summary("c", 0, math.nan), _summary("d", 0, 0.52)])
    assert [r["cell"] for r in res["ranking"]] == ["b", "d", "a", "c"]  # a: mean 0.5; c: no finite AP → last
    assert res["best"]["run_name"] == "b-s0"
    assert res["ranking"][0]["mean_val_ap"] == pytest.approx(0.55)
    assert "| 1 | b | b |" in res["markdown"] and "55.00 ± 7.07" in res["markdown"]
    assert "final/test/lookalike_bacc %" in res["markdown"]
    assert "<td>b</td>" in res["html"]
    tie = steps.compare_step([_summary("z", 0, 0.3), _summary("y", 0, 0.3)])
    assert tie["best"]["cell"] == "y"
    same = steps.compare_step([_summary("s", 1, 0.4, model_uri="u1"), _summary("s", 0, 0.4, model_uri="u0")])
    assert same["best"]["model_uri"] == "u0"  # the summary itself, every key kept: the lower seed wins a tie
    assert res["html"].startswith("<html><body><h2>Comparison by final/val/ap</h2>")  # no pipeline run: the table
    with pytest.raises(steps.StepError, match="at least one"):
        steps.compare_step([])


def test_a_deleted_experiment_is_refused_with_how_to_restore_it(client):
    """A user who deleted the experiment in the MLflow UI and runs the pipeline again: MLflow keeps the name taken
    and refuses runs in it ("must be in the 'active' state"); we say which experiment and how to get it back."""
    exp = tracking.get_or_create_experiment(client, "exp-deleted")
    client.delete_experiment(exp)
    with pytest.raises(tracking.TrackingError, match=rf"experiment 'exp-deleted' \(id {exp}\) is deleted .*"
                                                     rf"mlflow experiments restore --experiment-id {exp}"):
        tracking.get_or_create_experiment(client, "exp-deleted")
    client.restore_experiment(exp)
    assert tracking.get_or_create_experiment(client, "exp-deleted") == exp


def test_register_moves_champion_only_for_a_better_model(client):
    exp = tracking.get_or_create_experiment(client, "exp-champion")
    assert client.get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"

    def candidate(ap: float) -> dict:
        run_id = client.create_run(exp).info.run_id
        client.log_metric(run_id, tracking.SELECTION_METRIC, ap)
        uri = log_stand_in_model(client, run_id)
        return {"run_id": run_id, "model_uri": uri, "metrics": {tracking.SELECTION_METRIC: ap}}

    name = "champion-test"
    first = steps.register_step(candidate(0.5), name)
    assert first["promoted"] and first["champion_version"] == "1"
    worse = steps.register_step(candidate(0.2), name)
    assert not worse["promoted"] and worse["champion_version"] == "1" and worse["version"] == "2"
    assert "alias kept" in worse["reason"] and worse["champion_val_ap"] == pytest.approx(0.5)
    assert client.get_model_version(name, "2").tags["mdfnet.champion_decision"] == "kept"
    tie = steps.register_step(candidate(0.5), name)
    assert not tie["promoted"] and tie["champion_version"] == "1"
    better = steps.register_step(candidate(0.7), name)
    assert better["promoted"] and better["champion_version"] == "4"
    nan = steps.register_step(candidate(math.nan), name)
    assert not nan["promoted"] and nan["champion_version"] == "4"
    with pytest.raises(steps.StepError, match="model_uri"):
        steps.register_step({"run_id": "x"}, name)


def test_join_from_s3_gives_a_self_contained_dataset_that_preprocesses(tmp_path, fake_aws):
    """Sources in a (moto) bucket: the joined folder carries its images, so preprocess works after the
    temporary download is gone; reports count what the tables hold."""
    import boto3
    from conftest import tiny_sources
    from moto import mock_aws

    src = tiny_sources(tmp_path / "src", n=12)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="mimic")
        upload_tree(s3, src, "mimic", "eye")
        joined = steps.join_step("s3://mimic/eye", tmp_path / "joined")
    assert joined["n_input"] == 12 and joined["n_kept"] + sum(joined["exclusions"].values()) == 12
    assert f"{joined['n_kept']} of 12 REFLACX readings kept" in joined["report_markdown"]
    assert len(list((tmp_path / "joined" / "images").rglob("*.jpg"))) == joined["n_kept"]
    pre = steps.preprocess_step(tmp_path / "joined", tmp_path / "pre", ["image_size=32", "workers=1"])
    assert sum(pre["splits"].values()) == joined["n_kept"] == pre["n_images"]
    assert "## Cleaning" in pre["report_markdown"] and "| train |" in pre["report_markdown"]
