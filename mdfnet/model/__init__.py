"""MDF-Net model family by composition: backbones, clinical encoder, spatialiser, fusion ops, variants, loss.

``build_model(ModelConfig, num_numeric, num_categorical, image_size)`` is the one entry point; see
:mod:`mdfnet.model.build` for the variant table and :mod:`mdfnet.model.detector` for the data flow. The names of
the parts live in :mod:`mdfnet.model.catalog` and :class:`ModelConfig` in :mod:`mdfnet.model.config`: both are
torch-free, and the torch modules below are imported only when one of their names is used.
"""

from __future__ import annotations

from importlib import import_module

from mdfnet.model.catalog import VARIANTS, VariantSpec
from mdfnet.model.config import ModelConfig

_LAZY = {
    "BACKBONES": "backbones", "build_backbone": "backbones",
    "build_model": "build",
    "ClinicalEncoder": "clinical", "NoClinical": "clinical", "Spatialiser": "clinical",
    "MDFNet": "detector",
    "FUSIONS": "fusion", "build_fusion": "fusion",
    "LOSS_WEIGHTINGS": "loss", "SumLoss": "loss", "UncertaintyWeightedLoss": "loss", "loss_names": "loss",
    "uncertainty_weighted_loss": "loss",
}

__all__ = ["VARIANTS", "ModelConfig", "VariantSpec", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f"mdfnet.model.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'mdfnet.model' has no attribute {name!r}")
