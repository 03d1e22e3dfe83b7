"""``mdfnet`` command line (typer). Heavy imports (torch, pandas) happen inside each command."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from mdfnet.training.run_folder import CHECKPOINTS, CONFIG, LAST, METRICS, RunFolder

app = typer.Typer(help="MDF-Net: data, training and evaluation commands.", no_args_is_help=True, add_completion=False)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=2)


@app.command()
def synth(
    source_dir: Annotated[Path, typer.Argument(help="Where to write the four source trees.")],
    studies: Annotated[int, typer.Option("--studies", help="Number of REFLACX-read CXR images.")] = 64,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    image_size: Annotated[int, typer.Option("--image-size", help="Typical side of the JPEGs (px); each side is drawn in 0.75-1.25x of it.")] = 256,
    tables_only: Annotated[bool, typer.Option("--tables-only", help="Skip images (benchmark scale).")] = False,
    layout: Annotated[str, typer.Option("--layout", help="physionet (the four downloads side by side) or mimic-eye "
                                        "(per-patient folders); same seed, same cohort.")] = "physionet",
) -> None:
    """Write synthetic MIMIC-Eye-shaped sources (REFLACX, MIMIC-CXR-JPG, MIMIC-IV, MIMIC-IV-ED)."""
    from mdfnet.data.synthetic import generate

    try:
        summary = generate(source_dir, n_studies=studies, seed=seed, image_size=image_size, tables_only=tables_only,
                           layout=layout)
    except ValueError as e:
        _fail(str(e))
    for k, v in summary.items():
        typer.echo(f"{k:>24}: {v}")


@app.command()
def join(
    source_dir: Annotated[Path, typer.Argument(help="Root holding reflacx/, mimic-cxr-jpg/, mimic-iv/, mimic-iv-ed/ "
                                               "(PhysioNet layout) or patient_<subject_id>/ folders (MIMIC-Eye).")],
    out_dir: Annotated[Path, typer.Argument(help="Output folder for instances/boxes/exclusions.")],
    keep_negatives: Annotated[
        bool, typer.Option("--keep-negatives/--drop-negatives", help="Keep readings with no box of the 5 classes.")
    ] = True,
    min_certainty: Annotated[int, typer.Option("--min-certainty", help="Drop ellipses with certainty below this (1-5).")] = 1,
    keep_discarded_eye_tracking: Annotated[bool, typer.Option(
        "--keep-discarded-eye-tracking/--drop-discarded-eye-tracking",
        help="Keep readings whose eye_tracking_data_discarded is True (their ellipses exist; the paper drops them).")
    ] = False,
    check_images: Annotated[bool, typer.Option("--check-images/--no-check-images")] = True,
    layout: Annotated[str, typer.Option("--layout", help="auto (detect), physionet or mimic-eye.")] = "auto",
) -> None:
    """Join REFLACX readings with CXR metadata, patients, ED stays and triage; itemise exclusions."""
    from mdfnet.data.join import join as run_join

    try:
        result = run_join(source_dir, out_dir, keep_negatives=keep_negatives, min_certainty=min_certainty,
                          check_images=check_images, layout=layout,
                          keep_discarded_eye_tracking=keep_discarded_eye_tracking)
    except (ValueError, FileNotFoundError) as e:  # JoinError is a ValueError
        _fail(str(e))
    typer.echo(result.summary_table())


@app.command()
def preprocess(
    joined_dir: Annotated[Path, typer.Argument(help="Output of `mdfnet join`.")],
    out_dir: Annotated[Path, typer.Argument(help="Output folder (cached images, splits, preprocessing.json).")],
    config: Annotated[Path | None, typer.Option("--config", help="YAML file with PreprocessConfig keys.")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="key=value override, e.g. image_size=128.")] = None,
) -> None:
    """Clean clinical values, split by patient, fit imputation/scaling on train, cache resized images."""
    from mdfnet.config import ConfigError, load_config
    from mdfnet.data.preprocess import PreprocessConfig, PreprocessError
    from mdfnet.data.preprocess import preprocess as run_preprocess

    try:
        cfg = load_config(PreprocessConfig, config, overrides or [])
        result = run_preprocess(joined_dir, out_dir, cfg)
    except (ConfigError, PreprocessError, FileNotFoundError) as e:
        _fail(str(e))
    typer.echo(result.summary_table())


# Commands of other areas are registered below (one block each).


# ---------------------------------------------------------------- train (model area)
@app.command("train")
def train_cmd(
    data: Annotated[Path, typer.Option("--data", help="Preprocessed folder (output of `mdfnet preprocess`).")],
    out: Annotated[Path, typer.Option("--out", help=f"Run folder: {CONFIG}, {METRICS}, {CHECKPOINTS}/.")],
    config: Annotated[Path | None, typer.Option("--config", help="YAML file with TrainConfig keys.")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="key=value override, e.g. model.fusion=concat_conv.")
    ] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after N optimiser steps in total.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help=f"Continue from OUT/{CHECKPOINTS}/{LAST}.")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Shorthand for --set seed=N.")] = None,
) -> None:
    """Train an MDF-Net variant; select the best checkpoint on validation AP (IoBB 0.5)."""
    from mdfnet.config import ConfigError, load_yaml
    from mdfnet.metrics_log import JsonlLogger
    from mdfnet.training import TrainError, config_from_sources
    from mdfnet.training import train as run_train

    sets = list(overrides or []) + ([f"seed={seed}"] if seed is not None else [])
    folder = RunFolder(out)
    saved = folder.config
    try:
        # On --resume the run's saved config is the base, so `--resume` alone continues the same run.
        base = load_yaml(saved) if resume and saved.is_file() else None
        cfg = config_from_sources(config, sets, base=base)
        with JsonlLogger(folder.metrics) as logger:
            result = run_train(cfg, data, out, logger=logger, max_steps=max_steps, resume=resume)
    except (ConfigError, TrainError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    best = "n/a" if result.best_val_ap is None else f"{result.best_val_ap:.4f} (epoch {result.best_epoch})"
    typer.echo(f"{'steps':>16}: {result.steps} ({result.epochs_completed} epochs completed)")
    typer.echo(f"{'best val AP@0.5':>16}: {best}")
    typer.echo(f"{'best checkpoint':>16}: {result.best_checkpoint}")
    typer.echo(f"{'last checkpoint':>16}: {result.last_checkpoint}")


# ---------------------------------------------------------------- evaluate / export-coco (evaluation area)
@app.command("evaluate")
def evaluate_cmd(
    gt_path: Annotated[Path, typer.Argument(metavar="GT.json", help="COCO ground truth (images, annotations, categories).")],
    dets_path: Annotated[Path, typer.Argument(metavar="DETS.json", help="COCO results list (image_id, category_id, bbox, score).")],
    overlap: Annotated[str, typer.Option("--overlap", help="iobb (MDF-Net's metric) or iou.")] = "iobb",
    thresholds: Annotated[
        list[float] | None, typer.Option("--threshold", help="Overlap threshold; repeat for several (default 0.5).")
    ] = None,
    max_dets: Annotated[int, typer.Option("--max-dets", help="Detections kept per image and class.")] = 10,
    score_threshold: Annotated[float, typer.Option("--score-threshold", help="Drop detections scoring below.")] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object {ap, ar, per_class[, bootstrap]}.")] = False,
    sweep_csv: Annotated[Path | None, typer.Option("--sweep", help="Write AP/AR/TP/FP/FN per threshold 0..1 (CSV).")] = None,
    plots_dir: Annotated[Path | None, typer.Option("--plots", help="Write PR curves, counts and sweep PNGs here.")] = None,
    n_boot: Annotated[int, typer.Option("--bootstrap", help="Bootstrap replicates for 95% intervals (0: none).")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
) -> None:
    """COCO-style AP/AR (IoBB or IoU) of DETS.json against GT.json, per class, with TP/FP/FN."""
    import json

    from mdfnet.evaluation import EvaluationError, bootstrap, evaluate, load_json, save_plots, sweep

    thr = tuple(thresholds) if thresholds else (0.5,)
    kw = dict(overlap=overlap, max_dets=max_dets, score_threshold=score_threshold)
    try:
        gt, dets = load_json(gt_path, "ground truth"), load_json(dets_path, "detections")
        result = evaluate(gt, dets, thresholds=thr, **kw)
        table = sweep(gt, dets, **kw) if (sweep_csv or plots_dir) else None
        boot = bootstrap(gt, dets, n=n_boot, seed=seed, thresholds=thr, **kw) if n_boot > 0 else None
    except (EvaluationError, ValueError) as e:
        _fail(str(e))
    written = []
    if sweep_csv is not None:
        sweep_csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(sweep_csv, index=False)
        written.append(sweep_csv)
    if plots_dir is not None:
        written += save_plots(result, plots_dir, table)
    if as_json:
        summary = result.to_dict()
        out = {key: summary[key] for key in ("ap", "ar", "per_class")}
        if boot is not None:
            out["bootstrap"] = boot.to_dict()
        typer.echo(json.dumps(out))
        for path in written:
            typer.echo(f"wrote {path}", err=True)
        return
    typer.echo(result.table())
    if boot is not None:
        def iv(pair: tuple[float, float]) -> str:
            return f"[{100 * pair[0]:6.2f}, {100 * pair[1]:6.2f}]"

        typer.echo(f"{100 * boot.confidence:g}% bootstrap intervals ({boot.n} resamples of images, seed {boot.seed}):")
        typer.echo(f"{'all':>28}  AP% {iv(boot.ap)}  AR% {iv(boot.ar)}")
        for name, c in boot.per_class.items():
            typer.echo(f"{name:>28}  AP% {iv(c['ap'])}  AR% {iv(c['ar'])}")
    for path in written:
        typer.echo(f"wrote {path}")


@app.command("export-coco")
def export_coco_cmd(
    preprocessed_dir: Annotated[Path, typer.Argument(help="Output of `mdfnet preprocess`.")],
    out: Annotated[Path, typer.Argument(metavar="OUT.json", help="COCO ground-truth file to write.")],
    split: Annotated[str, typer.Option("--split", help="train, val or test.")] = "test",
) -> None:
    """Write a split's boxes as COCO ground truth (image id = dataset index + 1, category ids 1..5)."""
    import json

    from mdfnet.data import MDFDataset
    from mdfnet.data.preprocess import PreprocessError
    from mdfnet.evaluation import EvaluationError, dataset_to_coco

    try:
        ds = MDFDataset(preprocessed_dir, split, with_masks=False)
        gt = dataset_to_coco(ds, description=f"{preprocessed_dir} split {split}")
    except (PreprocessError, EvaluationError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(gt))
    typer.echo(f"wrote {out}: {len(gt['images'])} images, {len(gt['annotations'])} boxes, split {split}")


# ---------------------------------------------------------------- predict (serving area)
@app.command("predict")
def predict_cmd(
    model: Annotated[str, typer.Option("--model", help="models:/NAME@champion (or /VERSION), runs:/..., a run "
                                       "folder or a .pt checkpoint.")],
    image: Annotated[Path | None, typer.Option("--image", help="One chest X-ray: JPEG, PNG or DICOM (.dcm).")] = None,
    clinical: Annotated[Path | None, typer.Option("--clinical", help="With --image: JSON object with age, gender, "
                                                  "temperature, heartrate, resprate, o2sat, sbp, dbp, pain, acuity "
                                                  "(null if unknown).")] = None,
    batch: Annotated[Path | None, typer.Option("--batch", help="studies.csv: one row per study, columns image (file "
                                               "name under --images), [study,] and the ten triage fields.")] = None,
    images: Annotated[Path | None, typer.Option("--images", help="With --batch: the folder the image names are "
                                                "relative to.")] = None,
    from_split: Annotated[Path | None, typer.Option("--from-split", help="Batch-score a preprocessed folder's "
                                                    "--split (writes its studies.csv beside --out first).")] = None,
    split: Annotated[str, typer.Option("--split", help="With --from-split: train, val or test.")] = "test",
    out: Annotated[Path | None, typer.Option("--out", help="--image: draw the labelled boxes into this PNG. Batch: "
                                             "predictions .parquet (or COCO results .json); exclusions.csv "
                                             "beside it.")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Per detection: the class-score change when each "
                                          "triage value is replaced by the train median.")] = False,
    score_threshold: Annotated[float, typer.Option("--score-threshold", help="Drop detections scoring below.")] = 0.0,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="Batch: studies per model call.")] = 32,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI",
                                                     help="MLflow store for models:/ URIs.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Preprocessed folder, only for checkpoints written "
                                              "before they stored the preprocessing state.")] = None,
) -> None:
    """Detect the 5 lesions on one X-ray with its triage values (print the detections as JSON, original pixels),
    or on a batch of studies (--batch / --from-split: a Parquet or COCO file, exclusions.csv, throughput)."""
    import os

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    modes = [name for name, given in (("--image", image), ("--batch", batch), ("--from-split", from_split)) if given]
    if len(modes) != 1:
        _fail(f"give exactly one of --image, --batch or --from-split (got {', '.join(modes) or 'none'})")
    if image is not None:
        if clinical is None:
            _fail("--image needs --clinical (a JSON file of the ten triage fields)")
        _predict_one(model, image, clinical, out, explain, score_threshold, data)
    else:
        if out is None:
            _fail("batch scoring needs --out (predictions .parquet or COCO results .json)")
        if batch is not None and images is None:
            _fail("--batch needs --images (the folder the studies' image names are relative to)")
        _predict_batch(model, batch, images, from_split, split, out, explain, score_threshold, chunk_size, data)


def _predict_one(model: str, image: Path, clinical: Path, out: Path | None, explain: bool, score_threshold: float,
                 data: Path | None) -> None:
    import json

    from mdfnet.serving.inputs import RequestError, encode_image, request_frame
    from mdfnet.serving.predictor import ModelSourceError, open_model
    from mdfnet.training.errors import TrainError

    try:
        values = json.loads(clinical.read_text())
    except (OSError, json.JSONDecodeError) as e:
        _fail(f"cannot read clinical values from {clinical}: {e}")
    if not isinstance(values, dict):
        _fail(f"{clinical}: expected a JSON object of clinical fields, got {type(values).__name__}")
    try:
        data_bytes = image.read_bytes()
        frame = request_frame([{"study": image.stem, "image": encode_image(data_bytes), **values}])
        detections = open_model(model, data)(frame, score_threshold, explain=explain)
    except OSError as e:
        _fail(f"cannot read image {image}: {e}")
    except (RequestError, ModelSourceError, TrainError, ValueError) as e:
        _fail(str(e))
    if explain:
        from mdfnet.serving.explain import detection_line

        typer.echo(json.dumps(json.loads(detections.to_json(orient="records", double_precision=15)), indent=2,
                              ensure_ascii=False))
        for d in detections.to_dict("records"):
            typer.echo(detection_line(d), err=True)
    else:
        typer.echo(json.dumps(detections.to_dict("records"), indent=2))
    if out is not None:
        from mdfnet.serving.draw import draw_detections

        typer.echo(f"wrote {draw_detections(data_bytes, detections, out)}", err=True)


def _predict_batch(model: str, batch: Path | None, images: Path | None, from_split: Path | None, split: str,
                   out: Path, explain: bool, score_threshold: float, chunk_size: int, data: Path | None) -> None:
    from mdfnet.serving.batch import (
        STUDIES_FILE,
        BatchError,
        read_studies,
        score_batch,
        studies_from_split,
        write_batch,
    )
    from mdfnet.serving.explain import top_reason_counts
    from mdfnet.serving.inputs import RequestError
    from mdfnet.serving.predictor import ModelSourceError, open_model
    from mdfnet.training.errors import TrainError

    try:
        if from_split is not None:
            table, images = studies_from_split(from_split, split)
            batch = out.parent / STUDIES_FILE
            batch.parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(batch, index=False)
            typer.echo(f"wrote {batch}: {len(table)} studies of split {split!r} (images under {images})")
        studies = read_studies(batch)
        score = open_model(model, data)
        result = score_batch(score, studies, images, score_threshold=score_threshold, explain=explain,
                             chunk_size=chunk_size)
        files = write_batch(result, out)
    except (BatchError, RequestError, ModelSourceError, TrainError, ValueError, OSError) as e:
        _fail(str(e))
    per_study = 1000 * result.seconds / max(result.n_scored, 1)
    typer.echo(f"scored {result.n_scored} of {result.n_studies} studies in {result.seconds:.1f} s "
               f"({result.studies_per_s:.1f} studies/s, {per_study:.0f} ms per study); "
               f"{len(result.exclusions)} excluded ({files[1]})")
    typer.echo(f"wrote {files[0]}: {len(result.detections)} detections")
    if explain and len(result.detections):
        typer.echo("top reason per detected class (detections):")
        typer.echo(top_reason_counts(result.detections).to_string())


# ---------------------------------------------------------------- report (reporting area)
@app.command("report")
def report_cmd(
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment of the pipeline runs.")],
    pipeline_run: Annotated[str | None, typer.Option("--pipeline-run", help="One pipeline run's id (default: all "
                                                     "runs of the experiment).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for report.md, report.html and the PNGs.")] = Path("report"),
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI",
                                                     help="MLflow store (default: ./mlflow.db).")] = None,
    model_name: Annotated[str | None, typer.Option("--model-name", help="Registered model whose champion gets the "
                                                   "attribution (default: the best run).")] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Bootstrap resamples per run and split.")] = 200,
    attribution_data: Annotated[Path | None, typer.Option("--attribution-data", help="Preprocessed folder: compute "
                                                          "the champion's clinical attribution here if its run has "
                                                          "none (needs torch).")] = None,
    attribution_repeats: Annotated[int, typer.Option("--attribution-repeats", min=1)] = 5,
) -> None:
    """The paper's tables and figures from tracked runs: variants, fusion, backbones, feature sets (mean ± sd over
    seeds, 95 % bootstrap intervals, the paper's numbers), per lesion, IoBB sweep, generalisation, correlation,
    clinical attribution."""
    import os

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    from mdfnet import tracking
    from mdfnet.report import ReportError, build_report

    try:
        report = build_report(tracking.configure(), experiment, out, pipeline_run=pipeline_run, n_boot=bootstrap,
                              model_name=model_name, attribution_data=attribution_data,
                              attribution_repeats=attribution_repeats)
    except ReportError as e:
        _fail(str(e))
    typer.echo(f"{len(report.cells)} cells; wrote {out / 'report.md'}, {out / 'report.html'} and "
               f"{len(report.files) - 2} figure(s)")


if __name__ == "__main__":  # pragma: no cover
    app()
