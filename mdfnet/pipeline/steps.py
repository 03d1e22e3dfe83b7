"""Pipeline steps as plain functions: what the KFP components (``components/``) call, testable without KFP.

=============  ============================================================================================
step           function
=============  ============================================================================================
join           :func:`join_step` (source: local folder or ``s3://bucket/prefix``) → joined folder + report
preprocess     :func:`preprocess_step` → preprocessed folder + cleaning report
expand_grid    :func:`expand_grid_step` → one :class:`~mdfnet.pipeline.grids.GridItem` per cell × seed (as a dict);
               the pipeline's MLflow run is created (or, with KFP's MLflow plugin, found) here
train          :func:`train_step` → model folder (checkpoint, ``run.json``); logs into the cell's MLflow run
evaluate       :func:`evaluate_step` → val/test metrics, plots, COCO predictions; logs into the same run
compare        :func:`compare_step` → Markdown table of all cells, best run by validation AP, the run's report
               (:func:`mdfnet.report.build_report`, HTML for the KFP UI)
register       :func:`register_step` → MLflow model version; alias ``champion`` moved only if better
=============  ============================================================================================

Every function takes paths and plain values and returns JSON-ready dicts or lists (KFP passes those between
tasks); those that track take an MLflow ``client`` (default: :func:`mdfnet.tracking.configure`). A cell's
config is parsed once, in :func:`expand_grid_step` (:func:`~mdfnet.pipeline.grids.plan_grid`), and travels as data.
MLflow names: :mod:`mdfnet.tracking_names` (the runs: :mod:`mdfnet.tracking`); run-folder names:
:mod:`mdfnet.training.run_folder`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mdfnet import champion, system_metrics, tracking
from mdfnet import tracking_names as names
from mdfnet.cells import RunResult, best_run, cell_stats, headline_metrics, reference_cell, selection_score
from mdfnet.pipeline.durable import durable_checkpoints, resume_point
from mdfnet.pipeline.errors import StepError
from mdfnet.pipeline.grids import GridItem, plan_grid
from mdfnet.pipeline.sources import fetch_source
from mdfnet.report.comparison import comparison_markdown, comparison_page, ranking_rows
from mdfnet.report.render import markdown_table, plots_html
from mdfnet.tracking_datasets import log_data_and_source, source_tags
from mdfnet.training.run_folder import RunFolder

log = logging.getLogger(__name__)

RUN_INFO = "run.json"
"""File in a train step's model folder: the grid item, its run id, model URI and training summary."""


@contextlib.contextmanager
def _failing_marks(client: Any, run_id: str):
    """If the block raises, end MLflow run ``run_id`` as FAILED (then re-raise)."""
    try:
        yield
    except BaseException:
        try:
            tracking.finish_run(client, run_id, "FAILED")
        except Exception as e:  # noqa: BLE001 - the server may be what failed: never hide the step's own error
            log.warning("run %s could not be marked FAILED (%s: %s)", run_id, type(e).__name__, e)
        raise


# ------------------------------------------------------------------------------------------ join / preprocess
def join_step(source_uri: str, out_dir: str | Path, keep_negatives: bool = True, min_certainty: int = 1,
              download_dir: str | Path | None = None, keep_discarded_eye_tracking: bool = False) -> dict[str, Any]:
    """Join the four sources (local or S3, downloaded to ``download_dir`` or a temporary folder) into ``out_dir``;
    return counts and a Markdown exclusion report. Options: :func:`mdfnet.data.join.join`'s."""
    from mdfnet.data.join import join

    with tempfile.TemporaryDirectory(prefix="mdfnet-source-") as tmp:  # S3 downloads live only during the join
        src = fetch_source(source_uri, download_dir or tmp)
        # copied (hard-linked where possible): the joined Dataset must not depend on the source location
        res = join(src, out_dir, keep_negatives=keep_negatives, min_certainty=min_certainty, copy_images=True,
                   keep_discarded_eye_tracking=keep_discarded_eye_tracking, source_uri=source_uri)
    report = "\n".join([
        f"# Join of `{source_uri}`", "",
        f"{res.n_kept} of {res.n_input} REFLACX readings kept ({res.n_excluded} excluded), {res.n_boxes} boxes.", "",
        markdown_table(["exclusion reason", "readings"], sorted(res.exclusions.items())),
    ])
    return {"n_input": res.n_input, "n_kept": res.n_kept, "n_boxes": res.n_boxes,
            "exclusions": dict(res.exclusions), "report_markdown": report}


def preprocess_step(joined_dir: str | Path, out_dir: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Clean, split and cache (``PreprocessConfig`` from ``overrides``); return counts and a Markdown report."""
    from mdfnet.config import load_config, to_dict
    from mdfnet.data.preprocess import PreprocessConfig, preprocess

    cfg = load_config(PreprocessConfig, None, list(overrides))
    res = preprocess(joined_dir, out_dir, cfg)
    changed = res.cleaning[res.cleaning["count"] > 0]
    report = "\n".join([
        "# Preprocessing", "", f"config: `{json.dumps(to_dict(cfg))}`", "", "## Cleaning",
        markdown_table(["column", "rule", "count"], changed[["column", "rule", "count"]].itertuples(index=False)),
        "", "## Splits (by patient)",
        markdown_table(list(res.split_counts.columns), res.split_counts.itertuples(index=False)),
    ])
    splits = {str(r.split): int(r.readings) for r in res.split_counts.itertuples()}
    return {"n_images": res.n_images, "splits": splits, "report_markdown": report}


# ------------------------------------------------------------------------------------------ grid
def expand_grid_step(grids: Mapping[str, Mapping[str, Any]], grid: str, seeds: Sequence[int],
                     overrides: Sequence[str], data_dir: str | Path, experiment: str, run_name: str,
                     kfp_run_id: str = "", image_tags: Mapping[str, str] | None = None, client: Any = None,
                     train_device: str | None = None) -> list[dict[str, Any]]:
    """Plan grid × seeds (:func:`~mdfnet.pipeline.grids.plan_grid`: every cell validated here, so a bad override
    fails before any training starts) and open the pipeline's MLflow run; returns one
    :class:`~mdfnet.pipeline.grids.GridItem` dict per cell × seed. ``train_device``: ``train.device`` of every
    cell, applied after the grid's base and before ``overrides`` (None: the grid's own)."""
    from mdfnet import __version__

    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise StepError(f"seeds must be a non-empty list of distinct integers, got {seeds}")
    planned = plan_grid(grids, grid, overrides, device=train_device)
    client = client or tracking.configure()
    tags = {names.TAG_KFP_RUN_ID: kfp_run_id, names.TAG_KFP_RUN_NAME: run_name, names.TAG_GIT_SHA: tracking.git_sha(),
            names.TAG_VERSION: __version__, names.TAG_FINGERPRINT: tracking.dataset_fingerprint(data_dir),
            names.TAG_GRID: grid, **{f"{names.TAG_IMAGE_PREFIX}{k}": v for k, v in (image_tags or {}).items()},
            **source_tags("expand_grid_step")}
    parent = tracking.start_pipeline_run(client, experiment, run_name, tags)
    plog = tracking.MlflowLogger(parent.run_id, client)
    plog.log_params({names.PARAM_GRID: grid, names.PARAM_SEEDS: ",".join(map(str, seeds)),
                     names.PARAM_OVERRIDES: " ".join(overrides) or "-", names.PARAM_CELLS: len(planned),
                     names.PARAM_RUNS: len(planned) * len(seeds)})
    for name in ("exclusions.csv", "cleaning.csv", "splits.csv", "preprocessing.json", "join_meta.json",
                 "correlation.csv"):
        if (Path(data_dir) / name).is_file():
            plog.log_artifact(Path(data_dir) / name, "reports")
    return [GridItem.of(cell, seed, grid, parent.run_id, parent.experiment_id).to_dict()
            for cell in planned for seed in seeds]


# ------------------------------------------------------------------------------------------ train / evaluate
def train_step(item: Mapping[str, Any], data_dir: str | Path, out_dir: str | Path, max_steps: int | None = None,
               client: Any = None) -> dict[str, Any]:
    """Train one grid item into ``out_dir``; log params, the train/val/test splits as dataset inputs and the
    source tags (:mod:`mdfnet.tracking_datasets`), per-epoch metrics, config and the served model (MLflow pyfunc,
    :func:`mdfnet.serving.pyfunc.log_served_model`) into the item's cell run. Checkpoints are copied to
    durable storage as they are written (:mod:`mdfnet.pipeline.durable`); a retried task resumes from them.
    Writes ``out_dir/run.json``; returns its content."""
    from mdfnet.serving.predictor import Predictor
    from mdfnet.serving.pyfunc import log_served_model
    from mdfnet.training import train

    it = GridItem.from_dict(item)
    cfg = it.train_config()
    client = client or tracking.configure()
    run_id = tracking.open_cell_run(client, it.parent_run_id, it.run_name,
                                    {names.TAG_CELL: it.cell, names.TAG_GRID: it.grid})
    logger = tracking.MlflowLogger(run_id, client)
    out_dir = Path(out_dir)
    folder = RunFolder(out_dir)
    with _failing_marks(client, run_id):
        logger.log_params({names.PARAM_CELL: it.cell, names.PARAM_GRID: it.grid,
                           **{k: it.labels[k] for k in names.LABEL_KEYS}})
        log_data_and_source(logger, data_dir, "train_step")  # datasets, source tags: kept while the server is away
        store = durable_checkpoints(client, run_id, logger, it.parent_run_id, it.run_name)
        with system_metrics.monitor(client, run_id, cfg.train.system_metrics_s):
            res = train(cfg, data_dir, out_dir, logger=logger, max_steps=max_steps or None,
                        resume=resume_point(store, out_dir), on_checkpoint=store.upload)
        logger.flush()  # metrics kept while the tracking server was away are sent now (or the step fails, named)
        best = res.best_checkpoint or res.last_checkpoint
        try:
            if not store.flush():  # checkpoints an outage kept back: a rerun resumes from them
                raise ConnectionError(f"the last checkpoints could not be copied to {store.where}")
            logger.log_artifact(folder.config, "config")  # train() wrote it
            model_uri = log_served_model(client, run_id, Predictor.from_checkpoint(best, data_dir))
        except Exception as e:  # noqa: BLE001 - the store's errors; named, and a rerun resumes from the checkpoints
            raise tracking.TrackingError(
                f"cell run {run_id}: the trained model could not be stored at {client.tracking_uri} "
                f"({type(e).__name__}: {e}); the checkpoints are in {folder.checkpoints} and {store.where}: "
                "a rerun of the step resumes from them") from e
    info = {**it.to_dict(), "run_id": run_id, "model_uri": model_uri, "checkpoint": best.name,
            "best_val_ap": res.best_val_ap, "best_epoch": res.best_epoch, "steps": res.steps,
            "mode": tracking.tracking_mode()}
    (out_dir / RUN_INFO).write_text(json.dumps(info, indent=2))
    return info


def evaluate_step(model_dir: str | Path, data_dir: str | Path, out_dir: str | Path, batch_size: int = 4,
                  client: Any = None) -> dict[str, Any]:
    """Score the trained model on val and test (IoBB 0.5, and the look-alike pair's balanced accuracy and misses,
    :func:`mdfnet.training.inference.score_split`; FROC, :func:`mdfnet.evaluation.froc`); write ``metrics.json``,
    COCO ground truth and predictions per split, PR/count/sweep plots (test); log all into the cell run and end it
    (``self`` mode).

    Returns the summary that :func:`compare_step` ranks: the item's fields, ``run_id``, ``model_uri`` and ``metrics``.
    """
    from mdfnet.evaluation import froc, save_plots
    from mdfnet.training import load_model
    from mdfnet.training.inference import score_split

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    info_path = model_dir / RUN_INFO
    if not info_path.is_file():
        raise StepError(f"{info_path} not found: {model_dir} is not the output of the train step")
    info = json.loads(info_path.read_text())
    model, cfg = load_model(RunFolder(model_dir).checkpoints / info["checkpoint"])
    client = client or tracking.configure()
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, float] = {}
    summary: dict[str, Any] = {}
    with _failing_marks(client, info["run_id"]):
        for split in ("val", "test"):
            scored = score_split(model, cfg, data_dir, split, batch_size=batch_size)
            curve = froc(scored.gt, scored.dets, max_dets=scored.result.max_dets,
                         score_threshold=scored.result.score_threshold)  # same matching and limits as the AP
            metrics.update({**scored.metrics(f"final/{split}"), **curve.metrics(f"final/{split}")})
            summary[split] = {**scored.result.to_dict(), "lookalike": scored.pair.to_dict(), "froc": curve.to_dict()}
            (out_dir / f"gt_{split}.json").write_text(json.dumps(scored.gt))
            (out_dir / f"predictions_{split}.json").write_text(json.dumps(scored.dets))
        plots = save_plots(scored.result, out_dir / "plots", scored.sweep())  # the test split
        metrics.update(_attribution(model, cfg, data_dir, out_dir, batch_size))
        (out_dir / "metrics.json").write_text(json.dumps({"metrics": metrics, **summary}, indent=2))
        logger = tracking.MlflowLogger(info["run_id"], client)
        logged = client.get_run(info["run_id"]).data.metrics  # a retried evaluate task logs nothing twice
        logger.log_metrics({k: v for k, v in metrics.items() if logged.get(k) != v}, step=int(info.get("steps") or 0))
        logger.log_artifact(out_dir, "evaluation")
    tracking.finish_run(client, info["run_id"])
    (out_dir / "plots.html").write_text(plots_html(plots, f"{info['run_name']}: test split"))
    keep = ("cell", "seed", "grid", "run_name", "labels", "parent_run_id", "experiment_id", "run_id", "model_uri",
            "best_epoch", "steps")
    return {**{k: info.get(k) for k in keep}, "metrics": headline_metrics(metrics)}  # the rest: MLflow, metrics.json


def _attribution(model: Any, cfg: Any, data_dir: str | Path, out_dir: Path, batch_size: int) -> dict[str, float]:
    """``eval.attribution_repeats`` > 0 and a model with a clinical path: the clinical attribution on val
    (:func:`mdfnet.training.attribution.clinical_attribution`) → ``attribution.json`` and its headline metrics."""
    from mdfnet.model import VARIANTS
    from mdfnet.training.attribution import clinical_attribution

    if not cfg.eval.attribution_repeats or not cfg.data.features or not VARIANTS[cfg.model.variant].uses_clinical:
        return {}
    att = clinical_attribution(model, cfg, data_dir, "val", cfg.eval.attribution_repeats, cfg.seed, batch_size)
    (out_dir / "attribution.json").write_text(json.dumps(att, indent=2))
    return {"final/val/ap_train_medians": att["ap_train_medians"],
            **{f"final/val/importance/{f}": v["importance_mean"] for f, v in att["features"].items()}}


# ------------------------------------------------------------------------------------------ compare / register
def compare_step(results: Sequence[Mapping[str, Any]], client: Any = None) -> dict[str, Any]:
    """Rank cells by mean validation AP over seeds (:func:`mdfnet.cells.cell_stats`); returns ``best`` (the
    summary of the best seed of the best cell), ``ranking`` (cell rows), ``markdown`` (the comparison table) and
    ``html``: the pipeline run's report (:func:`_pipeline_report`), or the comparison table's page when there is
    no pipeline run or its report failed. With a pipeline run, the table and the rows carry each cell's paired
    Δ test AP against :func:`mdfnet.cells.reference_cell` (the baseline) with its 95 % interval and verdict
    (:mod:`mdfnet.report.deltas`). The table is also logged to the pipeline run (``comparison.md``, and as
    its description, which the MLflow UI shows on the run's page) with tag ``mdfnet.best_cell``."""
    if not results:
        raise StepError("compare needs at least one evaluated run, got none")
    runs = [RunResult.from_summary(r) for r in results]
    cells = cell_stats(runs)
    top = best_run(cells)
    best = dict(next(summary for run, summary in zip(runs, results, strict=True) if run is top))
    reference, deltas, page = reference_cell(cells), None, None
    if best.get("parent_run_id"):
        client = client or tracking.configure()
        deltas = _test_ap_deltas(client, cells, reference)
    md = comparison_markdown(cells, top, reference, deltas)
    if best.get("parent_run_id"):
        tracking.MlflowLogger(best["parent_run_id"], client).set_tags(  # the note is the run's description
            {names.TAG_BEST_CELL: cells[0].cell, names.TAG_BEST_RUN: top.run_name, names.TAG_NOTE: md})
        client.log_text(best["parent_run_id"], md, "comparison.md")
        page = _pipeline_report(client, best)
    return {"best": best, "ranking": ranking_rows(cells, reference, deltas), "markdown": md,
            "html": page if page is not None else comparison_page(cells, top, reference, deltas)}


def _test_ap_deltas(client: Any, cells: Sequence[Any], reference: Any) -> dict[str, Any] | None:
    """Each cell's paired Δ test AP against ``reference`` from the runs' stored test predictions
    (:mod:`mdfnet.report.deltas`); None, logged, when they cannot be read: the ranking must still reach register."""
    from mdfnet.report.collect import Artefacts
    from mdfnet.report.deltas import paired_deltas

    try:
        return paired_deltas(Artefacts(client), cells, reference)
    except Exception:  # noqa: BLE001 - logged; the table is shown without Δ
        log.exception("no paired Δ test AP against %s", reference.cell)
        return None


def _pipeline_report(client: Any, best: Mapping[str, Any]) -> str | None:
    """The pipeline run's ``mdfnet report`` (:func:`mdfnet.report.build_report`), logged under ``report/`` on the
    pipeline run; returns its HTML. A report that fails is tagged (``mdfnet.report_error``) and logged, and the
    comparison table stands in for it: the ranking must still reach ``register``."""
    from mdfnet.report import build_report

    parent = str(best["parent_run_id"])
    try:
        experiment = client.get_experiment(str(best["experiment_id"])).name
        with tempfile.TemporaryDirectory(prefix="mdfnet-report-") as tmp:
            report = build_report(client, experiment, tmp, pipeline_run=parent)
            for path in report.files:
                client.log_artifact(parent, str(path), "report")
        return report.html
    except Exception as e:  # noqa: BLE001 - reported on the run and in the log, never silently
        log.exception("report of pipeline run %s failed", parent)
        client.set_tag(parent, names.TAG_REPORT_ERROR, f"{type(e).__name__}: {e}"[:5000])
        return None


def register_step(best: Mapping[str, Any], model_name: str, client: Any = None,
                  card_bootstrap: int = 200) -> dict[str, Any]:
    """Register the best run's model as a new version of ``model_name``; move alias ``champion`` only if its
    validation AP beats the champion's (:func:`mdfnet.champion.register_champion`). The version's description
    and tags are its model card (:func:`mdfnet.model_card.write_card`; ``card_bootstrap`` resamples for its
    intervals). The decision is tagged on the pipeline run, which then ends (``self`` mode). Returns the decision
    plus ``champion_version``."""
    from mdfnet.model_card import write_card

    if not best.get("model_uri") or not best.get("run_id"):
        raise StepError(f"register needs a run summary with model_uri and run_id, got keys {sorted(best)}")
    client = client or tracking.configure()
    score = selection_score(best.get("metrics") or {})
    decision = champion.register_champion(client, model_name, str(best["model_uri"]), str(best["run_id"]),
                                          score if math.isfinite(score) else math.nan)
    out = {**decision.to_dict(), "champion_version": champion.champion_version(client, model_name)}
    write_card(client, model_name, decision.version, decision.run_id, decision.reason, card_bootstrap)
    parent = best.get("parent_run_id")
    if parent:
        tracking.MlflowLogger(parent, client).set_tags({
            names.TAG_REGISTERED_VERSION: decision.version, names.TAG_CHAMPION_DECISION: decision.reason,
            names.TAG_CHAMPION_VERSION: out["champion_version"]})
        tracking.finish_run(client, parent)
    return out
