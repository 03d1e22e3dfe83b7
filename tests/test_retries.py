"""Every step is safe to retry (KFP retries a failed task; GPU pools preempt): a preempted train task resumes in
the same MLflow cell run from its durable checkpoint and ends with the weights of an uninterrupted run; a retried
expand_grid, evaluate or register adds no second pipeline run, metric entry or model version."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from servers import private_mlflow_store

from mdfnet import tracking
from mdfnet.pipeline import steps

TINY = ["model.backbone=mobilenet_v3_small", "model.backbone_stride=8", "model.use_mask=false",
        "model.anchor_sizes=[8,16,32,64]", "model.box_batch_size_per_image=32", "train.batch_size=2",
        "train.epochs=3", "train.num_workers=0", "train.device=cpu", "train.progress=false", "train.lr=0.01",
        "eval.train_ap_images=0", "eval.attribution_repeats=0"]
GRID = {"one": {"name": "one", "base": TINY, "cells": [{"name": "mdf", "set": ["model.variant=mdf"]}]}}
ATTRIBUTED = {"one": {"name": "one", "base": [*TINY, "eval.attribution_repeats=1"],
                      "cells": [{"name": "mdf", "set": ["model.variant=mdf"]}]}}


class Preempted(BaseException):  # like SystemExit: not an error a step could handle
    """Stands for the pod being killed (the process dies; nothing after this point runs)."""


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with private_mlflow_store(tmp_path_factory.mktemp("mlflow")):
        yield tracking.configure()
    torch.set_num_threads(threads)


def _item(client, data, kfp_run_id: str, grids: dict = GRID) -> dict:
    return steps.expand_grid_step(grids, "one", [0], [], data, "retries", f"run-{kfp_run_id}", kfp_run_id=kfp_run_id,
                             client=client)[0]


def _weights(out_dir) -> dict[str, torch.Tensor]:
    return torch.load(out_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def reference(client, tiny_preprocessed, tmp_path_factory) -> tuple[dict, Path]:
    """An uninterrupted train step of ``GRID`` (what a preempted task must end up equal to): its info and folder."""
    out = tmp_path_factory.mktemp("reference")
    return steps.train_step(_item(client, tiny_preprocessed, "reference"), tiny_preprocessed, out, client=client), out


def test_preempted_train_resumes_in_the_same_cell_run_with_the_same_weights(client, tiny_preprocessed, tmp_path,
                                                                           monkeypatch, reference):
    reference, ref_dir = reference
    item = _item(client, tiny_preprocessed, "preempted")
    upload = tracking.MlflowLogger.log_artifact
    uploads = []

    def upload_then_die(self, path, artifact_path=None):
        upload(self, path, artifact_path)
        if artifact_path == "checkpoints" and Path(path).name == "last.pt":
            uploads.append(path)
            raise Preempted("pod killed after epoch 1's checkpoint reached the artefact store")

    monkeypatch.setattr(tracking.MlflowLogger, "log_artifact", upload_then_die)
    with pytest.raises(Preempted):
        steps.train_step(item, tiny_preprocessed, tmp_path / "attempt1", client=client)
    monkeypatch.setattr(tracking.MlflowLogger, "log_artifact", upload)
    assert len(uploads) == 1
    # the retry runs in a fresh pod: a new, empty output folder; only the artefact store remembers
    retried = steps.train_step(item, tiny_preprocessed, tmp_path / "attempt2", client=client)

    assert retried["run_id"] != reference["run_id"]
    cells = client.search_runs([retried["experiment_id"]], f"tags.`{tracking.TAG_PARENT}` = '{item['parent_run_id']}'")
    assert [r.info.run_id for r in cells] == [retried["run_id"]]  # one cell run, reopened, not a FAILED twin
    assert cells[0].info.status == "RUNNING"  # the evaluate step ends it
    epochs = [m.value for m in client.get_metric_history(retried["run_id"], "epoch")]
    assert sorted(epochs) == [1.0, 2.0, 3.0]  # one continuous history: epoch 1 from attempt 1, 2-3 from the retry
    ref, got = _weights(ref_dir), _weights(tmp_path / "attempt2")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


def test_retried_grid_evaluate_and_register_add_nothing(client, tiny_preprocessed, tmp_path):
    first = _item(client, tiny_preprocessed, "kfp-42", ATTRIBUTED)
    again = _item(client, tiny_preprocessed, "kfp-42", ATTRIBUTED)
    assert again["parent_run_id"] == first["parent_run_id"]  # the same pipeline run, reused
    pipelines = client.search_runs([first["experiment_id"]], "tags.`kfp.run_id` = 'kfp-42'")
    assert len(pipelines) == 1

    steps.train_step(first, tiny_preprocessed, tmp_path / "m", client=client)
    summary = steps.evaluate_step(tmp_path / "m", tiny_preprocessed, tmp_path / "e1", client=client)
    steps.evaluate_step(tmp_path / "m", tiny_preprocessed, tmp_path / "e2", client=client)
    for key in (tracking.SELECTION_METRIC, "final/val/ap_train_medians", "final/val/importance/temperature"):
        assert len(client.get_metric_history(summary["run_id"], key)) == 1, key  # attribution on: mdf + repeats 1
    assert "evaluation/attribution.json" in {a.path for a in client.list_artifacts(summary["run_id"], "evaluation")}

    one = steps.register_step(summary, "retried-model", client=client)
    two = steps.register_step(summary, "retried-model", client=client)
    assert one["version"] == two["version"] == "1" and two["champion_version"] == "1"
    assert len(client.search_model_versions("name = 'retried-model'")) == 1


def test_timed_checkpoints_mid_epoch_resume_exactly(tiny_preprocessed, tmp_path):
    """``train.checkpoint_every_s``: a pod killed in the middle of an epoch loses only the steps since the last
    timed checkpoint; resuming from it gives the weights and the epoch metrics of an uninterrupted run."""
    from mdfnet.training import config_from_sources, train

    cfg = config_from_sources(None, [*TINY, "train.epochs=2", "train.checkpoint_every_s=1e-9"])  # after every step
    ref = train(cfg, tiny_preprocessed, tmp_path / "ref")
    saves = []

    def die_on_third(path):
        saves.append(torch.load(path, map_location="cpu", weights_only=True)["step"])
        if len(saves) == 3:
            raise Preempted("killed mid-epoch, after step 3's checkpoint")

    with pytest.raises(Preempted):
        train(cfg, tiny_preprocessed, tmp_path / "run", on_checkpoint=die_on_third)
    assert saves == [1, 2, 3]  # steps of epoch 1 (4 steps per epoch): mid-epoch checkpoints
    resumed = train(cfg, tiny_preprocessed, tmp_path / "run", resume=True)
    got, want = _weights(tmp_path / "run"), _weights(tmp_path / "ref")
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert [h["train/loss_total"] for h in resumed.history] == [h["train/loss_total"] for h in ref.history]


def test_model_that_cannot_be_stored_fails_named_and_a_rerun_completes(client, tiny_preprocessed, tmp_path,
                                                                      monkeypatch):
    from mdfnet.serving import pyfunc

    item = _item(client, tiny_preprocessed, "store-down")
    real = pyfunc.log_served_model

    def store_down(*args, **kwargs):
        raise ConnectionError("artifact store unreachable")

    monkeypatch.setattr(pyfunc, "log_served_model", store_down)
    with pytest.raises(tracking.TrackingError, match=r"the trained model could not be stored at sqlite:.*"
                                                     r"ConnectionError: artifact store unreachable.*a rerun"):
        steps.train_step(item, tiny_preprocessed, tmp_path / "a1", client=client)
    monkeypatch.setattr(pyfunc, "log_served_model", real)
    done = steps.train_step(item, tiny_preprocessed, tmp_path / "a2", client=client)  # a new pod
    assert (tmp_path / "a2" / "checkpoints" / "best.pt").is_file()  # fetched: the rerun keeps the best epoch
    assert done["model_uri"].startswith("models:/") and done["best_epoch"] is not None
    epochs = [m.value for m in client.get_metric_history(done["run_id"], "epoch")]
    assert sorted(epochs) == [1.0, 2.0, 3.0]  # the rerun trained nothing again


def test_checkpoints_can_live_in_s3_instead(client, tiny_preprocessed, tmp_path, monkeypatch, fake_aws):
    """``MDFNET_CHECKPOINT_URI=s3://bucket/prefix``: checkpoints go to ``<prefix>/<pipeline run>/<cell>-s<seed>/``
    (not into the MLflow run), and the retried task resumes from there."""
    import boto3
    from moto import mock_aws

    from mdfnet.pipeline import durable

    monkeypatch.setenv(durable.CHECKPOINT_URI_ENV, "s3://ckpt-bucket/runs")
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="ckpt-bucket")
        item = _item(client, tiny_preprocessed, "s3-store")
        upload = durable.S3Checkpoints.upload

        def upload_then_die(self, path):
            assert upload(self, path)
            if path.name == "last.pt":
                raise Preempted("pod killed after epoch 1's checkpoint reached S3")

        monkeypatch.setattr(durable.S3Checkpoints, "upload", upload_then_die)
        with pytest.raises(Preempted):
            steps.train_step(item, tiny_preprocessed, tmp_path / "a1", client=client)
        monkeypatch.setattr(durable.S3Checkpoints, "upload", upload)
        done = steps.train_step(item, tiny_preprocessed, tmp_path / "a2", client=client)
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="ckpt-bucket")["Contents"])
    prefix = f"runs/{item['parent_run_id']}/mdf-s0"
    assert keys == [f"{prefix}/{name}{ext}" for name in ("best.pt", "last.pt") for ext in ("", ".sha256")]
    assert not client.list_artifacts(done["run_id"], "checkpoints")
    assert sorted(m.value for m in client.get_metric_history(done["run_id"], "epoch")) == [1.0, 2.0, 3.0]


@pytest.mark.integration
def test_s3_checkpoint_store_stopped_and_restarted_during_training(client, tiny_preprocessed, tmp_path, monkeypatch,
                                                                   seaweed_env):
    """A real S3 store (SeaweedFS on loopback) goes away before epoch 1's checkpoints: their uploads warn and
    training goes on. It is back for epoch 2, whose checkpoints reach it; the pod is then preempted, and the
    retried task resumes from the store (epoch 3 only) and leaves the final checkpoints there."""
    from mdfnet.pipeline import durable
    from mdfnet.pipeline.sources import S3_MAX_ATTEMPTS_ENV

    store = seaweed_env
    store.s3.create_bucket(Bucket="ckpt-outage")
    monkeypatch.setenv(durable.CHECKPOINT_URI_ENV, "s3://ckpt-outage/runs")
    monkeypatch.setenv(S3_MAX_ATTEMPTS_ENV, "2")  # give up quickly while the store is away (test speed)
    item = _item(client, tiny_preprocessed, "s3-outage")
    upload = durable.S3Checkpoints.upload
    calls: list[tuple[str, bool]] = []

    def upload_through_outage(self, path):
        if not calls:
            store.stop_endpoint()  # away before the first checkpoint …
        elif calls[-1] == ("last.pt", False):
            store.start_endpoint(wait=True)  # … back once epoch 1's last.pt was refused
        ok = upload(self, path)
        calls.append((path.name, ok))
        if ok and path.name == "last.pt":
            raise Preempted("pod killed after epoch 2's checkpoint reached S3")
        return ok

    monkeypatch.setattr(durable.S3Checkpoints, "upload", upload_through_outage)
    with pytest.raises(Preempted):
        steps.train_step(item, tiny_preprocessed, tmp_path / "a1", client=client)
    monkeypatch.setattr(durable.S3Checkpoints, "upload", upload)
    assert calls[:2] == [("best.pt", False), ("last.pt", False)]  # epoch 1: the store is away, training goes on
    assert calls[-1] == ("last.pt", True)  # epoch 2: stored, with epoch 1's best.pt before it
    done = steps.train_step(item, tiny_preprocessed, tmp_path / "a2", client=client)  # the retry, a new pod

    assert sorted(m.value for m in client.get_metric_history(done["run_id"], "epoch")) == [1.0, 2.0, 3.0]
    prefix = f"runs/{item['parent_run_id']}/mdf-s0"
    for name in durable.UPLOAD_ORDER:
        stored = store.s3.get_object(Bucket="ckpt-outage", Key=f"{prefix}/{name}")["Body"].read()
        assert stored == (tmp_path / "a2" / "checkpoints" / name).read_bytes()


def test_a_checkpoint_refused_in_an_outage_is_stored_at_the_next_one_best_first(tmp_path):
    from mdfnet.pipeline import durable

    class Store(durable.DurableStore):
        up, stored = False, []

        def _put(self, path):
            if self.up:
                self.stored.append((path.name, path.read_text()))
            return self.up

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    best, last = folder / "best.pt", folder / "last.pt"
    store = Store()
    best.write_text("epoch 1")
    last.write_text("epoch 1")
    assert not store.upload(best) and not store.upload(last)  # the store is away
    store.up = True
    last.write_text("epoch 2")  # epoch 2 did not improve: only last.pt is handed over …
    assert store.upload(last)
    assert store.stored == [("best.pt", "epoch 1"), ("last.pt", "epoch 2")]  # … and epoch 1's best.pt goes first
    assert store.upload(last) and store.stored[-1] == ("last.pt", "epoch 2") and len(store.stored) == 3
    assert store.flush() and len(store.stored) == 3  # nothing left behind: nothing uploaded again
    store.up = False
    best.write_text("epoch 3")
    assert not store.upload(best) and not store.flush()  # away at the end: the train step fails, named
    store.up = True
    assert store.flush() and store.stored[-1] == ("best.pt", "epoch 3")
    with pytest.raises(ValueError, match=r"model\.pt: not a checkpoint a task resumes from; expected one of"):
        store.upload(folder / "model.pt")


KILLED = {"one": {"name": "one", "base": [*TINY, "train.checkpoint_every_s=1e-9"],  # a checkpoint after every step
                  "cells": [{"name": "mdf", "set": ["model.variant=mdf"]}]}}
CHILD = """
import json, os, signal, sys
import torch
from mdfnet.pipeline import durable, steps
torch.set_num_threads(1)
upload, calls = durable.DurableStore.upload, []
def upload_then_sigkill(self, path):
    ok = upload(self, path)
    calls.append(path.name)
    if len(calls) == 3:  # step 3 of epoch 1's 4: its checkpoint reached the store
        os.kill(os.getpid(), signal.SIGKILL)
    return ok
durable.DurableStore.upload = upload_then_sigkill
steps.train_step(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3])
"""


def test_sigkilled_train_process_resumes_in_the_same_run_with_the_same_weights(client, tiny_preprocessed, tmp_path,
                                                                               reference):
    """The train step runs in its own process, which gets SIGKILL in the middle of epoch 1 (nothing after that
    point runs: no handler marks the run FAILED). The retry finds the cell run still RUNNING, resumes from the
    durable mid-epoch checkpoint and ends with the weights of an uninterrupted run (``reference``: the same
    config without timed checkpoints, which do not change training)."""
    import json
    import signal
    import subprocess
    import sys

    item = _item(client, tiny_preprocessed, "sigkill", KILLED)
    child = subprocess.run([sys.executable, "-c", CHILD, json.dumps(item), str(tiny_preprocessed),
                            str(tmp_path / "attempt1")], capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    cells = client.search_runs([item["experiment_id"]], f"tags.`{tracking.TAG_PARENT}` = '{item['parent_run_id']}'")
    assert [r.info.status for r in cells] == ["RUNNING"]  # killed: nobody ended it

    retried = steps.train_step(item, tiny_preprocessed, tmp_path / "attempt2", client=client)  # a fresh pod
    assert retried["run_id"] == cells[0].info.run_id
    assert sorted(m.value for m in client.get_metric_history(retried["run_id"], "epoch")) == [1.0, 2.0, 3.0]
    ref, got = _weights(reference[1]), _weights(tmp_path / "attempt2")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


def test_a_checkpoint_cut_off_mid_upload_is_ignored_and_best_is_resumed(client, tmp_path, caplog):
    """A file store copies in place: a kill in the middle of ``last.pt``'s upload leaves half of it. The retry
    sees that it does not match its digest and resumes from ``best.pt``, a whole training state."""
    from mdfnet.pipeline import durable

    run_id = client.create_run(client.create_experiment("cut-off")).info.run_id
    store = durable.MlflowCheckpoints(client, run_id, tracking.MlflowLogger(run_id, client))
    folder = tmp_path / "pod1" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "best.pt").write_bytes(b"epoch 1 state " * 1000)
    (folder / "last.pt").write_bytes(b"epoch 2 state " * 1000)
    assert store.upload(folder / "best.pt") and store.upload(folder / "last.pt")
    (folder / "last.pt").write_bytes(b"epoch 3 state " * 500)  # epoch 3's copy, killed half way
    client.log_artifact(run_id, str(folder / "last.pt"), "checkpoints")  # (its digest never written)

    assert durable.resume_point(store, tmp_path / "pod2")
    assert (tmp_path / "pod2" / "checkpoints" / "last.pt").read_bytes() == b"epoch 1 state " * 1000
    assert "last.pt does not match its digest" in caplog.text and "resuming from best.pt" in caplog.text
    assert not durable.resume_point(store.__class__(client, client.create_run(
        client.create_experiment("first-attempt")).info.run_id, None), tmp_path / "pod3")  # nothing stored yet
