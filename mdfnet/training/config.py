"""``TrainConfig``: the whole typed training configuration, torch-free (``configs/train.yaml`` = the paper).

Sections ``model`` (:class:`mdfnet.model.ModelConfig`), ``train`` (:class:`TrainSection`), ``data``
(:class:`DataConfig`) and ``eval`` (:class:`EvalSection`), plus ``seed``. :func:`config_from_sources` is the one
place text becomes a config
(defaults ← base ← YAML ← ``key=value`` overrides); it returns the *resolved* config (``model.fusion`` is ``none``
for variants without 3D fusion), which then travels as data (``to_dict``/``from_dict``) across the pipeline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from mdfnet.config import ConfigError, load_config
from mdfnet.data import schema
from mdfnet.model.catalog import LOSS_WEIGHTINGS
from mdfnet.model.config import ModelConfig

Schedule = Literal["constant", "step", "cosine"]
"""The learning-rate schedules ``train.schedule`` accepts (builders: :data:`mdfnet.training.loop.SCHEDULES`,
checked against this list at import)."""
SCHEDULE_NAMES: tuple[str, ...] = get_args(Schedule)


@dataclass
class TrainSection:
    """Keys of the ``train`` section (``--set train.lr=0.01``)."""

    epochs: int = 100
    batch_size: int = 4
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Schedule = "constant"
    step_epochs: int = 30
    gamma: float = 0.1
    loss_weighting: str = "uncertainty"
    grad_clip_norm: float = 0.0
    checkpoint_every_s: float = 600.0
    eval_every: int = 1
    num_workers: int = 2
    device: str = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    progress: bool = True
    system_metrics_s: float = 10.0
    """Sampling interval of the run's system metrics (CPU, memory, GPU utilisation and memory) in MLflow; 0 = off."""

    def validate(self) -> None:
        for key in ("epochs", "batch_size", "eval_every", "step_epochs"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key}: expected an integer >= 1, got {getattr(self, key)!r}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr: expected a positive number, got {self.lr!r}")
        for key in ("momentum", "weight_decay", "grad_clip_norm", "num_workers", "checkpoint_every_s",
                    "system_metrics_s"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key}: expected a value >= 0, got {getattr(self, key)!r}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ConfigError(f"train.loss_weighting: value {self.loss_weighting!r} is not one of {list(LOSS_WEIGHTINGS)}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"train.device: expected 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")


@dataclass
class DataConfig:
    """Keys of the ``data`` section: clinical ``features`` (subset of the 10; ``[]`` = none), the expected
    ``image_size`` (``None``: whatever ``preprocessing.json`` says; otherwise it must match) and
    ``shuffle_clinical`` (the control: every study gets another study's clinical values, a fixed permutation
    per split, in training and evaluation alike; see :class:`mdfnet.data.MDFDataset`)."""

    features: list[str] = field(default_factory=lambda: list(schema.ALL_FEATURES))
    image_size: int | None = None
    shuffle_clinical: bool = False

    def validate(self) -> None:
        unknown = [f for f in self.features if f not in schema.ALL_FEATURES]
        if unknown:
            raise ConfigError(f"data.features: unknown feature(s) {unknown}; expected a subset of {list(schema.ALL_FEATURES)}")
        if len(set(self.features)) != len(self.features):
            raise ConfigError(f"data.features: duplicates in {self.features}")


@dataclass
class EvalSection:
    """Keys of the ``eval`` section: what is measured beyond validation AP (``mdfnet report`` shows both).

    ``train_ap_images``: at every validation also score this many train images (the first N, fixed) → ``train/ap``,
    ``train/ar`` per epoch (the generalisation figure); 0 = off. ``attribution_repeats``: the evaluate step's
    permutation importance of each clinical feature on validation AP, repeated N times (0 = off; see
    :mod:`mdfnet.training.attribution`)."""

    train_ap_images: int = 128
    attribution_repeats: int = 5

    def validate(self) -> None:
        for key in ("train_ap_images", "attribution_repeats"):
            if getattr(self, key) < 0:
                raise ConfigError(f"eval.{key}: expected an integer >= 0, got {getattr(self, key)!r}")


@dataclass
class TrainConfig:
    """The whole training configuration (``configs/train.yaml`` holds the paper defaults)."""

    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainSection = field(default_factory=TrainSection)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalSection = field(default_factory=EvalSection)

    def resolved(self) -> TrainConfig:
        """The config as runs record it: ``model.fusion`` = ``none`` where the variant has no 3D fusion."""
        return dataclasses.replace(self, model=self.model.resolved())


def config_from_sources(config: str | Path | None = None, overrides: Sequence[str] = (),
                        base: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults ← ``base`` ← YAML ``config`` ← ``overrides`` (``model.fusion=concat_conv``), resolved."""
    return load_config(TrainConfig, config, list(overrides), base=base).resolved()
