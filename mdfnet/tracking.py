"""MLflow tracking for pipeline runs: tracking URI, parent/child runs (the metric logger, re-exported here:
:mod:`mdfnet.tracking_logger`; the datasets and source tags of a cell run: :mod:`mdfnet.tracking_datasets`; the
MLflow Model Registry and the champion: :mod:`mdfnet.champion`, the version's model card: :mod:`mdfnet.model_card`;
every tag and param name, defined once: :mod:`mdfnet.tracking_names`).

Run layout (the same whoever creates the runs)::

    experiment <name>
      └─ pipeline run   (name = KFP run name; tags: kfp run id/name, git sha, package version, image tags,
         │               dataset fingerprint, grid; artefacts: exclusion/cleaning reports, comparison table)
         ├─ cell run    (name = "<cell>-s<seed>"; params: variant, fusion, backbone, feature_set, seed, grid,
         │               cell + every key of the resolved TrainConfig; dataset inputs train/val/test; source
         │               tags; per-epoch metrics; final val/test metrics; artefacts: config, reports, plots,
         │               predictions, the model as an MLflow model, the registered version's model_card.md)
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

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from mdfnet.provenance import dataset_fingerprint, git_sha  # noqa: F401 (tracking.* names)
from mdfnet.tracking_logger import ONE_ATTEMPT, MlflowLogger, TrackingError, _get_run  # noqa: F401 (tracking.*)
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
    if exp is not None and exp.lifecycle_stage == "deleted":  # MLflow refuses runs in it with an opaque error
        raise TrackingError(
            f"experiment {name!r} (id {exp.experiment_id}) is deleted in {client.tracking_uri} (MLflow keeps it in "
            f"its trash, so the name stays taken): restore it with `mlflow experiments restore --experiment-id "
            f"{exp.experiment_id}` or choose another experiment name")
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
