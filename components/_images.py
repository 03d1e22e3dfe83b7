"""Step image names: ``<registry>/mdfnet-<step>:<mdfnet.__version__>`` (Dockerfiles in ``images/<step>/``)."""

from __future__ import annotations

import os

from mdfnet import __version__

REGISTRY_ENV = "MDFNET_IMAGE_REGISTRY"
DEFAULT_REGISTRY = "ghcr.io/mdfnet"
STEPS = ("join", "preprocess", "grid", "train", "evaluate", "compare", "register")


def registry() -> str:
    """``MDFNET_IMAGE_REGISTRY`` (trailing ``/`` dropped) or :data:`DEFAULT_REGISTRY`."""
    return (os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY).rstrip("/")


def image(step: str) -> str:
    if step not in STEPS:
        raise ValueError(f"unknown step image {step!r}; expected one of {STEPS}")
    return f"{registry()}/mdfnet-{step}:{__version__}"


def all_images() -> dict[str, str]:
    return {step: image(step) for step in STEPS}
