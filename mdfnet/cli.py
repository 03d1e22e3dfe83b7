"""``mdfnet`` command line (typer). Heavy imports (torch, pandas) happen inside each command."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

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
    image_size: Annotated[int, typer.Option("--image-size", help="Typical longest side of the JPEGs (px).")] = 256,
    tables_only: Annotated[bool, typer.Option("--tables-only", help="Skip images (benchmark scale).")] = False,
) -> None:
    """Write synthetic MIMIC-Eye-shaped sources (REFLACX, MIMIC-CXR-JPG, MIMIC-IV, MIMIC-IV-ED)."""
    from mdfnet.data.synthetic import generate

    summary = generate(source_dir, n_studies=studies, seed=seed, image_size=image_size, tables_only=tables_only)
    for k, v in summary.items():
        typer.echo(f"{k:>24}: {v}")


@app.command()
def join(
    source_dir: Annotated[Path, typer.Argument(help="Root holding reflacx/, mimic-cxr-jpg/, mimic-iv/, mimic-iv-ed/.")],
    out_dir: Annotated[Path, typer.Argument(help="Output folder for instances/boxes/exclusions.")],
    keep_negatives: Annotated[
        bool, typer.Option("--keep-negatives/--drop-negatives", help="Keep readings with no box of the 5 classes.")
    ] = True,
    min_certainty: Annotated[int, typer.Option("--min-certainty", help="Drop ellipses with certainty below this (1-5).")] = 1,
    check_images: Annotated[bool, typer.Option("--check-images/--no-check-images")] = True,
) -> None:
    """Join REFLACX readings with CXR metadata, patients, ED stays and triage; itemise exclusions."""
    from mdfnet.data.join import JoinError
    from mdfnet.data.join import join as run_join

    try:
        result = run_join(
            source_dir, out_dir, keep_negatives=keep_negatives, min_certainty=min_certainty, check_images=check_images
        )
    except (JoinError, FileNotFoundError) as e:
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
    out: Annotated[Path, typer.Option("--out", help="Run folder: config.yaml, metrics.jsonl, checkpoints/.")],
    config: Annotated[Path | None, typer.Option("--config", help="YAML file with TrainConfig keys.")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="key=value override, e.g. model.fusion=concat_conv.")
    ] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after N optimiser steps in total.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoints/last.pt.")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Shorthand for --set seed=N.")] = None,
) -> None:
    """Train an MDF-Net variant; select the best checkpoint on validation AP (IoBB 0.5)."""
    from mdfnet.config import ConfigError, load_yaml
    from mdfnet.metrics_log import JsonlLogger
    from mdfnet.train import TrainError, config_from_sources
    from mdfnet.train import train as run_train

    sets = list(overrides or []) + ([f"seed={seed}"] if seed is not None else [])
    saved = out / "config.yaml"
    try:
        # On --resume the run's saved config is the base, so `--resume` alone continues the same run.
        base = load_yaml(saved) if resume and saved.is_file() else None
        cfg = config_from_sources(config, sets, base=base)
        with JsonlLogger(out / "metrics.jsonl") as logger:
            result = run_train(cfg, data, out, logger=logger, max_steps=max_steps, resume=resume)
    except (ConfigError, TrainError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    best = "n/a" if result.best_val_ap is None else f"{result.best_val_ap:.4f} (epoch {result.best_epoch})"
    typer.echo(f"{'steps':>16}: {result.steps} ({result.epochs_completed} epochs completed)")
    typer.echo(f"{'best val AP@0.5':>16}: {best}")
    typer.echo(f"{'best checkpoint':>16}: {result.best_checkpoint}")
    typer.echo(f"{'last checkpoint':>16}: {result.last_checkpoint}")


if __name__ == "__main__":  # pragma: no cover
    app()
