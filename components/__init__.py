"""KFP v2 components: one file per pipeline step, each a plain function — a thin typed adapter over one
:mod:`mdfnet.pipeline.steps` function — made into a component by :func:`build_components` for a registry.

Images are ``<registry>/mdfnet-<image>:<mdfnet version>``; which image runs which component, and which base it is
built from, is ``components/steps.tsv`` (also read by ``images/build.sh``): the one map from step to image. Nothing is
read from the environment at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from components.compare import compare
from components.evaluate import evaluate
from components.expand_grid import expand_grid
from components.join import join
from components.preprocess import preprocess
from components.register import register
from components.train import train
from mdfnet import __version__

DEFAULT_REGISTRY = "ghcr.io/mdfnet"
STEPS_FILE = Path(__file__).resolve().parent / "steps.tsv"  # package data: shipped in the wheel
NO_COMPONENT = "-"
SERVING_IMAGE = "serve"
"""``mdfnet-serve``: the torch image that runs ``mlflow models serve`` for the champion (the Helm chart's)."""
FUNCTIONS: dict[str, Callable] = {f.__name__: f for f in (join, preprocess, expand_grid, train, evaluate, compare,
                                                          register)}
"""Component name → its function (the pipeline's tasks, in order)."""


@dataclass(frozen=True)
class StepImage:
    """One row of ``components/steps.tsv``: image name, base image (``base`` or ``base-torch``), the component it runs
    and the modules its build must import."""

    image: str
    base: str
    component: str
    modules: tuple[str, ...]


def image_rows(path: Path = STEPS_FILE) -> list[StepImage]:
    """Every row of ``components/steps.tsv`` (component ``-``: an image no pipeline task runs, the serving image);
    errors name the file and line."""
    rows: list[StepImage] = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 4 or fields[1] not in ("base", "base-torch"):
            raise ValueError(f"{path}:{n}: expected 'image base|base-torch component|- module...', got {line!r}")
        rows.append(StepImage(fields[0], fields[1], fields[2], tuple(fields[3:])))
    return rows


def step_images(path: Path = STEPS_FILE) -> dict[str, StepImage]:
    """The images of pipeline tasks, keyed by component name."""
    return {r.component: r for r in image_rows(path) if r.component != NO_COMPONENT}


def image_ref(registry: str, image: str) -> str:
    """``<registry>/mdfnet-<image>:<mdfnet version>`` (trailing ``/`` of the registry dropped)."""
    return f"{registry.rstrip('/')}/mdfnet-{image}:{__version__}"


def all_images(registry: str = DEFAULT_REGISTRY) -> dict[str, str]:
    """Image name → reference, for every image ``images/build.sh`` builds (the step images and ``serve``)."""
    return {s.image: image_ref(registry, s.image) for s in image_rows()}


def build_components(registry: str = DEFAULT_REGISTRY) -> dict[str, Callable]:
    """Component name → KFP component running in its step image of ``registry``."""
    from kfp import dsl

    images = step_images()
    missing = sorted(set(FUNCTIONS) ^ set(images))
    if missing:
        raise ValueError(f"components {missing} are in only one of components/ and {STEPS_FILE}")
    return {name: dsl.component(func, base_image=image_ref(registry, images[name].image), install_kfp_package=False)
            for name, func in FUNCTIONS.items()}
