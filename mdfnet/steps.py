"""Pipeline steps as plain functions: what the KFP components (``components/``) call, testable without KFP.

=============  ============================================================================================
step           function
=============  ============================================================================================
join           :func:`join_step` (source: local folder or ``s3://bucket/prefix``) → joined folder + report
preprocess     :func:`preprocess_step` → preprocessed folder + cleaning report
expand_grid    :func:`expand_grid` → one item per grid cell × seed (pipeline MLflow run created/found here)
train          :func:`train_step` → model folder (checkpoint, ``run.json``); logs into the cell's MLflow run
evaluate       :func:`evaluate_step` → val/test metrics, plots, COCO predictions; logs into the same run
compare        :func:`compare` → Markdown/HTML table of all cells, best run by validation AP
register       :func:`register` → MLflow model version; alias ``champion`` moved only if better
=============  ============================================================================================

Every function takes paths and plain values and returns JSON-ready dicts or lists (KFP passes those between
tasks). Grids (``pipelines/grids/*.yaml``) are mappings::

    name: paper-fusion
    description: ...
    base: [train.epochs=100]            # overrides for every cell (optional)
    include: [paper-variants]           # cells of other grids, in order (optional)
    cells:                              # (optional)
      - {name: concat_conv, feature_set: all, set: [model.fusion=concat_conv]}

A cell's config is ``defaults ← grid base ← pipeline overrides ← cell set ← seed``. Cells whose resolved
config repeats an earlier cell's are dropped (so ``full`` = the union of the paper's ablations). MLflow
names: see :mod:`mdfnet.tracking`.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
import re
import shutil
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mdfnet import tracking

log = logging.getLogger(__name__)

RUN_INFO = "run.json"
"""File in a train step's model folder: cell run id, model URI, the grid item, training summary."""

LABEL_KEYS = ("variant", "fusion", "backbone", "feature_set")
"""Short params every cell run carries (same names in every run, so the MLflow UI can group by them)."""


class StepError(RuntimeError):
    """A step got inputs it cannot use; the message names the value and what was expected."""


# ------------------------------------------------------------------------------------------ source
def fetch_source(uri: str, dest: str | Path) -> Path:
    """Local folder → itself; ``s3://bucket/prefix`` → every object under the prefix downloaded to ``dest``.

    The S3 endpoint is ``AWS_ENDPOINT_URL`` or ``MLFLOW_S3_ENDPOINT_URL`` (else AWS); credentials come from the
    usual boto3 environment (a Kubernetes Secret in the cluster).
    """
    parsed = urlparse(str(uri))
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme == "file" else str(uri))
        if not path.is_dir():
            raise StepError(f"source {uri!r} is not an existing folder (expected a local path or s3://bucket/prefix)")
        return path
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StepError(f"source {uri!r}: unsupported scheme {parsed.scheme!r}; expected a local path or s3://bucket/prefix")
    import boto3

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None
    s3 = boto3.client("s3", endpoint_url=endpoint)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    dest = Path(dest)
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.endswith("/"):
                continue
            target = dest / key[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(target))
            n += 1
    if n == 0:
        raise StepError(f"source {uri!r} holds no objects (bucket {bucket!r}, prefix {prefix!r})")
    log.info("downloaded %d objects from %s to %s", n, uri, dest)
    return dest


def _markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ join / preprocess
def join_step(source_uri: str, out_dir: str | Path, keep_negatives: bool = True, min_certainty: int = 1,
              download_dir: str | Path | None = None) -> dict[str, Any]:
    """Join the four sources (local or S3, downloaded to ``download_dir`` or a temporary folder) into ``out_dir``;
    return counts and a Markdown exclusion report."""
    import tempfile

    from mdfnet.data.join import join

    with tempfile.TemporaryDirectory(prefix="mdfnet-source-") as tmp:  # S3 downloads live only during the join
        src = fetch_source(source_uri, download_dir or tmp)
        # copied (hard-linked where possible): the joined Dataset must not depend on the source location
        res = join(src, out_dir, keep_negatives=keep_negatives, min_certainty=min_certainty, copy_images=True)
    report = "\n".join([
        f"# Join of `{source_uri}`", "",
        f"{res.n_kept} of {res.n_input} REFLACX readings kept ({res.n_excluded} excluded), {res.n_boxes} boxes.", "",
        _markdown_table(["exclusion reason", "readings"], sorted(res.exclusions.items())),
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
        _markdown_table(["column", "rule", "count"], changed[["column", "rule", "count"]].itertuples(index=False)),
        "", "## Splits (by patient)",
        _markdown_table(list(res.split_counts.columns), res.split_counts.itertuples(index=False)),
    ])
    splits = {str(r.split): int(r.readings) for r in res.split_counts.itertuples()}
    return {"n_images": res.n_images, "splits": splits, "report_markdown": report}


# ------------------------------------------------------------------------------------------ grids
def load_grids(folder: str | Path) -> dict[str, dict[str, Any]]:
    """Every ``*.yaml`` grid of ``folder`` keyed by its ``name`` (which must equal the file stem)."""
    import yaml

    grids: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        spec = yaml.safe_load(path.read_text()) or {}
        if not isinstance(spec, dict) or spec.get("name") != path.stem:
            raise StepError(f"grid {path}: expected a mapping with name: {path.stem!r}")
        grids[path.stem] = spec
    return grids


def _feature_set_name(features: Sequence[str], shuffled: bool = False) -> str:
    """``all`` / ``none`` / ``age+gender``…; ``-shuffled`` appended for the shuffled-clinical control."""
    from mdfnet.data import schema

    if list(features) == list(schema.ALL_FEATURES):
        name = "all"
    else:
        name = "+".join(features) if features else "none"
    return f"{name}-shuffled" if shuffled and features else name


def grid_cells(grids: Mapping[str, Mapping[str, Any]], name: str, _seen: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Cells of grid ``name`` (includes resolved first): ``[{"name", "base": [...], "set": [...], "feature_set"?}]``
    where ``base`` collects the ``base`` overrides of the including grids (outermost first); cells with the
    same ``base + set`` as an earlier cell are dropped."""
    if name not in grids:
        raise StepError(f"unknown grid {name!r}; expected one of {sorted(grids)}")
    if name in _seen:
        raise StepError(f"grid {name!r} includes itself ({' -> '.join((*_seen, name))})")
    spec = grids[name]
    base = [str(s) for s in spec.get("base") or []]
    cells: list[dict[str, Any]] = []
    for inc in spec.get("include") or []:
        cells += [{**c, "base": base + c["base"]} for c in grid_cells(grids, inc, (*_seen, name))]
    for c in spec.get("cells") or []:
        if not isinstance(c, dict) or not c.get("name"):
            raise StepError(f"grid {name!r}: each cell needs a name and a set list, got {c!r}")
        cells.append({**c, "base": base, "set": [str(s) for s in c.get("set") or []]})
    out, seen_sets, seen_names = [], set(), set()
    for c in cells:
        key = (*c["base"], *c["set"])
        if key in seen_sets:
            continue
        if c["name"] in seen_names:
            raise StepError(f"grid {name!r}: two different cells are named {c['name']!r}")
        seen_sets.add(key)
        seen_names.add(c["name"])
        out.append(c)
    if not out:
        raise StepError(f"grid {name!r} has no cells")
    return out


def expand_grid(grids: Mapping[str, Mapping[str, Any]], grid: str, seeds: Sequence[int], overrides: Sequence[str],
                data_dir: str | Path, experiment: str, run_name: str, kfp_run_id: str = "",
                image_tags: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Resolve grid × seeds into loop items and open the pipeline's MLflow run.

    Each item: ``cell``, ``seed``, ``grid``, ``run_name`` (``<cell>-s<seed>``), ``overrides`` (complete list),
    ``labels`` (variant, fusion, backbone, feature_set), ``parent_run_id``, ``experiment_id``. Every cell's
    config is validated here, so a bad override fails before any training starts.
    """
    from mdfnet import __version__
    from mdfnet.config import to_dict
    from mdfnet.train import config_from_sources

    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise StepError(f"seeds must be a non-empty list of distinct integers, got {seeds}")
    planned, resolved = [], []
    for cell in grid_cells(grids, grid):
        sets = [*cell["base"], *map(str, overrides), *cell["set"]]
        cfg = config_from_sources(None, sets)
        if to_dict(cfg) in resolved:  # e.g. `full`: fusion-sum is variant-mdf
            log.info("grid %s: cell %s repeats an earlier cell's config; skipped", grid, cell["name"])
            continue
        resolved.append(to_dict(cfg))
        labels = {"variant": cfg.model.variant, "fusion": cfg.model.fusion, "backbone": cfg.model.backbone,
                  "feature_set": str(cell.get("feature_set")
                                     or _feature_set_name(cfg.data.features, cfg.data.shuffle_clinical))}
        planned.append((cell["name"], sets, labels))

    client = tracking.configure()
    tags = {"kfp.run_id": kfp_run_id, "kfp.run_name": run_name, "mdfnet.git_sha": tracking.git_sha(),
            "mdfnet.version": __version__, tracking.TAG_FINGERPRINT: tracking.dataset_fingerprint(data_dir),
            "mdfnet.grid": grid, **{f"image.{k}": v for k, v in (image_tags or {}).items()}}
    parent = tracking.start_pipeline_run(client, experiment, run_name, tags)
    plog = tracking.MlflowLogger(parent.run_id, client)
    plog.log_params({"grid": grid, "seeds": ",".join(map(str, seeds)), "overrides": " ".join(overrides) or "-",
                     "cells": len(planned), "runs": len(planned) * len(seeds)})
    for name in ("exclusions.csv", "cleaning.csv", "splits.csv", "preprocessing.json", "join_meta.json"):
        if (Path(data_dir) / name).is_file():
            plog.log_artifact(Path(data_dir) / name, "reports")
    return [{"cell": name, "seed": seed, "grid": grid, "run_name": f"{name}-s{seed}", "overrides": sets,
             "labels": labels, "parent_run_id": parent.run_id, "experiment_id": parent.experiment_id}
            for name, sets, labels in planned for seed in seeds]


# ------------------------------------------------------------------------------------------ train / evaluate
def train_step(item: Mapping[str, Any], data_dir: str | Path, out_dir: str | Path,
               max_steps: int | None = None) -> dict[str, Any]:
    """Train one grid item into ``out_dir``; log params, per-epoch metrics, config and the model (MLflow
    pytorch flavour) into the item's cell run. Writes ``out_dir/run.json``; returns its content."""
    from mdfnet.config import save_config
    from mdfnet.train import config_from_sources, load_model, train

    item = dict(item)
    seed = int(item["seed"])  # loop items may arrive as JSON numbers (floats)
    client = tracking.configure()
    run_id = tracking.open_cell_run(client, str(item["parent_run_id"]), str(item["run_name"]),
                                    {tracking.TAG_CELL: item["cell"], "mdfnet.grid": item["grid"]})
    logger = tracking.MlflowLogger(run_id, client)
    out_dir = Path(out_dir)
    try:
        cfg = config_from_sources(None, [*item["overrides"], f"seed={seed}"])
        logger.log_params({"cell": item["cell"], "grid": item["grid"], **{k: item["labels"][k] for k in LABEL_KEYS}})
        res = train(cfg, data_dir, out_dir, logger=logger, max_steps=max_steps or None)
        save_config(cfg, out_dir / "config.yaml")
        logger.log_artifact(out_dir / "config.yaml", "config")
        best = res.best_checkpoint or res.last_checkpoint
        model, _ = load_model(best)
        model_uri = tracking.log_torch_model(client, run_id, model)
    except Exception:
        tracking.finish_run(client, run_id, "FAILED")
        raise
    info = {**item, "seed": seed, "run_id": run_id, "model_uri": model_uri, "checkpoint": best.name,
            "best_val_ap": res.best_val_ap, "best_epoch": res.best_epoch, "steps": res.steps,
            "mode": tracking.tracking_mode()}
    (out_dir / RUN_INFO).write_text(json.dumps(info, indent=2))
    return info


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def metrics_of(result: Any, prefix: str) -> dict[str, float]:
    """Finite metrics of an ``EvalResult``: ``<prefix>/ap``, ``<prefix>/ar``, ``<prefix>/ap/<class slug>``,
    ``<prefix>/ar/<class slug>`` (classes without ground truth have no AP and are left out)."""
    out = {f"{prefix}/ap": result.ap, f"{prefix}/ar": result.ar}
    for name, c in result.per_class.items():
        for key in ("ap", "ar"):
            if c[key] is not None:
                out[f"{prefix}/{key}/{_slug(name)}"] = c[key]
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def evaluate_step(model_dir: str | Path, data_dir: str | Path, out_dir: str | Path,
                  batch_size: int = 4) -> dict[str, Any]:
    """Score the trained model on val and test (IoBB 0.5, and the look-alike pair's balanced accuracy and misses,
    :func:`mdfnet.evaluation.pair_confusion`); write ``metrics.json``, COCO ground truth and predictions per
    split, PR/count/sweep plots (test); log all into the cell run and end it (``self`` mode).

    Returns the summary that :func:`compare` ranks: the item's fields, ``run_id``, ``model_uri`` and ``metrics``.
    """
    from mdfnet.data import MDFDataset
    from mdfnet.evaluation import dataset_to_coco, evaluate, outputs_to_coco, pair_confusion, save_plots, sweep
    from mdfnet.train import load_model, predict

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    info_path = model_dir / RUN_INFO
    if not info_path.is_file():
        raise StepError(f"{info_path} not found: {model_dir} is not the output of the train step")
    info = json.loads(info_path.read_text())
    model, cfg = load_model(model_dir / "checkpoints" / info["checkpoint"])
    client = tracking.configure()
    logger = tracking.MlflowLogger(info["run_id"], client)
    out_dir.mkdir(parents=True, exist_ok=True)
    kw = dict(overlap="iobb", max_dets=cfg.model.box_detections_per_img, score_threshold=cfg.model.box_score_thresh)
    metrics: dict[str, float] = {}
    summary: dict[str, Any] = {}
    try:
        for split in ("val", "test"):
            ds = MDFDataset(data_dir, split, features=cfg.data.features, with_masks=False,
                            shuffle_clinical=cfg.data.shuffle_clinical)
            gt = dataset_to_coco(ds, description=f"{data_dir} split {split}")
            dets = outputs_to_coco(predict(model, ds, batch_size=batch_size), [i + 1 for i in range(len(ds))])
            res = evaluate(gt, dets, thresholds=(0.5,), **kw)
            pair = pair_confusion(gt, dets, score_threshold=cfg.model.box_score_thresh)
            metrics.update({**metrics_of(res, f"final/{split}"), **pair.metrics(f"final/{split}")})
            summary[split] = {**res.to_dict(), "lookalike": pair.to_dict()}
            (out_dir / f"gt_{split}.json").write_text(json.dumps(gt))
            (out_dir / f"predictions_{split}.json").write_text(json.dumps(dets))
            if split == "test":
                plots = save_plots(res, out_dir / "plots", sweep(gt, dets, **kw))
        (out_dir / "metrics.json").write_text(json.dumps({"metrics": metrics, **summary}, indent=2))
        logger.log_metrics(metrics, step=int(info.get("steps") or 0))
        logger.log_artifact(out_dir, "evaluation")
    except Exception:
        tracking.finish_run(client, info["run_id"], "FAILED")
        raise
    tracking.finish_run(client, info["run_id"])
    (out_dir / "plots.html").write_text(plots_html(plots, f"{info['run_name']}: test split"))
    keep = ("cell", "seed", "grid", "run_name", "labels", "parent_run_id", "experiment_id", "run_id", "model_uri",
            "best_epoch", "steps")
    return {**{k: info.get(k) for k in keep}, "metrics": metrics}


def plots_html(paths: Sequence[str | Path], title: str) -> str:
    """Self-contained HTML page with the PNGs inlined (the KFP UI shows HTML artefacts as they are)."""
    imgs = "".join(f'<figure><img src="data:image/png;base64,{base64.b64encode(Path(p).read_bytes()).decode()}"/>'
                   f"<figcaption>{html.escape(Path(p).name)}</figcaption></figure>" for p in paths)
    return f"<html><body><h2>{html.escape(title)}</h2>{imgs}</body></html>"


# ------------------------------------------------------------------------------------------ compare / register
def _score(r: Mapping[str, Any]) -> float:
    v = r.get("metrics", {}).get(tracking.SELECTION_METRIC)
    return float(v) if v is not None and math.isfinite(float(v)) else -math.inf


def _fmt(values: list[float]) -> str:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return "n/a"
    mean = 100 * statistics.fmean(vals)
    return f"{mean:.2f}" if len(vals) == 1 else f"{mean:.2f} ± {100 * statistics.stdev(vals):.2f}"


def compare(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Rank cells by mean validation AP over seeds (ties: cell name); the best run is the best seed of the
    best cell. Returns ``best`` (that run's summary), ``ranking`` (cell rows), ``markdown`` and ``html``; the
    table is also logged to the pipeline run (``comparison.md``) with tag ``mdfnet.best_cell``."""
    if not results:
        raise StepError("compare needs at least one evaluated run, got none")
    cells: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        cells.setdefault(str(r["cell"]), []).append(r)
    metric_cols = ("final/val/ap", "final/val/ar", "final/test/ap", "final/test/ar", "final/val/lookalike_bacc",
                   "final/test/lookalike_bacc")

    def mean_val(rs: list[Mapping[str, Any]]) -> float:
        vals = [_score(r) for r in rs if math.isfinite(_score(r))]
        return statistics.fmean(vals) if vals else -math.inf

    order = sorted(cells, key=lambda c: (-mean_val(cells[c]), c))
    best_cell = order[0]
    best = dict(max(cells[best_cell], key=lambda r: (_score(r), -int(r["seed"]))))
    rows, ranking = [], []
    for rank, c in enumerate(order, 1):
        rs = cells[c]
        labels = rs[0].get("labels", {})
        stats = {m: _fmt([float(r["metrics"].get(m, math.nan)) for r in rs]) for m in metric_cols}
        ranking.append({"rank": rank, "cell": c, "seeds": sorted(int(r["seed"]) for r in rs),
                        "mean_val_ap": mean_val(rs), **{k: labels.get(k) for k in LABEL_KEYS}, **stats})
        rows.append([rank, c, *(labels.get(k, "") for k in LABEL_KEYS), len(rs), *stats.values()])
    headers = ["rank", "cell", *LABEL_KEYS, "seeds", *(f"{m} %" for m in metric_cols)]
    md = "\n".join([f"# Comparison ({len(results)} runs, {len(cells)} cells; ranked by {tracking.SELECTION_METRIC})",
                    "", _markdown_table(headers, rows), "",
                    f"Best: **{best_cell}** (run `{best['run_name']}`, {tracking.SELECTION_METRIC} = "
                    f"{_fmt([_score(best)])} %)"])
    th = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    page = (f"<html><body><h2>Comparison by {tracking.SELECTION_METRIC}</h2><table border='1'><tr>{th}</tr>{trs}"
            f"</table><p>best: <b>{html.escape(best_cell)}</b> ({html.escape(best['run_name'])})</p></body></html>")
    parent = best.get("parent_run_id")
    if parent:
        client = tracking.configure()
        plog = tracking.MlflowLogger(parent, client)
        plog.set_tags({"mdfnet.best_cell": best_cell, "mdfnet.best_run": best["run_name"]})
        client.log_text(parent, md, "comparison.md")
    return {"best": best, "ranking": ranking, "markdown": md, "html": page}


def register(best: Mapping[str, Any], model_name: str) -> dict[str, Any]:
    """Register the best run's model as a new version of ``model_name``; move alias ``champion`` only if its
    validation AP beats the champion's (:func:`mdfnet.tracking.register_champion`). The decision is tagged on
    the pipeline run, which then ends (``self`` mode). Returns the decision plus ``champion_version``."""
    if not best.get("model_uri") or not best.get("run_id"):
        raise StepError(f"register needs a run summary with model_uri and run_id, got keys {sorted(best)}")
    client = tracking.configure()
    decision = tracking.register_champion(client, model_name, str(best["model_uri"]), str(best["run_id"]),
                                          _score(best) if math.isfinite(_score(best)) else math.nan)
    out = {**decision.to_dict(), "champion_version": tracking.champion_version(client, model_name)}
    parent = best.get("parent_run_id")
    if parent:
        tracking.MlflowLogger(parent, client).set_tags({
            "mdfnet.registered_version": decision.version, "mdfnet.champion_decision": decision.reason,
            "mdfnet.champion_version": out["champion_version"]})
        tracking.finish_run(client, parent)
    return out


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` (parents created): KFP Markdown/HTML artefacts are single files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def copy_file(src: str | Path, dst: str | Path) -> None:
    """Copy one file (parents of ``dst`` created)."""
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
