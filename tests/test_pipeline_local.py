"""The tiny pipeline end to end through ``kfp.local`` (SubprocessRunner): synthetic sources → join → preprocess →
expand_grid → train/evaluate per cell → compare → register, asserting what lands in a private sqlite MLflow store; then
a second run with a strictly worse model (no detection passes the score threshold: val AP 0 < the champion's) must
not move the ``champion`` alias."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from mdfnet import tracking

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # ~3 min on 2 busy cores: two pipeline runs, 22 task processes in all


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.ENV_TRACKING_URI, f"sqlite:///{tmp_path / 'mlflow.db'}")
    for k in (tracking.ENV_RUN_ID, tracking.ENV_EXPERIMENT_ID):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for k, v in FAKE_SECRETS.items():  # what the credentials Secret puts into every task: it must leak nowhere
        monkeypatch.setenv(k, v)
    return tmp_path


FAKE_SECRETS = {"AWS_ACCESS_KEY_ID": "MDFNETFAKEKEYID4242", "AWS_SECRET_ACCESS_KEY": "mdfnet-fake-secret-9f3a7c",
                "MLFLOW_TRACKING_TOKEN": "mdfnet-fake-token-51e2"}
"""Recognisable fake credentials (nothing here reaches S3 or an MLflow server: sources and the store are local)."""


def _assert_no_secret_written(root: Path, output: str) -> int:
    """No fake credential in any file under ``root`` (kfp root, task logs and outputs, mlflow.db, artefacts) nor in
    the console output; returns the number of files scanned."""
    files = [p for p in root.rglob("*") if p.is_file()]
    for secret in FAKE_SECRETS.values():
        assert secret not in output
        needle = secret.encode()
        leaked = [str(p) for p in files if needle in p.read_bytes()]
        assert not leaked, f"{secret!r} written to {leaked}"
    return len(files)


def _pipeline_and_cell_runs(client, experiment_id: str) -> tuple[list, list]:
    runs = client.search_runs([experiment_id])
    return ([r for r in runs if r.data.tags.get(tracking.TAG_ROLE) == "pipeline"],
            [r for r in runs if r.data.tags.get(tracking.TAG_ROLE) == "cell"])


def _assert_cell_runs_comparable_and_complete(client, cells: list, experiment_id: str) -> None:
    """Same param names in every run (the UI compares them column by column), finite metrics, FINISHED, config and
    evaluation artefacts, and one MLflow logged model per cell run in the same experiment."""
    param_keys = {frozenset(r.data.params) for r in cells}
    assert len(param_keys) == 1
    assert {"variant", "fusion", "backbone", "feature_set", "seed", "cell", "grid", "model.variant",
            "train.epochs"} <= set(next(iter(param_keys)))
    assert {r.data.params["variant"] for r in cells} == {"baseline", "mdf"}
    assert {r.data.params["seed"] for r in cells} == {"0", "1"}
    from pipelines.run_local import LOCAL_TRAIN_DEVICE

    assert {r.data.params["train.device"] for r in cells} == {LOCAL_TRAIN_DEVICE}  # not the cluster's cuda
    for r in cells:
        m = r.data.metrics
        assert {"train/loss_total", "val/ap", "final/val/ap", "final/test/ap", "final/test/ar"} <= set(m)
        assert all(math.isfinite(v) for v in m.values()), r.info.run_name
        assert r.info.status == "FINISHED"
        assert {a.path for a in client.list_artifacts(r.info.run_id)} >= {"config", "evaluation"}
    logged = client.search_logged_models(experiment_ids=[experiment_id])
    assert sorted(m.source_run_id for m in logged) == sorted(r.info.run_id for r in cells)


def test_tiny_pipeline_end_to_end_tracks_everything_in_mlflow(env, capfd):
    from mdfnet.data.synthetic import generate
    from mdfnet.pipeline.grids import grid_cells, load_grids
    from pipelines.run_local import run_local

    generate(env / "sources", n_studies=48, seed=0, image_size=80)
    grids = load_grids(ROOT / "pipelines" / "grids")
    n_cells, seeds = len(grid_cells(grids, "tiny")), (0, 1)
    # every detection kept (score ≥ 0, up to 100 per image): 3-step models then score > 0 under IoBB (a small box
    # of the right class inside a lesion is a hit), which the 'worse model keeps the champion' case needs
    first = run_local(env / "sources", env / "w", grid="tiny", seeds=seeds, experiment="e2e",
                      config_overrides=("train.epochs=1", "model.box_score_thresh=0.0",
                                        "model.box_detections_per_img=100"),
                      registered_model="e2e-model", max_steps=3, parallelism=2)

    client = tracking.configure()
    parents, cells = _pipeline_and_cell_runs(client, first.experiment_id)
    assert len(parents) == 1 and parents[0].info.run_id == first.pipeline_run_id
    assert len(cells) == n_cells * len(seeds) == 4
    assert {r.data.tags[tracking.TAG_PARENT] for r in cells} == {first.pipeline_run_id}
    assert sorted(r.info.run_name for r in cells) == sorted(
        f"{c['name']}-s{s}" for c in grid_cells(grids, "tiny") for s in seeds)
    _assert_cell_runs_comparable_and_complete(client, cells, first.experiment_id)
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mdfnet.dataset_fingerprint"] and parent.data.tags["image.train"].endswith("mdfnet-train:"
                                                                                                         "0.1.0")
    assert first.champion_version == "1"
    assert "| 1 |" in first.comparison and "variant-mdf" in first.comparison
    assert f"/#/experiments/{first.experiment_id}/runs?workflowType=machine_learning" in first.summary()
    assert "mlflow ui --backend-store-uri sqlite:///" in first.summary()
    # the compare step's report on the pipeline run; the grid's eval keys: train AP per epoch, attribution for MDF-Net
    assert "mdfnet.report_error" not in parent.data.tags
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/correlation.png"} <= report, report
    for r in cells:  # (the evaluate step's attribution: test_retries.py; tiny keeps it off for speed)
        assert client.get_metric_history(r.info.run_id, "train/ap"), r.info.run_name

    # a strictly worse model: nothing passes score threshold 1.0, so its validation AP is 0, below the champion's
    champ_ap = client.get_run(client.get_model_version_by_alias("e2e-model", "champion").run_id).data.metrics[
        tracking.SELECTION_METRIC]
    assert champ_ap > 0, "the first run's champion must score > 0 for the 'worse model' case to be strict"
    second = run_local(env / "sources", env / "w", grid="tiny", seeds=(0,),
                       config_overrides=("model.box_score_thresh=1.0",), experiment="e2e",
                       registered_model="e2e-model", max_steps=1, parallelism=2)
    assert second.pipeline_run_id != first.pipeline_run_id
    assert second.champion_version == "1"
    v2 = client.get_model_version("e2e-model", "2")
    assert v2.tags["mdfnet.champion_decision"] == "kept" and "alias kept" in v2.description
    assert float(v2.tags["mdfnet.val_ap"]) == 0.0 < champ_ap
    assert client.get_run(second.pipeline_run_id).data.tags["mdfnet.champion_version"] == "1"
    assert len(client.search_runs([first.experiment_id], f"tags.`{tracking.TAG_ROLE}` = 'cell'")) == 4 + n_cells
    assert os.environ[tracking.ENV_TRACKING_URI] == first.tracking_uri
    assert _assert_no_secret_written(env, "".join(capfd.readouterr())) > 100
