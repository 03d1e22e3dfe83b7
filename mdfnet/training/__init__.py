"""Training, by concern: :mod:`~mdfnet.training.config` (torch-free ``TrainConfig``),
:mod:`~mdfnet.training.determinism` (exact resume), :mod:`~mdfnet.training.run_folder` (the run folder's file
names), :mod:`~mdfnet.training.checkpoint` (one ``TrainState``), :mod:`~mdfnet.training.inference`
(``predict``, ``evaluate_split``) and :mod:`~mdfnet.training.loop` (``train``, ``optimiser_step``). The config is
imported eagerly (torch-free); the rest when one of its names is used.
"""

from __future__ import annotations

from importlib import import_module

from mdfnet.training.config import DataConfig, EvalSection, TrainConfig, TrainSection, config_from_sources
from mdfnet.training.errors import NonFiniteLossError, TrainError

_LAZY = {
    "TrainResult": "loop", "train": "loop", "optimiser_step": "loop", "resolve_amp": "device",
    "resolve_device": "device", "SCHEDULES": "loop", "finite_or_raise": "loop",
    "predict": "inference", "evaluate_split": "inference", "clinical_attribution": "attribution",
    "TrainState": "checkpoint", "load_checkpoint": "checkpoint", "load_model": "checkpoint",
    "CHECKPOINT_FORMAT": "checkpoint",
    "EpochSampler": "determinism",
}

__all__ = ["DataConfig", "EvalSection", "NonFiniteLossError", "TrainConfig", "TrainError", "TrainSection", "config_from_sources",
           *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f"mdfnet.training.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'mdfnet.training' has no attribute {name!r}")
