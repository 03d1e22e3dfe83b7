"""``from mdfnet.train import train, config_from_sources, load_model, predict``: the names a user calls, kept at
their old import path. The code lives in :mod:`mdfnet.training` (config, determinism, checkpoint, inference,
loop)."""

from __future__ import annotations

from mdfnet.training.checkpoint import load_checkpoint, load_model
from mdfnet.training.config import DataConfig, TrainConfig, TrainSection, config_from_sources
from mdfnet.training.errors import NonFiniteLossError, TrainError
from mdfnet.training.inference import evaluate_split, predict
from mdfnet.training.loop import TrainResult, train

__all__ = ["DataConfig", "NonFiniteLossError", "TrainConfig", "TrainError", "TrainResult", "TrainSection",
           "config_from_sources", "evaluate_split", "load_checkpoint", "load_model", "predict", "train"]
