"""The MLflow metric logger of training (:class:`MlflowLogger`): params, tags, dataset inputs and metrics that
reach the tracking server, or wait for it in order while it is away (:class:`~mdfnet.metrics_log.Backlog`), so an
outage never stops training. Re-exported by :mod:`mdfnet.tracking` (``tracking.MlflowLogger``,
``tracking.TrackingError``), where the runs it writes into are created."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdfnet.metrics_log import Backlog, MetricLogger, flatten_params

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


class TrackingError(RuntimeError):
    """Tracking cannot proceed (missing run, bad URI); the message names the value and what was expected."""


def _get_run(client: MlflowClient, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as e:
        raise TrackingError(f"MLflow run {run_id!r} not found at {client.tracking_uri}: {e.message}") from e


ONE_ATTEMPT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@contextlib.contextmanager
def _one_attempt(active: bool):
    """MLflow's HTTP settings (read at every request) as they are, or, when ``active`` (the server is known to be
    away), ``ONE_ATTEMPT``: training then does not stall for MLflow's own retries (7, with backoff) at every call
    of an outage, only at the first."""
    if not active:
        yield
        return
    saved = {k: os.environ.get(k) for k in ONE_ATTEMPT}
    os.environ.update(ONE_ATTEMPT)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class MlflowLogger(MetricLogger):
    """:class:`~mdfnet.metrics_log.MetricLogger` that writes into an existing MLflow run (``run_id``).

    Params are flattened (``{"model": {"fusion": "sum"}}`` → ``model.fusion``) and stringified; re-logging a
    param with the same value is a no-op, with another value an error naming the key (MLflow params are
    immutable). Metrics keep their names and step; artefacts may be files or folders. Params, tags, dataset inputs
    and metrics that cannot reach the server are kept in order (:class:`~mdfnet.metrics_log.Backlog`) and sent with the next call
    that gets through, or by ``flush()``/``close()`` (retried with backoff, then a :class:`TrackingError`). Once a
    call found the server away, the next ones make one attempt each (:func:`_one_attempt`) until one gets through.
    ``close()`` does not end the run: run lifetimes belong to the step (or to KFP) that owns the run.
    """

    def __init__(self, run_id: str, client: MlflowClient) -> None:
        self.client = client
        self.run_id = run_id
        self._params: dict[str, str] = dict(_get_run(self.client, run_id).data.params)
        self._closed = False
        self._metrics = Backlog(f"metrics of MLflow run {run_id} at {self.client.tracking_uri}")
        self._pending_params = Backlog(f"params of MLflow run {run_id} at {self.client.tracking_uri}")
        self._pending_tags = Backlog(f"tags of MLflow run {run_id} at {self.client.tracking_uri}")
        self._pending_inputs = Backlog(f"dataset inputs of MLflow run {run_id} at {self.client.tracking_uri}")
        self._away = False

    def _check_open(self) -> None:
        if self._closed:
            raise TrackingError(f"MlflowLogger for run {self.run_id} is closed")

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self._check_open()
        new: dict[str, str] = {}
        for k, v in flatten_params(params).items():
            value = str(v)
            old = self._params.get(k)
            if old is None:
                new[k] = value
            elif old != value:
                raise TrackingError(f"param {k!r} of run {self.run_id} is already {old!r}; cannot change it to {value!r}")
        self._params.update(new)
        with _one_attempt(self._away):
            self._away = not self._pending_params.send([Param(k, v) for k, v in new.items()], self._send_params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        self._check_open()
        ts = int(time.time() * 1000)
        with _one_attempt(self._away):
            self._away = not self._metrics.send([Metric(k, float(v), ts, int(step)) for k, v in metrics.items()],
                                                self._send_metrics)

    def _send_params(self, params: list[Any]) -> None:
        for i in range(0, len(params), 100):  # MLflow's log_batch limit for params
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def _send_metrics(self, metrics: list[Any]) -> None:
        for i in range(0, len(metrics), 1000):  # MLflow's log_batch limit
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._check_open()
        p = Path(path)
        if p.is_dir():
            self.client.log_artifacts(self.run_id, str(p), artifact_path)
        elif p.is_file():
            self.client.log_artifact(self.run_id, str(p), artifact_path)
        else:
            raise TrackingError(f"artifact {str(p)!r} does not exist")

    def try_log_artifact(self, path: str | Path, artifact_path: str | None = None) -> bool:
        """:meth:`log_artifact` that warns instead of raising when the store is away (a checkpoint copy: the
        next one, or the final model, is uploaded when it is back)."""
        try:
            with _one_attempt(self._away):
                self.log_artifact(path, artifact_path)
        except TrackingError:
            raise
        except Exception as e:  # noqa: BLE001 - transport/server errors only; a missing file raised above
            log.warning("run %s: %s not uploaded yet (%s: %s)", self.run_id, path, type(e).__name__, e)
            self._away = True
            return False
        self._away = False
        return True

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set tags (kept and sent later, like params, while the server is away)."""
        from mlflow.entities import RunTag

        self._check_open()
        with _one_attempt(self._away):
            self._away = not self._pending_tags.send([RunTag(k, str(v)) for k, v in tags.items()], self._send_tags)

    def _send_tags(self, tags: list[Any]) -> None:
        for i in range(0, len(tags), 100):  # MLflow's log_batch limit for tags
            self.client.log_batch(self.run_id, tags=tags[i:i + 100])

    def log_inputs(self, datasets: Sequence[Any]) -> None:
        """Dataset inputs (``mlflow.entities.DatasetInput``: the run page's and runs table's *Datasets*), kept and
        sent later, like tags, while the server is away. MLflow keeps one input per dataset and run: a retried
        task logging the same dataset again adds nothing."""
        self._check_open()
        with _one_attempt(self._away):
            self._away = not self._pending_inputs.send(list(datasets), self._send_inputs)

    def _send_inputs(self, datasets: list[Any]) -> None:
        self.client.log_inputs(self.run_id, datasets=datasets)

    def flush(self) -> None:
        """Send the metrics kept while the server was away (retried with backoff); a :class:`TrackingError`
        names the run and the count if they still cannot be sent."""
        try:
            self._pending_params.drain(self._send_params)
            self._pending_tags.drain(self._send_tags)
            self._pending_inputs.drain(self._send_inputs)
            self._metrics.drain(self._send_metrics)
        except RuntimeError as e:
            raise TrackingError(str(e)) from e
        self._away = False

    def close(self) -> None:
        if not self._closed:
            self.flush()
        self._closed = True
