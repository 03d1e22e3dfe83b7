"""KFP v2 components: one file per pipeline step, each a plain function — a thin typed adapter over one
:mod:`mdfnet.pipeline.steps` function — made into a component by :func:`build_components` for a registry.

One name per step: step ``<step>`` is the function ``<step>`` in ``components/<step>.py``, calls
``mdfnet.pipeline.steps.<step>_step``, is the task ``<step>`` of the compiled pipeline (KFP writes ``_`` as ``-``)
and runs in the image ``<registry>/mdfnet-<image>:<mdfnet version>`` with image = step with ``_`` → ``-`` (the same
spelling as the task). ``components/steps.tsv`` (also read by ``images/build.sh``) is the one list of steps and
images: :data:`FUNCTIONS` is read from it (a row without its module, or a module without its row, is an error) and
says which base each image is built from. Nothing is read from the environment at import time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mdfnet import __version__

DEFAULT_REGISTRY = "ghcr.io/mdfnet"
STEPS_FILE = Path(__file__).resolve().parent / "steps.tsv"  # package data: shipped in the wheel
NO_COMPONENT = "-"
SERVING_IMAGE = "serve"
"""``mdfnet-serve``: the torch image that runs ``mlflow models serve`` for the champion (the Helm chart's)."""


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
        image, component = fields[0], fields[2]
        if component != NO_COMPONENT and image != image_name(component):
            raise ValueError(f"{path}:{n}: the image of component {component!r} is {image_name(component)!r} (the "
                             f"component name with '_' → '-'), got {image!r}")
        rows.append(StepImage(image, fields[1], component, tuple(fields[3:])))
    return rows


def image_name(component: str) -> str:
    """The image (and compiled task) name of a step: its component name with ``_`` → ``-``."""
    return component.replace("_", "-")


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
    return {name: dsl.component(func, base_image=image_ref(registry, images[name].image), install_kfp_package=False)
            for name, func in FUNCTIONS.items()}


def load_functions(path: Path = STEPS_FILE) -> dict[str, Callable]:
    """Component name → its function, for every component row of ``path`` in its order (the pipeline's tasks):
    function ``<name>`` of module ``components.<name>``. ``ValueError`` for a row whose module or function is
    missing and for a ``components/*.py`` with no row."""
    rows = step_images(path)
    here = Path(__file__).resolve().parent
    unlisted = sorted(p.stem for p in here.glob("*.py") if p.stem != "__init__" and p.stem not in rows)
    if unlisted:
        raise ValueError(f"components/{unlisted[0]}.py has no row in {path} (every component module needs one; "
                         f"without a row: {unlisted})")
    functions: dict[str, Callable] = {}
    for name in rows:
        if not (here / f"{name}.py").is_file():
            raise ValueError(f"{path}: component {name!r} has no module components/{name}.py")
        func = getattr(importlib.import_module(f"{__name__}.{name}"), name, None)
        if not callable(func):
            raise ValueError(f"components/{name}.py defines no function {name}() (the component of its row in {path})")
        functions[name] = func
    return functions


FUNCTIONS: dict[str, Callable] = load_functions()
"""Component name → its function (the pipeline's tasks, in order), from ``components/steps.tsv``."""
