"""Reading an experiment's evaluated cell runs from MLflow (params, final metrics, metric histories and the
evaluate step's artefacts), and their bootstrap intervals from the stored COCO ground truth and predictions
(:class:`Artefacts`: each downloaded once)."""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mdfnet.cells import KEYS, RunResult
from mdfnet.tracking_names import LABEL_KEYS, PARAM_CELL, PARAM_SEED, SELECTION_METRIC, TAG_PARENT, TAG_ROLE

log = logging.getLogger(__name__)
T = TypeVar("T")
N_BOOT = 200
"""Bootstrap resamples of the report's intervals and of the paired Δ test AP (report and compare step)."""


class ReportError(ValueError):
    """The report cannot be built; the message names the experiment, run or artefact."""


@dataclass(frozen=True)
class Experiment:
    """The experiment, the pipeline runs read, and their evaluated cell runs (MLflow ``Run`` objects)."""

    experiment_id: str
    name: str
    pipeline_run_ids: list[str]
    runs: list[Any]


def find_runs(client: Any, experiment: str, pipeline_run: str | None = None) -> Experiment:
    """Cell runs of ``experiment`` (of one pipeline run, or all) that finished with ``final/val/ap``."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ReportError(f"experiment {experiment!r} not found at {client.tracking_uri}")
    query = f"tags.`{TAG_ROLE}` = 'cell'"
    if pipeline_run:
        query += f" and tags.`{TAG_PARENT}` = '{pipeline_run}'"
    runs = client.search_runs([exp.experiment_id], filter_string=query, max_results=5000)
    done = [r for r in runs if r.info.status == "FINISHED" and SELECTION_METRIC in r.data.metrics]
    if not done:
        where = f"pipeline run {pipeline_run}" if pipeline_run else "any pipeline run"
        raise ReportError(f"experiment {experiment!r}: no finished cell run with {SELECTION_METRIC} in {where}")
    if len(done) < len(runs):
        log.warning("report: %d of %d cell runs are not finished/evaluated and are left out", len(runs) - len(done),
                    len(runs))
    parents = sorted({r.data.tags.get(TAG_PARENT, "") for r in done} - {""})
    return Experiment(exp.experiment_id, experiment, parents, done)


def download(client: Any, run_id: str, path: str, read: Callable[[Path], T]) -> T | None:
    """``read(local copy)`` of an artefact of a run, or None when the run has no such artefact."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="mdfnet-report-") as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError):
            return None
        return read(Path(local))


def download_json(client: Any, run_id: str, path: str) -> Any | None:
    """An artefact of a run parsed as JSON, or None when the run has no such artefact."""
    return download(client, run_id, path, lambda p: json.loads(p.read_text()))


def scoring(run: Any) -> dict[str, Any]:
    """The run's scoring settings (``max_dets``, ``score_threshold``) as the evaluate step used them."""
    p = run.data.params
    return {"max_dets": int(float(p.get("model.box_detections_per_img", 10))),
            "score_threshold": float(p.get("model.box_score_thresh", 0.05))}


class Artefacts:
    """The evaluate step's COCO ground truth and predictions of runs (``evaluation/gt_<split>.json``,
    ``predictions_<split>.json``) with the run's scoring settings, each downloaded once per report."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._scored: dict[tuple[str, str], Any] = {}

    def scored(self, run_id: str, split: str = "test") -> Any | None:
        """The run's :class:`~mdfnet.evaluation.Scored` on ``split``, or None when its artefacts are missing."""
        from mdfnet.evaluation import Scored

        key = (run_id, split)
        if key not in self._scored:
            gt = download_json(self.client, run_id, f"evaluation/gt_{split}.json")
            dets = download_json(self.client, run_id, f"evaluation/predictions_{split}.json")
            self._scored[key] = (None if gt is None or dets is None
                                 else Scored(gt, dets, **scoring(self.client.get_run(run_id))))
        return self._scored[key]


def intervals(client: Any, run: Any, n_boot: int, seed: int = 0,
              artefacts: Artefacts | None = None) -> dict[str, tuple[float, float]]:
    """95 % bootstrap intervals (``KEYS`` → (lo, hi)) from the run's ``evaluation/gt_<split>.json`` and
    ``predictions_<split>.json``; empty for a split whose artefacts are missing."""
    from mdfnet.evaluation import EvaluationError, bootstrap

    out: dict[str, tuple[float, float]] = {}
    if n_boot < 1:
        return out
    artefacts = artefacts or Artefacts(client)
    for split in ("test", "val"):
        s = artefacts.scored(run.info.run_id, split)
        if s is None:
            continue
        try:
            b = bootstrap(s.gt, s.dets, n=n_boot, seed=seed, overlap="iobb", thresholds=(0.5,), max_dets=s.max_dets,
                          score_threshold=s.score_threshold)
        except EvaluationError as e:
            log.warning("report: no interval for %s %s: %s", run.info.run_name, split, e)
            continue
        out[f"{split}/ap"], out[f"{split}/ar"] = tuple(b.ap), tuple(b.ar)
    return out


def run_result(client: Any, run: Any, n_boot: int, artefacts: Artefacts | None = None) -> RunResult:
    """One MLflow cell run → :class:`~mdfnet.cells.RunResult` (intervals computed here)."""
    p = run.data.params
    metrics = {k: float(v) for k, v in run.data.metrics.items() if math.isfinite(float(v))}
    return RunResult(run.info.run_id, run.info.run_name, p.get(PARAM_CELL, run.info.run_name),
                     int(float(p.get(PARAM_SEED, 0))), {k: p.get(k, "") for k in LABEL_KEYS}, metrics,
                     intervals(client, run, n_boot, artefacts=artefacts))


def history(client: Any, run_id: str, key: str) -> list[tuple[float, float]]:
    """``(epoch, value)`` of a per-epoch metric (the ``epoch`` metric logged at the same step)."""
    epochs = {m.step: m.value for m in client.get_metric_history(run_id, "epoch")}
    return sorted((epochs.get(m.step, float(m.step)), m.value) for m in client.get_metric_history(run_id, key))


__all__ = ["KEYS", "Artefacts", "Experiment", "ReportError", "download", "download_json", "find_runs", "history", "intervals",
           "run_result", "scoring"]
