"""Compile the MDF-Net pipeline to a KFP package (default ``pipelines/mdfnet_pipeline.yaml``, committed), or with
``--kubernetes-manifest`` to the ``Pipeline`` + ``PipelineVersion`` resources a KFP backend in Kubernetes-native API
mode registers (default ``charts/mdfnet/files/mdfnet-pipeline.yaml``, committed: the Helm chart ships it).

    python pipelines/compile.py [--output FILE] [--registry R] [--gpu-node-selector k=v]
                                [--gpu-toleration key=value:Effect | key:Effect] [--parallelism N]
                                [--shm-size QUANTITY] [--train-device cuda|cuda:N|auto|cpu]
                                [--min-backend VERSION] [--kubernetes-manifest]

Every option defaults to its :class:`pipelines.pipeline.CompileOptions` field (the node selector and toleration
written in their command-line form), so the defaults are stated once. ``--min-backend`` (default: the oldest KFP
backend release the pipeline supports, :data:`pipelines.backend.MIN_BACKEND`) refuses, naming the feature, a
package that release cannot run (:func:`pipelines.backend.check_backend`); nothing is written then. The manifests
come from kfp's own ``kubernetes_manifest_format`` (kfp >= 2.14, kubeflow/pipelines #12012); the
``PipelineVersion`` is named ``mdfnet-<package version>-<digest of the spec>`` because KFP makes a version's spec
immutable (its validating webhook refuses a changed spec under the same name).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from mdfnet import __version__
from pipelines import backend
from pipelines.pipeline import PIPELINE_NAME, CompileOptions, check_quantity, check_train_device

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "pipelines" / "mdfnet_pipeline.yaml"
DEFAULT_MANIFEST = ROOT / "charts" / "mdfnet" / "files" / "mdfnet-pipeline.yaml"
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


def parse_min_backend(text: str) -> str:
    """A KFP backend release (``2.14.0``), else ``typer.BadParameter`` naming the value."""
    try:
        backend.parse_version(text)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    return text


def version_name(docs: list[dict[str, Any]]) -> str:
    """``mdfnet-<package version>-<8 hex digits of the spec's SHA-256>`` (a Kubernetes name): a new spec is a new
    ``PipelineVersion``."""
    digest = hashlib.sha256(json.dumps(docs, sort_keys=True).encode()).hexdigest()[:8]
    return f"{PIPELINE_NAME}-{__version__.replace('.', '-')}-{digest}"


def compile_pipeline(output: Path, kubernetes_manifest: bool = False, **options) -> Path:
    """Compile with ``options`` (:class:`pipelines.pipeline.CompileOptions` fields) into ``output``: the KFP package,
    or with ``kubernetes_manifest`` the ``Pipeline`` + ``PipelineVersion`` manifests (no namespace: ``kubectl -n``
    or the chart sets it). :class:`pipelines.backend.BackendError` (nothing written) if a backend of release
    ``min_backend`` cannot run it."""
    from kfp import compiler

    from pipelines.pipeline import build_pipeline

    opts = CompileOptions(**options)
    pipeline = build_pipeline(opts)
    with tempfile.TemporaryDirectory(prefix="mdfnet-compile-") as tmp:
        package = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(pipeline, package_path=str(package))
        docs = [d for d in yaml.safe_load_all(package.read_text()) if d]
        backend.check_backend(docs, opts.min_backend, kubernetes_native=kubernetes_manifest)
        if kubernetes_manifest:
            name = version_name(docs)
            package = Path(tmp) / "manifests.yaml"
            compiler.Compiler().compile(pipeline, package_path=str(package), kubernetes_manifest_format=True,
                                        kubernetes_manifest_options=compiler.KubernetesManifestOptions(
                                            pipeline_name=PIPELINE_NAME, pipeline_version_name=name,
                                            pipeline_version_display_name=f"{PIPELINE_NAME} {__version__} "
                                            f"({name.rsplit('-', 1)[1]})", include_pipeline_manifest=True))
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package, output)
    return output


DEFAULTS = CompileOptions(grids={})
"""The defaults of every option (the grids are not an option: they are always ``pipelines/grids``)."""


@app.command()
def main(
    output: Annotated[Path | None, typer.Option("--output", help="File to write (default: pipelines/"
                                                "mdfnet_pipeline.yaml, or with --kubernetes-manifest charts/mdfnet/"
                                                "files/mdfnet-pipeline.yaml).")] = None,
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
    min_backend: Annotated[str, typer.Option("--min-backend", callback=parse_min_backend, help="The oldest KFP "
                                             "backend release the package must run on: refused, naming the "
                                             "feature, if that release cannot run it.")] = DEFAULTS.min_backend,
    kubernetes_manifest: Annotated[bool, typer.Option("--kubernetes-manifest", help="Write the Pipeline + "
                                                      "PipelineVersion resources (KFP in Kubernetes-native API "
                                                      "mode) instead of the package.")] = False,
) -> None:
    """Write the compiled pipeline package (or its Kubernetes manifests)."""
    output = output or (DEFAULT_MANIFEST if kubernetes_manifest else DEFAULT_OUTPUT)
    try:
        path = compile_pipeline(
            output, kubernetes_manifest=kubernetes_manifest, registry=registry,
            gpu_node_selector=parse_node_selector(gpu_node_selector), gpu_toleration=parse_toleration(gpu_toleration),
            parallelism=parallelism, train_timeout_s=train_timeout, train_retries=train_retries, secret_name=secret,
            shm_size=shm_size, train_device=train_device, min_backend=min_backend,
        )
    except backend.BackendError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(f"wrote {path}")


if __name__ == "__main__":
    app()
