"""Run the whole pipeline on this machine with ``kfp.local``, no cluster.

    python pipelines/run_local.py --source data/demo/sources [--grid tiny] [--seeds 0 --seeds 1]
    python pipelines/run_local.py --synth 48 --workdir data/local      # generate synthetic sources first
    python pipelines/run_local.py --runner docker --registry local --source s3://bucket/sources   # in the images

Runners: ``subprocess`` (default; every task in this Python, no containers) or ``docker`` (every task in its step
image ``<registry>/mdfnet-<step>:<version>``, built by ``images/build.sh``, through ``kfp.local.DockerRunner``
and the engine at ``DOCKER_HOST``). The containers use the host's network (so they reach MLflow/S3 servers on
loopback), get the MLflow/S3 variables of this environment that are set (:func:`container_environment`) and
run as the images' uid 1000: the pipeline root ``WORKDIR/kfp`` is made world-writable, and it is the only host
folder they see, so with ``docker`` the source must be ``s3://…`` (or inside that folder) and the tracking
URI an MLflow server (``http(s)://``), not a file store on this machine.

MLflow: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<cwd>/mlflow.db`` with artefacts in ``<cwd>/mlartifacts``.
At the end it prints the experiment, the comparison table, the champion version, the ``mlflow ui`` command and
the link to the experiment's runs table.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlparse

import typer

from components import DEFAULT_REGISTRY
from mdfnet import tracking
from mdfnet.champion import champion_version
from mdfnet.tracking_names import TAG_CHAMPION_DECISION

if TYPE_CHECKING:
    from pipelines.pipeline import CompileOptions

log = logging.getLogger("mdfnet.run_local")
TINY_PREPROCESS = ("image_size=64", "workers=1")
RUNNERS = ("subprocess", "docker")
CONTAINER_ENV = ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_SESSION_TOKEN", "OMP_NUM_THREADS", "NO_PROXY", "no_proxy")
"""Passed to the step containers (if set) besides ``MLFLOW_TRACKING_URI`` and the pipeline's Secret keys
(:data:`pipelines.pipeline.SECRET_KEYS`: S3 credentials and endpoints, MLflow credentials)."""
LOCAL_TRAIN_DEVICE = "auto"
"""``train.device`` of every cell in a local run (instead of the cluster's ``cuda``): kfp.local runs on whatever
machine calls it, so ``auto`` trains on a GPU where this machine has a usable one and on CPU otherwise (this CPU-only
machine, and the ``docker`` runner's containers, which get no GPU), where ``cuda`` would fail and ``cpu`` would
leave a workstation's GPU idle. ``--set train.device=cpu`` still forces the CPU."""


@dataclass
class LocalRun:
    tracking_uri: str
    experiment: str
    experiment_id: str
    pipeline_run_id: str
    comparison: str
    decision: str
    champion_version: str | None

    def summary(self) -> str:
        return "\n".join([
            f"MLflow experiment: {self.experiment} (id {self.experiment_id}), pipeline run {self.pipeline_run_id}",
            f"tracking URI: {self.tracking_uri}", "", self.comparison, "",
            f"registration: {self.decision}", f"champion version: {self.champion_version}", "",
            f"MLflow UI: {tracking.ui_command(self.tracking_uri)}",
            f"runs: {tracking.runs_page_url(self.tracking_uri, self.experiment_id)}",
        ])


def run_local(source: str | Path, workdir: str | Path, grid: str = "tiny", seeds: tuple[int, ...] = (0,),
              config_overrides: tuple[str, ...] = (), preprocess_overrides: tuple[str, ...] = TINY_PREPROCESS,
              experiment: str = "mdfnet-local", registered_model: str = "mdfnet-local", max_steps: int = 0,
              tracking_uri: str | None = None, runner: str = "subprocess", registry: str | None = None,
              parallelism: int = 1) -> LocalRun:
    """Run the pipeline with kfp.local (pipeline root ``workdir/kfp``) and read the outcome back from MLflow.

    ``runner``: ``subprocess`` or ``docker`` (module docstring). ``registry``: image registry of the step images
    (default ``ghcr.io/mdfnet``).
    ``parallelism``: grid cells trained at once (kfp.local runs at most 2 loop iterations at a time; each task
    uses one thread unless ``OMP_NUM_THREADS`` says otherwise).
    """
    if parallelism < 1:
        raise ValueError(f"parallelism must be >= 1, got {parallelism}")
    import kfp.local

    if runner not in RUNNERS:
        raise ValueError(f"runner {runner!r}: expected one of {RUNNERS}")
    uri = tracking_uri or tracking.resolve_tracking_uri()
    os.environ[tracking.ENV_TRACKING_URI] = uri  # task subprocesses inherit it
    # tiny local models gain nothing from intra-op threads; busy-waiting OpenMP threads on a small shared
    # machine make them several times slower (set OMP_NUM_THREADS yourself to override)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    workdir = Path(workdir).resolve()
    root = workdir / "kfp"
    root.mkdir(parents=True, exist_ok=True)
    source_uri = str(Path(source).resolve()) if "://" not in str(source) else str(source)
    from pipelines.pipeline import build_pipeline

    if runner == "docker":
        check_container_inputs(uri, source_uri, root)
        root.chmod(0o777)  # the step images run as uid 1000 and write their outputs here
        task_runner = kfp.local.DockerRunner(network_mode="host", environment=container_environment())
    else:
        task_runner = kfp.local.SubprocessRunner(use_venv=False)
    kfp.local.init(runner=task_runner, pipeline_root=str(root), raise_on_error=True)
    pipeline = build_pipeline(local_options(registry or DEFAULT_REGISTRY, parallelism))
    pipeline(source_uri=source_uri, grid=grid, seeds=list(seeds), config_overrides=list(config_overrides),
             preprocess_overrides=list(preprocess_overrides), experiment=experiment,
             registered_model=registered_model, max_steps=max_steps)
    return read_outcome(uri, experiment, registered_model)


def local_options(registry: str = DEFAULT_REGISTRY, parallelism: int = 1) -> CompileOptions:
    """The :class:`~pipelines.pipeline.CompileOptions` of a local run: no Secret (the tasks inherit this
    environment or get :func:`container_environment`) and :data:`LOCAL_TRAIN_DEVICE`."""
    from pipelines.pipeline import CompileOptions

    return CompileOptions(registry=registry, parallelism=parallelism, secret_name="",
                          train_device=LOCAL_TRAIN_DEVICE)


def container_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of ``environ`` (default ``os.environ``) that the step containers need and that are set:
    ``MLFLOW_TRACKING_URI``, the pipeline Secret's keys and :data:`CONTAINER_ENV`. Values are taken as they
    are (never defaults), so no credential is invented or written anywhere."""
    from pipelines.pipeline import SECRET_KEYS

    env = os.environ if environ is None else environ
    names = dict.fromkeys([tracking.ENV_TRACKING_URI, *SECRET_KEYS.values(), *CONTAINER_ENV])
    return {k: env[k] for k in names if env.get(k)}


def check_container_inputs(tracking_uri: str, source_uri: str, pipeline_root: Path) -> None:
    """Raise ``ValueError`` if the step containers could not reach the tracking store or the source: they see
    the host's network and only the pipeline root of its files."""
    if urlparse(tracking_uri).scheme not in ("http", "https"):
        raise ValueError(f"runner 'docker': tracking URI {tracking_uri!r} is a store on this machine that the step "
                         "containers cannot open; use an MLflow server (MLFLOW_TRACKING_URI=http://host:port)")
    if "://" not in source_uri and not Path(source_uri).resolve().is_relative_to(pipeline_root.resolve()):
        raise ValueError(f"runner 'docker': source {source_uri!r} is not visible in the containers (only the "
                         f"pipeline root {str(pipeline_root)!r} is mounted); use s3://bucket/prefix or a folder "
                         "inside the pipeline root")


def read_outcome(uri: str, experiment: str, registered_model: str) -> LocalRun:
    """The newest pipeline run of ``experiment``: its comparison table, registration decision, champion."""
    os.environ[tracking.ENV_TRACKING_URI] = uri
    client = tracking.configure()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise RuntimeError(f"MLflow experiment {experiment!r} not found at {uri}")
    runs = client.search_runs([exp.experiment_id], f"tags.`{tracking.TAG_ROLE}` = 'pipeline'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise RuntimeError(f"no pipeline run in experiment {experiment!r}")
    run = runs[0]
    table = client.download_artifacts(run.info.run_id, "comparison.md")
    return LocalRun(uri, experiment, exp.experiment_id, run.info.run_id, Path(table).read_text(),
                    run.data.tags.get(TAG_CHAMPION_DECISION, "n/a"),
                    champion_version(client, registered_model))


def main(
    source: Annotated[Path | None, typer.Option("--source", help="Folder with the four source trees.")] = None,
    synth: Annotated[int, typer.Option("--synth", help="Generate N synthetic studies into WORKDIR/sources first.")] = 0,
    workdir: Annotated[Path, typer.Option("--workdir", help="Pipeline root and generated data.")] = Path("data/local"),
    grid: Annotated[str, typer.Option("--grid")] = "tiny",
    seeds: Annotated[list[int] | None, typer.Option("--seeds", help="Repeat for several seeds.")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="TrainConfig override for every cell.")] = None,
    pre_overrides: Annotated[list[str] | None, typer.Option("--preprocess-set", help="PreprocessConfig override "
                                                            "(default image_size=64 workers=1).")] = None,
    experiment: Annotated[str, typer.Option("--experiment")] = "mdfnet-local",
    model_name: Annotated[str, typer.Option("--model-name")] = "mdfnet-local",
    max_steps: Annotated[int, typer.Option("--max-steps", help="0 = the configured epochs.")] = 0,
    runner: Annotated[str, typer.Option("--runner", help="subprocess (this Python) or docker (the step "
                                        "images, via DOCKER_HOST).")] = "subprocess",
    registry: Annotated[str, typer.Option("--registry", envvar="MDFNET_IMAGE_REGISTRY",
                                          help="Step image registry.")] = DEFAULT_REGISTRY,
    parallelism: Annotated[int, typer.Option("--parallelism", help="Grid cells trained at once (kfp.local "
                                             "runs at most 2).")] = 1,
    data_seed: Annotated[int, typer.Option("--data-seed", help="Seed of the --synth sources.")] = 0,
) -> None:
    """Run the MDF-Net pipeline locally with kfp.local and print the MLflow outcome."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if synth:
        from mdfnet.data.synthetic import generate

        source = workdir / "sources"
        generate(source, n_studies=synth, seed=data_seed, image_size=96)
    if source is None:
        raise typer.BadParameter("give --source DIR (or --synth N to generate synthetic sources)")
    out = run_local(source, workdir, grid=grid, seeds=tuple(seeds or (0,)), config_overrides=tuple(overrides or ()),
                    preprocess_overrides=tuple(pre_overrides) if pre_overrides else TINY_PREPROCESS,
                    experiment=experiment, registered_model=model_name, max_steps=max_steps, runner=runner,
                    registry=registry, parallelism=parallelism)
    typer.echo(out.summary())


if __name__ == "__main__":
    typer.run(main)
