"""Box-head pieces for 1D fusion: RoI pooling that carries each RoI's clinical vector, and the MLP head.

torchvision's :class:`~torchvision.models.detection.roi_heads.RoIHeads` calls
``box_head(box_roi_pool(features, proposals, image_shapes))`` with the *final* proposals (after training-time
sampling). The model passes ``features = {"0": feature map [B, C, h, w], "clinical": C [B, D]}`` to the RoI
heads, so the pooling stage is the one place that knows both the RoIs and their image: :class:`ClinicalRoIPool`
pools ``[R, C, 7, 7]`` with a RoIAlign that reads only the named feature map and
repeats image ``b``'s clinical vector once per RoI of image ``b`` (``R = Σ_b len(proposals[b])``, same order).
:class:`ClinicalTwoMLPHead` concatenates the flattened RoI features with that vector before fc6.
No subclass of ``RoIHeads`` and no state stored on modules is needed; the plain (non-fused) heads use
the same RoIAlign and torchvision's ``TwoMLPHead`` unchanged, and ignore the ``"clinical"`` entry.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

CLINICAL_KEY = "clinical"


class RoIFeatures(NamedTuple):
    """``pooled``: ``[R, C, P, P]`` RoI features; ``clinical``: ``[R, D]`` the clinical vector of each RoI's image."""

    pooled: torch.Tensor
    clinical: torch.Tensor


class ClinicalRoIPool(nn.Module):
    """``(features, proposals: list[[N_b, 4]], image_shapes)`` → :class:`RoIFeatures` (see module docstring)."""

    def __init__(self, roi_align: nn.Module, clinical_key: str = CLINICAL_KEY) -> None:
        super().__init__()
        self.roi_align = roi_align
        self.clinical_key = clinical_key

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> RoIFeatures:
        pooled = self.roi_align(features, proposals, image_shapes)
        clinical = features[self.clinical_key]
        if clinical.shape[0] != len(proposals):
            raise ValueError(f"{clinical.shape[0]} clinical vectors for {len(proposals)} images")
        counts = torch.tensor([len(p) for p in proposals], device=clinical.device)
        return RoIFeatures(pooled, clinical.repeat_interleave(counts, dim=0).to(pooled.dtype))


class ClinicalTwoMLPHead(nn.Module):
    """:class:`RoIFeatures` → ``[R, representation_size]``: ``fc7(relu(fc6(concat(flatten(pooled), clinical))))``
    with ReLU after each layer (torchvision's ``TwoMLPHead`` with the 1D-fusion concat)."""

    def __init__(self, in_features: int, clinical_dim: int, representation_size: int) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features + clinical_dim, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: RoIFeatures) -> torch.Tensor:
        h = torch.cat([x.pooled.flatten(start_dim=1), x.clinical], dim=1)
        return F.relu(self.fc7(F.relu(self.fc6(h))))
