"""3D fusion ops (the table :data:`FUSIONS`): combine the image feature map and the clinical feature map before the RPN.

Every op maps ``image [B, C, h, w]`` and ``clinical [B, C, h, w]`` to ``[B, C, h, w]``:

- ``sum``: ``image + clinical`` (the paper's best);
- ``hadamard``: ``image * clinical``;
- ``concat_linear``: ``Conv1×1(concat(image, clinical))`` (a per-position linear layer 2C → C);
- ``concat_conv``: ``Conv3×3(concat(image, clinical))``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mdfnet.model.catalog import FUSION_NAMES, check_table


def _check(image: torch.Tensor, clinical: torch.Tensor) -> None:
    if image.shape != clinical.shape:
        raise ValueError(
            f"fusion needs equal shapes, got image {tuple(image.shape)} and clinical {tuple(clinical.shape)}"
        )


class SumFusion(nn.Module):
    def forward(self, image: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:
        _check(image, clinical)
        return image + clinical


class HadamardFusion(nn.Module):
    def forward(self, image: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:
        _check(image, clinical)
        return image * clinical


class ConcatConvFusion(nn.Module):
    """``Conv(k×k)(concat([image, clinical], dim=1))``: 2C → C channels, same spatial size."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, kernel_size=kernel_size, padding=kernel_size // 2)

    def forward(self, image: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:
        _check(image, clinical)
        return self.conv(torch.cat([image, clinical], dim=1))


FUSIONS: dict[str, Callable[[int], nn.Module]] = {
    "sum": lambda channels: SumFusion(),
    "concat_linear": lambda channels: ConcatConvFusion(channels, kernel_size=1),
    "concat_conv": lambda channels: ConcatConvFusion(channels, kernel_size=3),
    "hadamard": lambda channels: HadamardFusion(),
}
"""Fusion name → builder taking the feature map's channel count (names: :data:`mdfnet.model.catalog.FUSION_NAMES`)."""
check_table("fusion", FUSIONS, FUSION_NAMES)


def build_fusion(name: str, channels: int) -> nn.Module:
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; expected one of {sorted(FUSIONS)}")
    return FUSIONS[name](channels)
