"""Compile the MDF-Net pipeline to a KFP package (default ``pipelines/mdfnet_pipeline.yaml``, committed).

    python pipelines/compile.py [--output FILE] [--registry R] [--gpu-node-selector k=v]
                                [--gpu-toleration key=value:Effect | key:Effect] [--parallelism N]
                                [--shm-size QUANTITY] [--train-device cuda|cuda:N|auto|cpu]

Every option defaults to its :class:`pipelines.pipeline.CompileOptions` field (the node selector and toleration
written in their command-line form), so the defaults are stated once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.pipeline import CompileOptions, check_quantity, check_train_device

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "pipelines" / "mdfnet_pipeline.yaml"
EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

app = typer.Typer(add_completion=False)


def parse_node_selector(text: str) -> tuple[str, str] | None:
    """``key=value``; ``''``: None (no selector)."""
    if not text:
        return None
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"{text!r}: expected key=value, e.g. nvidia.com/gpu.present=true")
    return key, value


def format_node_selector(selector: tuple[str, str] | None) -> str:
    """The command-line form of a node selector (inverse of :func:`parse_node_selector`)."""
    return "=".join(selector) if selector else ""


def parse_toleration(text: str) -> tuple[str, str | None, str] | None:
    """``key=value:Effect`` (operator Equal) or ``key:Effect`` (operator Exists); ``''``: None (no toleration)."""
    if not text:
        return None
    head, sep, effect = text.rpartition(":")
    if not sep or effect not in EFFECTS or not head:
        raise typer.BadParameter(f"{text!r}: expected key=value:Effect or key:Effect with Effect in {EFFECTS}")
    key, eq, value = head.partition("=")
    if not key:
        raise typer.BadParameter(f"{text!r}: empty toleration key")
    return key, (value if eq else None), effect


def format_toleration(toleration: tuple[str, str | None, str] | None) -> str:
    """The command-line form of a toleration (inverse of :func:`parse_toleration`)."""
    if not toleration:
        return ""
    key, value, effect = toleration
    return f"{key}{'' if value is None else '=' + value}:{effect}"


def parse_shm_size(text: str) -> str:
    """A positive Kubernetes quantity (``2Gi``), else ``typer.BadParameter`` naming the value."""
    try:
        return check_quantity(text)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e


def parse_train_device(text: str) -> str:
    """A ``train.device`` value (``cuda``, ``cuda:N``, ``auto``, ``cpu``), else ``typer.BadParameter`` naming it."""
    try:
        return check_train_device(text)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e


def compile_pipeline(output: Path, **options) -> Path:
    """Compile with ``options`` (:class:`pipelines.pipeline.CompileOptions` fields) into ``output``."""
    from kfp import compiler

    from pipelines.pipeline import build_pipeline

    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(CompileOptions(**options)), package_path=str(output))
    return output


DEFAULTS = CompileOptions(grids={})
"""The defaults of every option (the grids are not an option: they are always ``pipelines/grids``)."""


@app.command()
def main(
    output: Annotated[Path, typer.Option("--output", help="Package file to write.")] = DEFAULT_OUTPUT,
    registry: Annotated[str, typer.Option("--registry", envvar="MDFNET_IMAGE_REGISTRY",
                                          help="Image registry of the step images.")] = DEFAULTS.registry,
    gpu_node_selector: Annotated[str, typer.Option("--gpu-node-selector", help="k=v for the train task (default: "
                                                   "the NVIDIA GPU operator's node label); '' for none.")
                                 ] = format_node_selector(DEFAULTS.gpu_node_selector),
    gpu_toleration: Annotated[str, typer.Option("--gpu-toleration", help="key=value:Effect or key:Effect; "
                                                "'' for none.")] = format_toleration(DEFAULTS.gpu_toleration),
    parallelism: Annotated[int, typer.Option("--parallelism", min=1, help="Concurrent train/evaluate iterations.")
                           ] = DEFAULTS.parallelism,
    train_timeout: Annotated[int, typer.Option("--train-timeout", min=1, help="Train pod deadline (s).")
                             ] = DEFAULTS.train_timeout_s,
    train_retries: Annotated[int, typer.Option("--train-retries", min=0)] = DEFAULTS.train_retries,
    secret: Annotated[str, typer.Option("--secret", help="Kubernetes Secret with S3/MLflow credentials; '' for "
                                        "none.")] = DEFAULTS.secret_name,
    shm_size: Annotated[str, typer.Option("--shm-size", callback=parse_shm_size, help="Size limit of the train "
                                          "task's memory-backed /dev/shm (a Kubernetes quantity).")
                        ] = DEFAULTS.shm_size,
    train_device: Annotated[str, typer.Option("--train-device", callback=parse_train_device, help="train.device "
                                              "of every cell (a run's config_overrides still win).")
                            ] = DEFAULTS.train_device,
) -> None:
    """Write the compiled pipeline package."""
    path = compile_pipeline(
        output, registry=registry, gpu_node_selector=parse_node_selector(gpu_node_selector),
        gpu_toleration=parse_toleration(gpu_toleration), parallelism=parallelism, train_timeout_s=train_timeout,
        train_retries=train_retries, secret_name=secret, shm_size=shm_size, train_device=train_device,
    )
    typer.echo(f"wrote {path}")


if __name__ == "__main__":
    app()
