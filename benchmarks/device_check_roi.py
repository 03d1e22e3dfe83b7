"""Part 3 of ``benchmarks/device_check.py``: the two RoIAlign kernels on the device, ``roi_align_cpu`` (two matrix
products per image; what the model runs off CUDA) against ``torchvision.ops.roi_align`` (what it runs on CUDA), in
fp32 and with bf16 features under autocast: agreement of outputs and gradients, and forward+backward time."""

from __future__ import annotations

import contextlib
import statistics
import time

import torch
from device_check_parts import BATCH, Context, Row, precision_name

# ------------------------------------------------------------------------------------------ 3. RoIAlign
ROI_OUTPUT, ROI_SAMPLING, ROI_CHANNELS, ROI_BOXES = 7, 2, 64, 512
"""The box head's RoIAlign (7×7 bins, 2×2 samples), the paper's 64 channels, 512 RoIs (128 per image)."""


def roi_inputs(ctx: Context) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, float]:
    """Features ``[4, 64, S/32, S/32]`` (stride 32, the paper's map), 128 random boxes per image in image pixels,
    a fixed output gradient, and the spatial scale."""
    side = max(ctx.size // 32, 1)
    g = torch.Generator().manual_seed(0)
    features = torch.randn(BATCH, ROI_CHANNELS, side, side, generator=g)
    boxes = []
    for _ in range(BATCH):
        xy = torch.rand(ROI_BOXES // BATCH, 2, generator=g) * ctx.size * 0.8
        wh = torch.rand(ROI_BOXES // BATCH, 2, generator=g) * ctx.size * 0.5 + 1
        boxes.append(torch.cat([xy, (xy + wh).clamp(max=ctx.size)], dim=1).to(ctx.device))
    grad = torch.randn(ROI_BOXES, ROI_CHANNELS, ROI_OUTPUT, ROI_OUTPUT, generator=g).to(ctx.device)
    return features.to(ctx.device), boxes, grad, side / ctx.size


def roi_run(ctx: Context, kernel: str, dtype: torch.dtype | None, inputs) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Forward + backward of one kernel (``matmul`` = ``roi_align_cpu``, ``torchvision``), in fp32 or with the
    features cast to ``dtype`` under autocast (as the model's convolutions hand them over); returns the output
    (float32), the features' gradient and the seconds."""
    from torchvision.ops import roi_align as tv_roi_align

    from mdfnet.model.roi_align import roi_align_cpu

    features, boxes, grad, scale = inputs
    leaf = features.detach().clone().requires_grad_(True)
    ctx.sync()
    t0 = time.perf_counter()
    with torch.autocast(ctx.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
        x = leaf.to(dtype) if dtype is not None else leaf
        if kernel == "matmul":
            out = roi_align_cpu(x, boxes, ROI_OUTPUT, scale, ROI_SAMPLING)
        else:
            out = tv_roi_align(x, boxes, output_size=ROI_OUTPUT, spatial_scale=scale, sampling_ratio=ROI_SAMPLING)
    out.backward(grad.to(out.dtype))
    ctx.sync()
    return out.detach().float(), leaf.grad.detach().float(), time.perf_counter() - t0


ROI_TOLERANCE = {"fp32": 1e-4, "bf16": 2.0**-6}
"""Largest difference from torchvision's fp32 result, relative to its largest value (outputs and gradients alike):
fp32 agrees to ~1e-6; bf16 features carry 8 significant bits (~0.4 % measured)."""


def roi_align_check(ctx: Context) -> Row:
    """Part 3: ``roi_align_cpu`` (matmul) against ``torchvision.ops.roi_align`` on the device, in fp32 and with
    bf16 features under autocast: max |Δ| of the outputs against torchvision at the same precision, outputs and
    feature gradients against torchvision fp32 (relative to its largest value), and forward+backward ms (median)."""
    inputs = roi_inputs(ctx)
    reps = 10 if ctx.cuda else 2
    runs = {(k, d): roi_run(ctx, k, d, inputs) for d in (None, torch.bfloat16) for k in ("matmul", "torchvision")}
    ref_out, ref_grad, _ = runs[("torchvision", None)]
    out_scale, grad_scale = ref_out.abs().max().item() or 1.0, ref_grad.abs().max().item() or 1.0
    rows = []
    for (kernel, dtype), (out, grad, _) in runs.items():
        seconds = [roi_run(ctx, kernel, dtype, inputs)[2] for _ in range(reps)]
        name = precision_name(dtype)
        row = {"kernel": kernel, "precision": name, "ms_fwd_bwd": 1000 * statistics.median(seconds),
               "diff_vs_tv": (out - runs[("torchvision", dtype)][0]).abs().max().item(),
               "rel_diff_out": (out - ref_out).abs().max().item() / out_scale,
               "rel_diff_grad": (grad - ref_grad).abs().max().item() / grad_scale, "tolerance": ROI_TOLERANCE[name]}
        row["ok"] = max(row["rel_diff_out"], row["rel_diff_grad"]) <= row["tolerance"]
        if not row["ok"]:
            row["error"] = (f"differs from torchvision fp32 by {row['rel_diff_out']:.3g} (output) / "
                            f"{row['rel_diff_grad']:.3g} (gradient) of its largest value > {row['tolerance']:.3g}")
        rows.append(row)
    return {"ok": all(r["ok"] for r in rows), "rows": rows,
            "facts": {"features": f"[{BATCH}, {ROI_CHANNELS}, {inputs[0].shape[-2]}, {inputs[0].shape[-1]}]",
                      "boxes": ROI_BOXES, "max_abs_output": out_scale, "max_abs_grad": grad_scale,
                      "reference": "torchvision fp32 (rel = |Δ| / largest reference value)", "repeats": reps}}
