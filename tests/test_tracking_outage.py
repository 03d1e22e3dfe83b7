"""The tracking server going away during training: training goes on and keeps its checkpoints, metrics are kept
in order and sent when the server is back (nothing dropped), checkpoint uploads warn instead of failing. A real
``mlflow server`` on loopback is stopped mid-run and restarted on the same port and store."""

from __future__ import annotations

import os

import pytest
from servers import Service, binary, free_port, no_proxy_for_loopback

from mdfnet.metrics_log import Backlog

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]
TINY = ["model.backbone=mobilenet_v3_small", "model.backbone_stride=8", "model.use_mask=false",
        "model.anchor_sizes=[8,16,32,64]", "model.box_batch_size_per_image=32", "train.batch_size=2",
        "train.epochs=3", "train.num_workers=0", "train.device=cpu", "train.progress=false",
        "eval.train_ap_images=0", "eval.attribution_repeats=0"]


def _server(tmp, port: int, n: int) -> Service:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    argv = [binary("mlflow", "mlflow>=3.17,<4"), "server", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
            "--artifacts-destination", str(tmp / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]
    svc = Service(f"mlflow server #{n}", argv, env, tmp / f"server{n}.log")
    svc.wait_http(f"http://127.0.0.1:{port}/health")
    return svc


def test_training_survives_a_tracking_outage_and_loses_no_metric(tmp_path, tiny_preprocessed, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.utils import rest_utils

    from mdfnet import tracking
    from mdfnet.training import config_from_sources, train

    for k, v in {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}.items():  # MLflow's retries: 7 with backoff by default
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    retries: list[int] = []  # MLflow's retries allowed to each request
    request = rest_utils._get_http_response_with_retries

    def recorded(method, url, max_retries, *args, **kwargs):
        retries.append(max_retries)
        return request(method, url, max_retries, *args, **kwargs)

    monkeypatch.setattr(rest_utils, "_get_http_response_with_retries", recorded)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    with no_proxy_for_loopback():
        server = _server(tmp_path, port, 1)
        try:
            client = MlflowClient(uri)
            run_id = client.create_run(client.create_experiment("outage")).info.run_id
            logger = tracking.MlflowLogger(run_id, client)
        finally:
            server.stop()  # the server goes away before the first epoch ends
        retries.clear()
        uploads = []
        res = train(config_from_sources(None, TINY), tiny_preprocessed, tmp_path / "run", logger=logger,
                    on_checkpoint=lambda p: uploads.append(logger.try_log_artifact(p, "checkpoints")))
        assert res.epochs_completed == 3 and (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
        assert len(uploads) >= 3 and not any(uploads)  # last.pt per epoch (+ best.pt when it changed): warned
        assert len(logger._metrics.items) > 3 * 5  # everything kept, in order
        assert retries[0] == 2 and set(retries[1:]) == {0}  # the first call waited; the others tried once each
        retries.clear()
        server = _server(tmp_path, port, 2)  # back, same store
        try:
            logger.flush()
            assert logger.try_log_artifact(tmp_path / "run" / "checkpoints" / "last.pt", "checkpoints")
            epochs = [m.value for m in client.get_metric_history(run_id, "epoch")]
            assert epochs == [1.0, 2.0, 3.0]
            assert len(client.get_metric_history(run_id, "val/ap")) == 3
            assert client.get_run(run_id).data.tags["mdfnet.device"] == "cpu"  # set during the outage, sent now
            assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == ["checkpoints/last.pt"]
            assert set(retries) == {2}  # back: MLflow's retries again
        finally:
            server.stop()


def test_backlog_keeps_order_and_names_what_is_left():
    sent: list[list[int]] = []
    up = {"ok": False}

    def sender(items):
        if not up["ok"]:
            raise ConnectionError("server away")
        sent.append(list(items))

    b = Backlog("metrics of run r")
    assert not b.send([1, 2], sender) and not b.send([3], sender) and b.items == [1, 2, 3]
    with pytest.raises(RuntimeError, match=r"metrics of run r: 3 item\(s\) could not be sent after 2 attempts"):
        b.drain(sender, attempts=2, backoff_s=0.01)
    up["ok"] = True
    assert b.send([4], sender) and sent == [[1, 2, 3, 4]] and b.items == []
