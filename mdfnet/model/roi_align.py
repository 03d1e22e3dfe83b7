"""RoIAlign on one feature map, equal to torchvision's and several times faster to train on the CPU.

torchvision's CPU ``roi_align`` backward is a scalar loop with atomic adds: in the small-scale recipe (64 px,
stride 8, 32 RoIs per image) it took more than half of every training step. :func:`roi_align_cpu` computes the
same values with two small matrix products per image (bilinear interpolation and the bin average are
separable along y and x), so autograd's matrix-product backward gives the gradient. It reproduces torchvision's
``roi_align(aligned=False, sampling_ratio > 0)`` sample for sample (tested to 1e-5, values and gradients):

- RoI ``[x1, y1, x2, y2] · spatial_scale``, width and height at least 1; ``P×P`` bins of ``s×s`` samples at
  ``y1 + (k + 0.5)·h / (P·s)`` for ``k = 0 .. P·s − 1`` (same for x);
- a sample with ``y < −1``, ``y > H``, ``x < −1`` or ``x > W`` is 0; otherwise it is clamped to ``[0, H−1] ×
  [0, W−1]`` and bilinearly interpolated;
- each bin is the mean of its ``s×s`` samples.

Precision: RoI coordinates, sample positions and bilinear weights are always float32 (float64 for float64
features), whatever the features' dtype: bfloat16 has 8 significant bits, so coordinates above 256 px would
round to multiples of 2 or more and move samples by whole pixels. The two matrix products run in that same
float32 (or float64) with autocast turned off inside, and the result is cast back to the features' dtype,
which is the output dtype; this is what torchvision's autocast wrapper of ``roi_align`` does too. float32 and
float64 features therefore give exactly what they gave before; bfloat16 and float16 features differ from the
float32 result by little more than their own rounding (``tests/test_roi_align.py`` measures it).

:class:`SingleMapRoIAlign` is the drop-in replacement for ``torchvision.ops.MultiScaleRoIAlign`` with one
feature map (the scale is inferred the same way: the power of two nearest to feature size / image size). Which
kernel runs is :func:`kernel_name`: torchvision's on CUDA tensors (fast there), :func:`roi_align_cpu` on any
other device; each module records the one its last call used in ``last_kernel``.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torchvision.ops import roi_align as tv_roi_align


def _axis_weights(lo: torch.Tensor, length: torch.Tensor, size: int, output_size: int,
                  sampling_ratio: int) -> torch.Tensor:
    """Bilinear weights along one axis: ``[N, P, size]``, bin ``p`` of RoI ``n`` = the mean over its samples of
    each sample's interpolation weights on the ``size`` feature rows (or columns), 0 for samples outside
    ``[-1, size]`` (torchvision's rule; module docstring)."""
    n_side = output_size * sampling_ratio
    steps = (torch.arange(n_side, dtype=lo.dtype, device=lo.device) + 0.5) / n_side
    t = lo + steps * length  # [N, P·s] sample coordinates
    valid = ((t >= -1) & (t <= size)).to(lo.dtype)
    t = t.clamp(min=0)
    low = t.floor().clamp(max=size - 1)
    frac = torch.where(low >= size - 1, torch.zeros_like(t), t - low)
    high = (low + 1).clamp(max=size - 1)
    w = torch.zeros((*t.shape, size), dtype=lo.dtype, device=lo.device)
    w.scatter_add_(2, low.long()[..., None], ((1 - frac) * valid)[..., None])
    w.scatter_add_(2, high.long()[..., None], (frac * valid)[..., None])
    return w.reshape(len(lo), output_size, sampling_ratio, size).mean(dim=2)


def roi_align_cpu(features: torch.Tensor, boxes: list[torch.Tensor], output_size: int, spatial_scale: float,
                  sampling_ratio: int) -> torch.Tensor:
    """``features [B, C, H, W]``, ``boxes``: one ``[N_b, 4]`` xyxy tensor per image (image pixels) → pooled
    ``[R, C, P, P]`` with ``R = Σ_b N_b`` in image order (module docstring).

    Bilinear sampling and the bin average are separable, so each image's result is two small matrix products:
    ``pooled[n, c] = A_y[n] · F[c] · A_xᵀ[n]`` with ``A_y [N, P, H]`` and ``A_x [N, P, W]`` (:func:`_axis_weights`);
    autograd's backward of those products is the gradient of RoIAlign.
    """
    if sampling_ratio < 1:
        raise ValueError(f"sampling_ratio must be >= 1 (adaptive sampling is not supported), got {sampling_ratio}")
    if len(boxes) != features.shape[0]:
        raise ValueError(f"{len(boxes)} box tensors for {features.shape[0]} feature maps")
    _, c, h, w = features.shape
    compute = compute_dtype(features.dtype)
    out = []
    with _autocast_off(features.device):
        for b, bx in enumerate(boxes):
            if len(bx) == 0:
                continue
            r = bx.detach().to(compute) * spatial_scale
            width = (r[:, 2:3] - r[:, 0:1]).clamp(min=1.0)
            height = (r[:, 3:4] - r[:, 1:2]).clamp(min=1.0)
            ay = _axis_weights(r[:, 1:2], height, h, output_size, sampling_ratio)  # [N, P, H]
            ax = _axis_weights(r[:, 0:1], width, w, output_size, sampling_ratio)  # [N, P, W]
            n, p = ay.shape[:2]
            rows = ay.reshape(n * p, h) @ features[b].to(compute).transpose(0, 1).reshape(h, c * w)  # [N·P, C·W]
            pooled = torch.bmm(rows.reshape(n, p * c, w), ax.transpose(1, 2))  # [N, P·C, P]
            out.append(pooled.reshape(n, p, c, p).transpose(1, 2).to(features.dtype))  # [N, C, P, P]
        if not out:
            return features.new_zeros((0, c, output_size, output_size))
        return torch.cat(out, dim=0)


def compute_dtype(feature_dtype: torch.dtype) -> torch.dtype:
    """The dtype :func:`roi_align_cpu` computes in: float64 for float64 features, float32 for any other
    (bfloat16, float16, float32); the result is cast back to ``feature_dtype``."""
    return torch.promote_types(feature_dtype, torch.float32)


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast disabled on ``device``'s type (it would run the products in bfloat16), or nothing where
    autocast does not exist for that device type."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def kernel_name(x: torch.Tensor) -> str:
    """The RoIAlign kernel :class:`SingleMapRoIAlign` runs on features ``x``: ``"torchvision"`` on a CUDA
    tensor, ``"matmul"`` (:func:`roi_align_cpu`) on any other device."""
    return "torchvision" if x.device.type == "cuda" else "matmul"


def infer_scale(feature_size: tuple[int, int], image_shapes: list[tuple[int, int]]) -> float:
    """torchvision's rule: ``2 ** round(log2(feature height / largest image height))``."""
    if not image_shapes:
        raise ValueError("images list should not be empty")
    height = max(s[0] for s in image_shapes)
    return 2.0 ** round(math.log2(feature_size[0] / height))


class SingleMapRoIAlign(nn.Module):
    """``(features: {name: [B, C, h, w], ...}, boxes: list[[N_b, 4]], image_shapes)`` → ``[R, C, P, P]``.

    Same call and result as ``MultiScaleRoIAlign([name], output_size, sampling_ratio)`` with one map; other
    entries of ``features`` are ignored.
    """

    def __init__(self, featmap_name: str, output_size: int, sampling_ratio: int) -> None:
        super().__init__()
        self.featmap_name = featmap_name
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio
        self.last_kernel: str | None = None
        """The :func:`kernel_name` of the last ``forward`` (``None`` before the first)."""

    def forward(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        x = features[self.featmap_name]
        scale = infer_scale(tuple(x.shape[-2:]), image_shapes)
        self.last_kernel = kernel_name(x)
        if self.last_kernel == "torchvision":
            return tv_roi_align(x, boxes, output_size=self.output_size,
                                spatial_scale=scale, sampling_ratio=self.sampling_ratio)
        return roi_align_cpu(x, boxes, self.output_size, scale, self.sampling_ratio)

    def extra_repr(self) -> str:
        return f"featmap_name={self.featmap_name!r}, output_size={self.output_size}, sampling_ratio={self.sampling_ratio}"
