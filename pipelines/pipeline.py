"""The MDF-Net KFP v2 pipeline: join → preprocess → expand_grid → ParallelFor(train → evaluate) → compare → register.

Runtime parameters (set per run in the KFP UI or by :mod:`pipelines.run_local`): ``source_uri`` (local folder or
``s3://bucket/prefix`` with the four source trees), ``preprocess_overrides`` (``PreprocessConfig`` keys, e.g.
``image_size=512``), ``config_overrides`` (``TrainConfig`` keys, applied to every cell), ``grid`` (a file stem of
``pipelines/grids``; the grids are embedded at compile time), ``seeds``, ``experiment`` (MLflow),
``registered_model``, ``max_steps`` (0 = train the configured epochs) and ``mlflow_ui`` (the MLflow UI address
the compare step's outputs link to; empty: the tracking URI when it is http(s)).

Compile-time options (:class:`CompileOptions`): the image ``registry``, loop ``parallelism`` (KFP needs it as a
constant), the GPU node selector / toleration of the train task, its timeout and retries, the size of its
``/dev/shm`` (a memory-backed emptyDir: the DataLoader workers pass batches through it, and Kubernetes gives a pod
only 64 MiB there), the ``train.device`` every cell asks for (``cuda`` on the cluster: a pod without a usable GPU
fails at once instead of training on CPU), and the Kubernetes Secret whose keys reach every step as environment
variables (:data:`SECRET_KEYS`; values never appear in the package), and the oldest KFP backend release the package
must run on (``min_backend``, :mod:`pipelines.backend`: below 2.15.0 the Secret's keys are required, not
optional). The components are built for the registry here (``components.build_components``), not at import.
"""


import re
from dataclasses import dataclass, field  # no `from __future__ import annotations`: KFP reads real types
from pathlib import Path
from typing import Any

from kfp import dsl, kubernetes

from components import DEFAULT_REGISTRY, all_images, build_components
from mdfnet.pipeline.grids import load_grids
from mdfnet.training.config import config_from_sources
from pipelines import backend

GRIDS_DIR = Path(__file__).resolve().parent / "grids"
PIPELINE_NAME = "mdfnet"
SECRET_KEYS = {
    key: key
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL",
                "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "MLFLOW_TRACKING_TOKEN")
}
"""Secret key → env var. On clusters with KFP's MLflow plugin leave the MLFLOW_* keys out of the Secret (KFP
injects them); the Secret is mounted with ``optional`` so absent keys are fine."""
SHM_PATH = "/dev/shm"
SHM_VOLUME = "dshm"
QUANTITY = re.compile(r"\+?(?P<number>[0-9]+(\.[0-9]*)?|\.[0-9]+)"
                      r"(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?")
"""A non-negative Kubernetes resource quantity (``2Gi``, ``512Mi``, ``1e9``, ``1.5G``)."""


def check_quantity(text: str) -> str:
    """``text`` if it is a positive Kubernetes quantity, else ``ValueError`` naming the value."""
    m = QUANTITY.fullmatch(text)
    if not m or float(m.group("number")) <= 0:
        raise ValueError(f"expected a positive Kubernetes quantity such as 2Gi, 512Mi or 1e9, got {text!r}")
    return text


def check_train_device(device: str) -> str:
    """``device`` if ``train.device`` accepts it (the one check: :class:`mdfnet.training.config.TrainSection`), else
    ``ValueError`` (a :class:`~mdfnet.config.ConfigError`) naming the value."""
    config_from_sources(None, [f"train.device={device}"])
    return device


@dataclass(frozen=True)
class CompileOptions:
    """What is fixed when the pipeline is compiled. The defaults are stated here only: ``pipelines/compile.py``'s
    options default to them."""

    registry: str = DEFAULT_REGISTRY
    parallelism: int = 4
    gpu_node_selector: tuple[str, str] | None = ("nvidia.com/gpu.present", "true")
    """(key, value) the train task's node must carry; the default is the label the NVIDIA GPU operator puts on GPU
    nodes. None: no selector (the GPU request and the toleration alone place the pod)."""
    gpu_toleration: tuple[str, str | None, str] | None = ("nvidia.com/gpu", None, "NoSchedule")
    """(key, value or None for ``Exists``, effect)."""
    train_timeout_s: int = 24 * 3600
    train_retries: int = 2
    secret_name: str = "mdfnet-credentials"
    shm_size: str = "2Gi"
    """Size limit (a Kubernetes quantity) of the memory-backed emptyDir at ``/dev/shm`` of the train task; it counts
    against the pod's memory."""
    train_device: str = "cuda"
    """``train.device`` of every cell (the expand_grid task applies it after the grid's ``base`` and before the
    run's ``config_overrides``, so a run can still pass ``train.device=cpu`` to debug)."""
    min_backend: str = backend.MIN_BACKEND
    """The oldest KFP backend release the package must run on (:func:`pipelines.backend.check_backend` refuses a
    package that release cannot run); below 2.15.0 the Secret's keys are compiled as required, not optional."""
    grids: dict[str, Any] = field(default_factory=lambda: load_grids(GRIDS_DIR))

    def __post_init__(self) -> None:
        for name, check in (("shm_size", check_quantity), ("train_device", check_train_device),
                            ("min_backend", backend.parse_version)):
            try:
                check(getattr(self, name))
            except ValueError as e:
                raise ValueError(f"CompileOptions.{name}: {e}") from e


def _with_secret(task: dsl.PipelineTask, opts: CompileOptions) -> dsl.PipelineTask:
    """Mount :data:`SECRET_KEYS` of ``opts.secret_name`` as env, each key optional where ``opts.min_backend`` runs
    that (2.15.0): kfp-kubernetes writes ``SecretAsEnv.optional`` even when false, and an older backend refuses the
    unknown field (:mod:`pipelines.backend`), so below it the field is left out (every key then required)."""
    if opts.secret_name:
        kubernetes.use_secret_as_env(task, secret_name=opts.secret_name, secret_key_to_env=SECRET_KEYS, optional=True)
        if not backend.supports(opts.min_backend, backend.OPTIONAL_SECRET_ENV):
            for mount in task.platform_config["kubernetes"]["secretAsEnv"]:
                mount.pop("optional", None)
    return task


def _gpu(task: dsl.PipelineTask, opts: CompileOptions) -> dsl.PipelineTask:
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    task.set_cpu_request("4").set_memory_request("16G")
    task.set_retry(num_retries=opts.train_retries, backoff_duration="60s", backoff_factor=2)
    kubernetes.set_timeout(task, opts.train_timeout_s)
    kubernetes.empty_dir_mount(task, volume_name=SHM_VOLUME, mount_path=SHM_PATH, medium="Memory",
                               size_limit=opts.shm_size)
    if opts.gpu_node_selector:
        kubernetes.add_node_selector(task, *opts.gpu_node_selector)
    if opts.gpu_toleration:
        key, value, effect = opts.gpu_toleration
        kubernetes.add_toleration(task, key=key, operator="Equal" if value is not None else "Exists", value=value,
                                  effect=effect)
    return task


def build_pipeline(opts: CompileOptions | None = None):
    """The pipeline function for ``opts`` (compile it with ``kfp.compiler.Compiler`` or run it with kfp.local)."""
    opts = opts or CompileOptions()
    grids = opts.grids
    images = all_images(opts.registry)
    c = build_components(opts.registry)

    @dsl.pipeline(name=PIPELINE_NAME, description="MDF-Net: join, preprocess, ablation grid of GPU trainings "
                  "with evaluation, comparison and champion registration; tracked in MLflow.")
    def mdfnet_pipeline(
        source_uri: str,
        grid: str = "paper-variants",
        seeds: list[int] = [0],  # noqa: B006 (KFP reads defaults from the signature)
        config_overrides: list[str] = [],  # noqa: B006
        preprocess_overrides: list[str] = [],  # noqa: B006
        experiment: str = "mdfnet",
        registered_model: str = "mdfnet",
        max_steps: int = 0,
        mlflow_ui: str = "",
    ):
        """The MDF-Net pipeline (the decorator's description is the one KFP shows).

        Args:
            source_uri: Local folder or ``s3://bucket/prefix`` holding the four PhysioNet downloads (REFLACX,
                MIMIC-CXR-JPG, MIMIC-IV, MIMIC-IV-ED) or MIMIC-Eye's per-patient folders.
            grid: The ablation grid to train: a file stem of ``pipelines/grids`` (embedded at compile time).
            seeds: Seeds; every cell of the grid is trained once per seed.
            config_overrides: ``TrainConfig`` overrides (``key=value``, e.g. ``train.epochs=5``), applied to every
                cell after the grid's own settings.
            preprocess_overrides: ``PreprocessConfig`` overrides (``key=value``, e.g. ``image_size=512``).
            experiment: MLflow experiment of the pipeline run and its cell runs.
            registered_model: MLflow registered model the best run becomes a version of (alias ``champion``
                moves only if it is better).
            max_steps: Stop each training after this many optimiser steps; 0 trains the configured epochs.
            mlflow_ui: MLflow UI address (http(s)://…) the compare step's outputs link to, e.g. the one you
                port-forward; empty: the tracking URI when it is http(s).
        """
        joined = _with_secret(c["join"](source_uri=source_uri), opts).set_display_name("join")
        pre = _with_secret(c["preprocess"](joined=joined.outputs["joined"], overrides=preprocess_overrides), opts)
        items = c["expand_grid"](data=pre.outputs["data"], grids=grids, grid=grid, seeds=seeds,
                                 overrides=config_overrides, experiment=experiment,
                                 run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                 images=images, train_device=opts.train_device)
        _with_secret(items, opts).set_caching_options(False)
        with dsl.ParallelFor(items.output, parallelism=opts.parallelism) as item:
            trained = c["train"](item=item, data=pre.outputs["data"], max_steps=max_steps)
            _gpu(_with_secret(trained, opts), opts).set_caching_options(False)
            scored = c["evaluate"](model=trained.outputs["model"], data=pre.outputs["data"])
            _with_secret(scored, opts).set_caching_options(False)
        ranked = c["compare"](results=dsl.Collected(scored.outputs["Output"]), mlflow_ui=mlflow_ui)
        _with_secret(ranked, opts).set_caching_options(False)
        reg = c["register"](best=ranked.outputs["Output"], model_name=registered_model)
        _with_secret(reg, opts).set_caching_options(False)

    return mdfnet_pipeline
