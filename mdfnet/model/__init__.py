"""MDF-Net model family by composition: backbones, clinical encoder, spatialiser, fusion ops, variants, loss.

``build_model(ModelConfig, num_numeric, num_categorical, image_size)`` is the one entry point; see
:mod:`mdfnet.model.build` for the variant table and :mod:`mdfnet.model.detector` for the data flow.
"""

from mdfnet.model.backbones import BACKBONES, build_backbone
from mdfnet.model.build import VARIANTS, build_model
from mdfnet.model.clinical import ClinicalEncoder, NoClinical, Spatialiser
from mdfnet.model.config import ModelConfig
from mdfnet.model.detector import MDFNet
from mdfnet.model.fusion import FUSIONS, build_fusion
from mdfnet.model.loss import (
    LOSS_WEIGHTINGS,
    SumLoss,
    UncertaintyWeightedLoss,
    loss_names,
    uncertainty_weighted_loss,
)

__all__ = [
    "BACKBONES", "FUSIONS", "LOSS_WEIGHTINGS", "VARIANTS", "ClinicalEncoder", "MDFNet", "ModelConfig", "NoClinical",
    "Spatialiser", "SumLoss", "UncertaintyWeightedLoss", "build_backbone", "build_fusion", "build_model",
    "loss_names", "uncertainty_weighted_loss",
]
