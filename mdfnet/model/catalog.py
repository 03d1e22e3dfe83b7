"""The names of the model family's parts, torch-free: the one list each table of parts is keyed by.

Configs validate against these names without importing torch (the grid step runs in the slim image); the torch
tables of parts (name → builder: :data:`mdfnet.model.fusion.FUSIONS`, :data:`mdfnet.model.backbones.BACKBONES`,
:data:`mdfnet.model.loss.LOSS_WEIGHTINGS`) are keyed by them and check at import that they match
(:func:`check_table`), so a name exists in exactly one place. (``training.loop.SCHEDULES`` checks itself the same
way against ``train.schedule``'s ``Literal``.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class VariantSpec:
    """Which fusions a variant uses."""

    fusion_3d: bool
    fusion_1d: bool

    @property
    def uses_clinical(self) -> bool:
        return self.fusion_3d or self.fusion_1d


VARIANTS: dict[str, VariantSpec] = {
    "baseline": VariantSpec(fusion_3d=False, fusion_1d=False),
    "msf3d": VariantSpec(fusion_3d=True, fusion_1d=False),
    "msf1d": VariantSpec(fusion_3d=False, fusion_1d=True),
    "mdf": VariantSpec(fusion_3d=True, fusion_1d=True),
}
"""Variant name → the fusions it uses (the paper's four models)."""

FUSION_NAMES: tuple[str, ...] = ("sum", "concat_linear", "concat_conv", "hadamard")
"""3D fusion ops (:mod:`mdfnet.model.fusion`)."""
NO_FUSION = "none"
"""The ``model.fusion`` of a variant without 3D fusion (baseline, msf1d): what its runs record."""

BACKBONE_NAMES: tuple[str, ...] = ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "resnet18",
                                   "resnet50", "densenet121", "convnext_tiny")
"""Torchvision classifiers usable as backbones (:mod:`mdfnet.model.backbones`)."""
BACKBONE_STRIDES: tuple[int, ...] = (8, 16, 32)
"""Output strides every backbone can be cut to (``model.backbone_stride``)."""

CLINICAL_MAPS: tuple[str, ...] = ("full", "mean", "mean_norm")
"""``model.clinical_map``, what 3D fusion receives from the clinical backbone: ``full``, its map as it is (the
paper); ``mean``, each channel's spatial mean at every position; ``mean_norm``, that mean standardised across
studies with a learnable gain (:mod:`mdfnet.model.clinical`). Variants without 3D fusion record ``none``."""

LOSS_WEIGHTINGS: tuple[str, ...] = ("uncertainty", "sum")
"""How the detector's losses are combined (:mod:`mdfnet.model.loss`)."""


def check_table(kind: str, table: Iterable[str], names: Iterable[str], source: str = "mdfnet.model.catalog") -> None:
    """Raise ``RuntimeError`` unless the table of parts ``table`` (its keys) holds exactly ``names``, the list in
    ``source`` (a table out of step with the names configs are validated against)."""
    have, want = set(table), set(names)
    if have != want:
        raise RuntimeError(f"{kind} table {sorted(have)} does not match {source} {sorted(want)}: "
                           "add or remove the name in both")
