"""Clinical pathway: encoder (embeddings + numeric features → vector C) and spatialiser (C → image-shaped map).

Shapes (``B`` images, ``k`` numeric features, ``m`` categorical features, ``E`` embedding size):

- :class:`ClinicalEncoder`: ``{"numeric": float [B, k], "categorical": long [B, m]}`` → ``C``: ``[B, m·E + k]``
  (one ``nn.Embedding(len(GENDER_CODES) + 1, E)`` per categorical feature, then the numeric values, in that
  order). With all 10 features and E = 55 (paper): 55 + 9 = 64. Works for any subset, e.g. gender only (55)
  or two numeric features only (2).
- :class:`NoClinical`: the baseline's encoder; ignores its input and returns ``[B, 0]``.
- :class:`Spatialiser`: ``C`` ``[B, D]`` (seen as ``[B, D, 1, 1]``) → ``[B, 3, S, S]`` with ``log2(S)`` blocks of
  ``ConvTranspose2d(k=2, s=2) → BN → ReLU → Conv2d(3×3) → BN → ReLU``, each doubling the side (9 blocks at
  512 px).
- what 3D fusion receives from the clinical backbone's map ``[B, C, h, w]`` (``model.clinical_map``; ours, the
  paper fuses the map as it is): :class:`SpatialMean` (each channel's mean at every position) or
  :class:`SpatialMeanNorm` (that mean standardised across studies, times a learnable gain). Measured
  (``benchmarks/probe_msf3d.py``, small-scale recipe): the full map carries the triage in its spatial pattern
  (a linear probe reads it from the map pooled to 2×2), but not in any one RoI's pooled features, which the box
  head sees; a spatially constant map gives every RoI the study's whole clinical vector.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from mdfnet.data.schema import GENDER_CODES


class ClinicalEncoder(nn.Module):
    """``{"numeric": [B, k], "categorical": [B, m]}`` → ``[B, m·embedding_dim + k]``."""

    def __init__(self, num_numeric: int, num_categorical: int, embedding_dim: int = 55,
                 num_categories: int = len(GENDER_CODES) + 1) -> None:
        super().__init__()
        if num_numeric < 0 or num_categorical < 0:
            raise ValueError(f"feature counts must be >= 0, got numeric={num_numeric}, categorical={num_categorical}")
        self.num_numeric = num_numeric
        self.num_categorical = num_categorical
        self.embeddings = nn.ModuleList(nn.Embedding(num_categories, embedding_dim) for _ in range(num_categorical))
        self.out_dim = num_categorical * embedding_dim + num_numeric

    def forward(self, clinical: Mapping[str, torch.Tensor] | None, batch_size: int) -> torch.Tensor:
        if clinical is None:
            raise ValueError("this model fuses clinical data: pass clinical={'numeric': [B,k], 'categorical': [B,m]}")
        numeric, categorical = clinical["numeric"], clinical["categorical"]
        if tuple(numeric.shape) != (batch_size, self.num_numeric):
            raise ValueError(f"clinical['numeric'] has shape {tuple(numeric.shape)}, expected {(batch_size, self.num_numeric)}")
        if tuple(categorical.shape) != (batch_size, self.num_categorical):
            raise ValueError(
                f"clinical['categorical'] has shape {tuple(categorical.shape)}, expected {(batch_size, self.num_categorical)}"
            )
        parts = [emb(categorical[:, j].long()) for j, emb in enumerate(self.embeddings)]
        parts.append(numeric.float())
        return torch.cat(parts, dim=1)


class NoClinical(nn.Module):
    """Image-only (baseline) encoder: whatever the input, ``[B, 0]``. Has no parameters."""

    out_dim = 0

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)  # follows .to(device)

    def forward(self, clinical: Mapping[str, torch.Tensor] | None, batch_size: int) -> torch.Tensor:
        return self._anchor.new_zeros((batch_size, 0))


def spatialiser_channels(image_size: int, out_channels: int = 3, width: int = 64, min_width: int = 8) -> list[int]:
    """Output channels of each spatialiser block: ``max(min_width, width // 2**i)``, the last one ``out_channels``."""
    n = num_doublings(image_size)
    return [max(min_width, width // 2**i) for i in range(n - 1)] + [out_channels]


def num_doublings(image_size: int) -> int:
    """``log2(image_size)``; raises unless ``image_size`` is a power of two >= 2."""
    if image_size < 2 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 2 (the spatialiser doubles 1→S), got {image_size}")
    return image_size.bit_length() - 1


class Spatialiser(nn.Module):
    """``[B, D]`` → ``[B, out_channels, S, S]`` by ``log2(S)`` upsampling blocks (see module docstring)."""

    def __init__(self, in_dim: int, image_size: int, out_channels: int = 3, width: int = 64, min_width: int = 8) -> None:
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"the spatialiser needs a clinical vector of size >= 1, got {in_dim}")
        blocks = []
        prev = in_dim
        for c in spatialiser_channels(image_size, out_channels, width, min_width):
            blocks.append(nn.Sequential(
                nn.ConvTranspose2d(prev, c, kernel_size=2, stride=2, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            ))
            prev = c
        self.blocks = nn.Sequential(*blocks)
        self.image_size = image_size

    def forward(self, clinical: torch.Tensor) -> torch.Tensor:
        return self.blocks(clinical[:, :, None, None])


class SpatialMean(nn.Module):
    """``[B, C, h, w]`` → each channel's mean over the ``h×w`` positions, broadcast back to ``[B, C, h, w]``: a
    spatially constant clinical map, so every RoI pools the study's whole clinical feature vector."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)


class SpatialMeanNorm(nn.Module):
    """``[B, C, h, w]`` → each channel's spatial mean standardised across studies (BatchNorm: batch statistics in
    training, running ones in eval; a batch of one in training uses the running ones), times a learnable
    per-channel gain initialised to ``gain``, plus a learnable shift, at every position.

    Why (measured, ``benchmarks/probe_msf3d.py``): with :class:`SpatialMean` alone the runs whose box head never
    read the triage had a between-study spread of the clinical map of 0.02–0.03 against 0.06–0.08 in those that
    did, and ≈ 0.16 for the image map; the standardisation fixes that spread at ``gain`` (default 0.2, the image
    map's order; 1.0 swamped the image features: test AP −15 to −20 points).
    """

    def __init__(self, channels: int, gain: float = 0.2, momentum: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(channels, momentum=momentum)
        nn.init.constant_(self.norm.weight, gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm
        batch_stats = self.training and x.shape[0] > 1
        y = F.batch_norm(x.mean(dim=(2, 3)), n.running_mean, n.running_var, n.weight, n.bias, batch_stats,
                         n.momentum, n.eps)
        return y[:, :, None, None].expand_as(x)
