"""MLflow tracking for pipeline runs: tracking URI, parent/child runs, metric logger (the MLflow Model Registry and
the champion: :mod:`mdfnet.champion`; every tag and param name, defined once: :mod:`mdfnet.tracking_names`).

Run layout (the same whoever creates the runs)::

    experiment <name>
      └─ pipeline run   (name = KFP run name; tags: kfp run id/name, git sha, package version, image tags,
         │               dataset fingerprint, grid; artefacts: exclusion/cleaning reports, comparison table)
         ├─ cell run    (name = "<cell>-s<seed>"; params: variant, fusion, backbone, feature_set, seed, grid,
         │               cell + every key of the resolved TrainConfig; per-epoch metrics; final val/test
         │               metrics; artefacts: config, reports, plots, predictions, the model as an MLflow model)
         └─ …           (one per grid cell × seed)

Names (identical in every run, so the MLflow UI lines runs up column by column):

==========================================  ======================================================================
name                                        meaning
==========================================  ======================================================================
params ``cell``, ``grid``                   grid cell name and grid file stem
params ``variant``, ``fusion``,             short labels of the cell (``feature_set``: the grid's name for the set,
``backbone``, ``feature_set``               ``all``, ``none`` or ``a+b``)
params ``seed``, ``model.*``, ``train.*``,  every key of the resolved ``TrainConfig`` (lists comma-joined)
``data.*``
metric ``train/<loss>``                     per epoch (step = optimiser steps): mean of each loss term
                                            (``loss_classifier``, ``loss_box_reg``, ``loss_mask``,
                                            ``loss_objectness``, ``loss_rpn_box_reg``) and ``train/loss_total``
metric ``train/sigma/<loss>``,              per epoch: uncertainty weight σ and log-variance of each loss term
``train/log_var/<loss>``
metric ``val/ap``, ``val/ar``               per evaluated epoch: validation AP/AR at IoBB 0.5 (selects the
                                            checkpoint)
metrics ``lr``, ``epoch``,                  per epoch: learning rate, epoch (fractional when stopped early),
``time/epoch_s``, ``time/val_s``,           timings and throughput
``train/images_per_s``
metric ``final/<split>/ap``,                after training, best checkpoint, split ``val`` or ``test``: AP/AR at
``final/<split>/ar``                        IoBB 0.5; ``final/val/ap`` ranks runs and picks the champion
metric ``final/<split>/ap/<class>``,        the same per class (``<class>`` = lower-case name with ``_``, e.g.
``final/<split>/ar/<class>``                ``enlarged_cardiac_silhouette``; classes without ground truth omitted)
metric ``final/<split>/lookalike_bacc``,    the look-alike pair (Consolidation vs Pulmonary edema): balanced
``final/<split>/lookalike_missed``          accuracy and misses, when both classes have ground truth
artefacts ``config/``, ``evaluation/``,     resolved config; metrics.json, COCO gt/predictions per split,
``model``                                   plots/; the model (MLflow pyfunc, mdfnet.serving)
pipeline run: params ``grid``, ``seeds``,   tags ``kfp.run_id``, ``kfp.run_name``, ``mdfnet.git_sha``,
``overrides``, ``cells``, ``runs``          ``mdfnet.version``, ``image.<step>``, ``mdfnet.dataset_fingerprint``,
                                            ``mdfnet.best_cell``, ``mdfnet.champion_decision``; artefacts
                                            ``reports/`` (exclusions, cleaning, splits) and ``comparison.md``
==========================================  ======================================================================

Two tracking modes (:func:`tracking_mode`):

- ``kfp-plugin``: KFP's MLflow integration (KEP-12862) created the runs and injected ``MLFLOW_RUN_ID`` (the
  task's nested run), ``MLFLOW_EXPERIMENT_ID`` and ``MLFLOW_TRACKING_URI``. A step logs into the runs that
  exist and creates none: the pipeline run is the parent of the task's run, a cell's run is the train task's
  run (renamed ``<cell>-s<seed>``); evaluation logs into that same cell run (its id travels in the model
  artefact's ``run.json``); compare/register tag the pipeline run. Runs KFP created are never ended here.
- ``self``: no ``MLFLOW_RUN_ID`` (``kfp.local``, clusters without the plugin): the pipeline creates the
  pipeline run (``expand_grid`` step) and one nested run per cell × seed (``train`` step) itself.

Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else the embedded default ``sqlite:///<abs cwd>/mlflow.db`` with
artefacts under ``<cwd>/mlartifacts`` (no server needed). This module imports ``mlflow`` lazily (inside
functions) so that ``import mdfnet.tracking`` stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from mdfnet.metrics_log import Backlog, MetricLogger, flatten_params
from mdfnet.provenance import dataset_fingerprint, git_sha  # noqa: F401 (tracking.* names)
from mdfnet.tracking_names import (  # noqa: F401 (also read as tracking.* by the tests and pipelines/)
    EXPERIMENT_TAGS,
    SELECTION_METRIC,
    TAG_CELL,
    TAG_FINGERPRINT,
    TAG_KFP_RUN_ID,
    TAG_MODE,
    TAG_PARENT,
    TAG_ROLE,
    TAG_RUN_NAME,
)

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_RUN_ID = "MLFLOW_RUN_ID"
ENV_EXPERIMENT_ID = "MLFLOW_EXPERIMENT_ID"

Mode = Literal["self", "kfp-plugin"]


class TrackingError(RuntimeError):
    """Tracking cannot proceed (missing run, bad URI); the message names the value and what was expected."""


# ------------------------------------------------------------------------------------------ URI / client
def default_tracking_uri(cwd: str | Path | None = None) -> str:
    """``sqlite:///<abs cwd>/mlflow.db``: the embedded store used when ``MLFLOW_TRACKING_URI`` is unset."""
    return f"sqlite:///{Path(cwd or os.getcwd()).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(cwd: str | Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set (non-empty), else :func:`default_tracking_uri`."""
    return os.environ.get(ENV_TRACKING_URI) or default_tracking_uri(cwd)


def local_artifact_root(tracking_uri: str) -> str | None:
    """Artefact root for experiments created in a local sqlite store: ``<db folder>/mlartifacts`` (file URI).

    ``None`` for servers (``http(s)://``, ``databricks``…): the server decides where artefacts go.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri[len("sqlite:///"):])
    if not db.is_absolute():
        db = Path(os.getcwd()) / db
    return (db.parent / "mlartifacts").resolve().as_uri()


def configure(cwd: str | Path | None = None) -> MlflowClient:
    """Point MLflow (fluent API, MLflow Model Registry) at :func:`resolve_tracking_uri`; return a client for it.

    Also turns MLflow's usage telemetry off unless the environment says otherwise (nothing leaves the machine).
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = resolve_tracking_uri(cwd)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def runs_page_url(tracking_uri: str, experiment_id: str, ui_base: str = "http://127.0.0.1:5000") -> str:
    """Link to the experiment's model-training runs table. MLflow 3's UI otherwise opens an overview page in its
    GenAI mode; the ``workflowType=machine_learning`` parameter selects the runs table (a headless-browser check
    showed the experiment tag alone does not)."""
    base = tracking_uri.rstrip("/") if urlparse(tracking_uri).scheme in ("http", "https") else ui_base
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def ui_command(tracking_uri: str, port: int = 5000) -> str:
    """Shell command that serves the MLflow UI for ``tracking_uri`` (a server URI needs none: open it)."""
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return f"open {tracking_uri}"
    root = local_artifact_root(tracking_uri)
    dest = f" --artifacts-destination {urlparse(root).path}" if root else ""
    return f"mlflow ui --backend-store-uri {tracking_uri}{dest} --host 127.0.0.1 --port {port}"


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """Id of experiment ``name``; created (with a local artefact root for sqlite stores) if missing."""
    if not name or not name.strip():
        raise TrackingError(f"experiment name must be a non-empty string, got {name!r}")
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = local_artifact_root(client.tracking_uri)
    location = f"{root}/{_slug(name)}" if root else None
    try:
        return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
    except Exception:  # created concurrently by another step
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


# ------------------------------------------------------------------------------------------ run context
def plugin_run_id() -> str | None:
    """``MLFLOW_RUN_ID`` injected by KFP's MLflow plugin (``None`` when unset or empty)."""
    return os.environ.get(ENV_RUN_ID) or None


def tracking_mode() -> Mode:
    return "kfp-plugin" if plugin_run_id() else "self"


@dataclass(frozen=True)
class PipelineRun:
    """The pipeline-level MLflow run every cell run nests under."""

    experiment_id: str
    run_id: str
    mode: Mode


def start_pipeline_run(client: MlflowClient, experiment: str, run_name: str, tags: dict[str, Any]) -> PipelineRun:
    """Create (``self`` mode) or find (``kfp-plugin`` mode) the pipeline run and set ``tags`` on it.

    ``self`` mode reuses the run of the same KFP run (tag :data:`~mdfnet.tracking_names.TAG_KFP_RUN_ID`) when a retried task asks again.

    In plugin mode the pipeline run is the parent of ``MLFLOW_RUN_ID`` (KFP's run for this task); if that
    run has no parent it is used itself. Nothing is created in plugin mode.
    """
    tags = {k: str(v) for k, v in tags.items()}
    task_run = plugin_run_id()
    if task_run:
        run = _get_run(client, task_run)
        parent_id = run.data.tags.get(TAG_PARENT) or task_run
        for k, v in {**tags, TAG_ROLE: "pipeline", TAG_MODE: "kfp-plugin"}.items():
            client.set_tag(parent_id, k, v)
        return PipelineRun(run.info.experiment_id, parent_id, "kfp-plugin")
    exp_id = get_or_create_experiment(client, experiment)
    existing = _find_run(client, exp_id, {TAG_ROLE: "pipeline", TAG_KFP_RUN_ID: tags.get(TAG_KFP_RUN_ID, "")})
    if existing is not None:  # a retried task of the same KFP run: the same pipeline run, reopened
        _reopen(client, existing, tags)
        return PipelineRun(exp_id, existing.info.run_id, "self")
    run = client.create_run(exp_id, run_name=run_name, tags={**tags, TAG_ROLE: "pipeline", TAG_MODE: "self"})
    return PipelineRun(exp_id, run.info.run_id, "self")


def _find_run(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> Any | None:
    """The oldest run of the experiment with all ``tags`` (None if a value is empty or nothing matches)."""
    if not all(tags.values()):
        return None
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time ASC"],
                              max_results=1)
    return runs[0] if runs else None


def _reopen(client: MlflowClient, run: Any, tags: dict[str, str]) -> None:
    """Back to RUNNING (a retry follows a failure) with ``tags`` refreshed."""
    if run.info.status != "RUNNING":
        client.update_run(run.info.run_id, status="RUNNING")
    for k, v in tags.items():
        client.set_tag(run.info.run_id, k, v)


def open_cell_run(client: MlflowClient, parent_run_id: str, run_name: str, tags: dict[str, Any]) -> str:
    """Run id of a cell run: ``MLFLOW_RUN_ID`` renamed to ``run_name`` (plugin mode) or the run ``run_name`` nested
    under ``parent_run_id`` (``self`` mode: created, or reopened when a retried task asks again). ``tags`` are set
    either way."""
    tags = {k: str(v) for k, v in tags.items()}
    task_run = plugin_run_id()
    if task_run:
        _get_run(client, task_run)
        client.update_run(task_run, name=run_name)
        for k, v in {**tags, TAG_ROLE: "cell", TAG_MODE: "kfp-plugin"}.items():
            client.set_tag(task_run, k, v)
        return task_run
    parent = _get_run(client, parent_run_id)
    existing = _find_run(client, parent.info.experiment_id, {TAG_PARENT: parent_run_id, TAG_ROLE: "cell",
                                                             TAG_RUN_NAME: run_name})
    if existing is not None:  # a retried train task: the same cell run, one continuous history
        _reopen(client, existing, tags)
        return existing.info.run_id
    run = client.create_run(parent.info.experiment_id, run_name=run_name,
                            tags={**tags, TAG_PARENT: parent_run_id, TAG_ROLE: "cell", TAG_MODE: "self"})
    return run.info.run_id


def finish_run(client: MlflowClient, run_id: str, status: Literal["FINISHED", "FAILED", "KILLED"] = "FINISHED") -> bool:
    """End a run this pipeline created (``self`` mode). Runs KFP created are left to KFP. Returns True if ended."""
    run = _get_run(client, run_id)
    if run.data.tags.get(TAG_MODE) != "self":
        return False
    client.set_terminated(run_id, status=status)
    return True


def _get_run(client: MlflowClient, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as e:
        raise TrackingError(f"MLflow run {run_id!r} not found at {client.tracking_uri}: {e.message}") from e


# ------------------------------------------------------------------------------------------ logger
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
    immutable). Metrics keep their names and step; artefacts may be files or folders. Params, tags and metrics that
    cannot reach the server are kept in order (:class:`~mdfnet.metrics_log.Backlog`) and sent with the next call
    that gets through, or by ``flush()``/``close()`` (retried with backoff, then a :class:`TrackingError`). Once a
    call found the server away, the next ones make one attempt each (:func:`_one_attempt`) until one gets through.
    ``close()`` does not end the run: run lifetimes belong to the step (or to KFP) that owns the run.
    """

    def __init__(self, run_id: str, client: MlflowClient | None = None) -> None:
        self.client = client or configure()
        self.run_id = run_id
        self._params: dict[str, str] = dict(_get_run(self.client, run_id).data.params)
        self._closed = False
        self._metrics = Backlog(f"metrics of MLflow run {run_id} at {self.client.tracking_uri}")
        self._pending_params = Backlog(f"params of MLflow run {run_id} at {self.client.tracking_uri}")
        self._pending_tags = Backlog(f"tags of MLflow run {run_id} at {self.client.tracking_uri}")
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

    def flush(self) -> None:
        """Send the metrics kept while the server was away (retried with backoff); a :class:`TrackingError`
        names the run and the count if they still cannot be sent."""
        try:
            self._pending_params.drain(self._send_params)
            self._pending_tags.drain(self._send_tags)
            self._metrics.drain(self._send_metrics)
        except RuntimeError as e:
            raise TrackingError(str(e)) from e
        self._away = False

    def close(self) -> None:
        if not self._closed:
            self.flush()
        self._closed = True
