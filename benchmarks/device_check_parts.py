"""The parts of ``benchmarks/device_check.py`` that need no data set: the environment (part 1), train steps on a
synthetic batch per variant × precision × memory format (part 2) and the optional throughput comparison (part 7);
plus the :class:`Context` every part receives. Part 3 is in ``device_check_roi.py``, parts 4-6 in
``device_check_run.py``.

Every part is a function ``part(ctx) -> dict`` whose dict holds ``ok`` and either ``rows`` (a list of dicts,
each with its own ``ok`` and, when it failed, ``error``) or plain facts. A part that raises is reported by the
runner (``device_check.run_part``); a row that fails inside a part is reported in that row and the part goes on.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from synthetic_batch import synthetic_batch

Row = dict[str, Any]

VARIANTS = ("baseline", "msf3d", "msf1d", "mdf")
PRECISIONS = {"fp32": "off", "bf16": "bf16", "fp16": "fp16"}
"""Precision name in the report → the ``train.amp`` value that trains in it."""
BATCH = 4
"""Images per synthetic training batch (the paper's batch size)."""
RESERVE_FRACTION = 0.4
"""Share of ``--budget-s`` part 2 leaves for the parts after it (the required ones take ~1/3 of it on an H100)."""


def error_text(e: BaseException) -> str:
    """``"TypeName: message"`` of an exception (the message's first 500 characters)."""
    return f"{type(e).__name__}: {str(e).strip()[:500]}"


@dataclass
class Context:
    """What every part gets: the device, its ``train.amp=auto`` dtype, the CLI's sizes and budget, a work folder,
    and ``shared`` (what a part hands to later ones: the data folder, the trained checkpoint, part 2's rows)."""

    device: torch.device
    amp: torch.dtype | None
    size: int
    budget_s: float
    steps: int
    warmup: int
    work: Path
    cache: Path
    data: Path | None = None
    t0: float = field(default_factory=time.monotonic)
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        """Seconds of ``--budget-s`` left."""
        return self.budget_s - self.elapsed()

    def say(self, message: str) -> None:
        """A progress line on stderr, stamped with the seconds since the start."""
        print(f"[{self.elapsed():6.1f} s] {message}", file=sys.stderr, flush=True)

    def sync(self) -> None:
        """Wait for the device (CUDA), so that a timer read afterwards includes the queued work."""
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def free(self) -> None:
        """Release what the last measurement left (Python garbage, CUDA's cached blocks)."""
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def precision_name(dtype: torch.dtype | None) -> str:
    """Autocast dtype → report name (None = fp32)."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


# ------------------------------------------------------------------------------------------ 1. environment
def environment(ctx: Context) -> Row:
    """What ``train.device=auto`` resolves to, the versions, the GPU, native bf16, the AMP choice, shm and CPUs."""
    import torchvision

    from mdfnet.tracking_names import TAG_CAPABILITY, TAG_CUDNN, TAG_DRIVER, TAG_GPU
    from mdfnet.training.device import cuda_problem, describe, device_tags, resolve_device, shm_mib

    tags = device_tags(ctx.device, ctx.amp)
    cuda_ok = torch.cuda.is_available()
    facts: Row = {
        "train.device=auto": str(resolve_device("auto")), "device": str(ctx.device),
        "train.amp=auto": precision_name(ctx.amp), "summary": describe(tags),
        "gpu": tags.get(TAG_GPU), "capability": tags.get(TAG_CAPABILITY),
        "gpu_memory_gib": (round(torch.cuda.get_device_properties(ctx.device).total_memory / 2**30, 1)
                           if ctx.cuda else None),
        "bf16_native": torch.cuda.is_bf16_supported(including_emulation=False) if cuda_ok else None,
        "cuda_problem": cuda_problem(torch.device("cuda")),
        "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
        "cuda_build": torch.version.cuda, "cudnn": tags.get(TAG_CUDNN), "driver": tags.get(TAG_DRIVER),
        "shm_mib": round(shm_mib()) if shm_mib() is not None else None,
        "cpus_usable": len(os.sched_getaffinity(0)), "cpus_machine": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
    }
    return {"ok": True, "facts": facts}


# ------------------------------------------------------------------------------------------ 2. train steps
@dataclass(frozen=True)
class StepConfig:
    """One measured combination of part 2."""

    variant: str
    precision: str
    channels_last: bool
    masks: bool

    def label(self) -> str:
        return (f"{self.variant} {self.precision} {'channels_last' if self.channels_last else 'contiguous'} "
                f"masks {'on' if self.masks else 'off'}")


def step_configs(ctx: Context) -> list[StepConfig]:
    """Part 2's combinations in the order they are measured (the most telling first, in case the budget runs out):
    every variant as training runs it by default (``train.amp=auto``, channels_last on CUDA) with masks off, then
    the same with masks on (the paper's model), then the rest of the masks-off grid (fp16 only on CUDA;
    channels_last only on CUDA: ``build_parts`` applies it only there)."""
    layouts = (True, False) if ctx.cuda else (False,)
    auto = precision_name(ctx.amp)
    first = [StepConfig(v, auto, layouts[0], False) for v in VARIANTS]
    masked = [StepConfig(v, auto, layouts[0], True) for v in VARIANTS]
    rest = [StepConfig(v, p, c, False) for v in VARIANTS for p in PRECISIONS for c in layouts]
    return first + masked + [c for c in rest if c not in first]


def build_train_parts(ctx: Context, variant: str, precision: str, channels_last: bool, masks: bool,
                      size: int | None = None):
    """``mdfnet.training.loop.build_parts`` itself (model, uncertainty loss, SGD, GradScaler on for fp16, cuDNN
    autotuner rule, channels_last on CUDA), for a stand-in data set with 9 numeric + 1 categorical features."""
    from mdfnet.model import ModelConfig
    from mdfnet.training.config import TrainConfig
    from mdfnet.training.loop import build_parts

    cfg = TrainConfig(model=ModelConfig(variant=variant, use_mask=masks)).resolved()
    cfg.train.device, cfg.train.amp, cfg.train.channels_last = str(ctx.device), PRECISIONS[precision], channels_last
    shape = types.SimpleNamespace(numeric_features=tuple(f"n{i}" for i in range(9)), categorical_features=("gender",),
                                  image_size=size or ctx.size)
    return build_parts(cfg, shape), cfg.train.grad_clip_norm


def roi_kernels(model: torch.nn.Module) -> str:
    """The kernels the model's RoIAlign modules ran last (box pool, and mask pool when masks are on)."""
    from mdfnet.model.roi_align import SingleMapRoIAlign

    names = sorted({str(m.last_kernel) for m in model.modules() if isinstance(m, SingleMapRoIAlign)})
    return ",".join(names) or "none found"


def timed_steps(ctx: Context, parts, clip: float, batch, warmup: int, steps: int) -> tuple[list[float], float]:
    """``warmup`` then ``steps`` calls of ``optimiser_step``; returns the timed steps' seconds and the last weighted
    loss. CUDA peak memory counts from the first timed step (cuDNN's autotuner trials stay out of it)."""
    from mdfnet.training.loop import optimiser_step

    seconds, total = [], math.nan
    for i in range(warmup + steps):
        if i == warmup and ctx.cuda:
            torch.cuda.reset_peak_memory_stats(ctx.device)
        ctx.sync()
        t0 = time.perf_counter()
        _, total = optimiser_step(parts, batch, clip, i + 1)
        ctx.sync()
        if i >= warmup:
            seconds.append(time.perf_counter() - t0)
    return seconds, total


def measure_steps(ctx: Context, sc: StepConfig) -> Row:
    """One row of part 2: ms/step, peak memory, finite losses, the RoIAlign kernel (must be torchvision on CUDA,
    matmul elsewhere)."""
    row: Row = {"variant": sc.variant, "precision": sc.precision, "masks": "on" if sc.masks else "off",
                "memory": "channels_last" if sc.channels_last else "contiguous", "ok": True}
    if sc.precision == "fp16" and not ctx.cuda:
        return {**row, "status": "n/a: fp16 needs CUDA"}
    parts, clip = build_train_parts(ctx, sc.variant, sc.precision, sc.channels_last, sc.masks)
    try:
        batch = synthetic_batch(BATCH, ctx.size, sc.masks, pin=ctx.cuda)
        seconds, total = timed_steps(ctx, parts, clip, batch, ctx.warmup, ctx.steps)
        kernel = roi_kernels(parts.model)
        row.update(ms_per_step=1000 * statistics.median(seconds), step_ms=[1000 * s for s in seconds],
                   loss=total, finite=math.isfinite(total), kernel=kernel,
                   peak_mib=torch.cuda.max_memory_allocated(ctx.device) / 2**20 if ctx.cuda else None,
                   cudnn_benchmark=torch.backends.cudnn.benchmark if ctx.cuda else None)
    finally:
        del parts
        ctx.free()
    expected = "torchvision" if ctx.cuda else "matmul"
    if row["kernel"] != expected:
        row.update(ok=False, error=f"RoIAlign kernel {row['kernel']!r} ran, expected {expected!r} on {ctx.device}")
    return row


def guarded(fn: Callable[[], Row], base: Row) -> Row:
    """``fn()``, or ``base`` marked failed with the exception (``finite: False`` for a non-finite loss)."""
    from mdfnet.training.errors import NonFiniteLossError

    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - one failing row must not stop the part
        return {**base, "ok": False, "error": error_text(e),
                **({"finite": False} if isinstance(e, NonFiniteLossError) else {})}


def train_steps(ctx: Context) -> Row:
    """Part 2: every :func:`step_configs` combination, skipped ("skipped: budget") once the time left after it
    would eat into the later parts' share (:data:`RESERVE_FRACTION` of the budget)."""
    rows, last_s = [], 0.0
    reserve = RESERVE_FRACTION * ctx.budget_s
    for sc in step_configs(ctx):
        base = {"variant": sc.variant, "precision": sc.precision, "masks": "on" if sc.masks else "off",
                "memory": "channels_last" if sc.channels_last else "contiguous", "ok": True}
        if ctx.left() - reserve < 1.5 * last_s:
            rows.append({**base, "status": "skipped: budget"})
            continue
        ctx.say(f"2/7 train steps: {sc.label()}")
        t0 = time.monotonic()
        rows.append(guarded(lambda sc=sc: measure_steps(ctx, sc), base))
        last_s = max(last_s, time.monotonic() - t0)
    layouts = ("channels_last", "contiguous")
    order = {key: i for i, key in enumerate(
        (v, p, m, c) for v in VARIANTS for m in ("off", "on") for p in PRECISIONS for c in layouts)}
    rows.sort(key=lambda r: order[(r["variant"], r["precision"], r["masks"], r["memory"])])
    ctx.shared["train_steps"] = rows
    return {"ok": all(r["ok"] for r in rows), "rows": rows,
            "facts": {"batch": BATCH, "size": ctx.size, "warmup_steps": ctx.warmup, "timed_steps": ctx.steps,
                      "masks": "off for the precision × memory-format grid; on (the paper's model) at "
                               "train.amp=auto with the default memory format"}}


# ------------------------------------------------------------------------------------------ 7. throughput
THROUGHPUT_SIZE, THROUGHPUT_STEPS, THROUGHPUT_WARMUP = 512, 20, 3
CPU_THROUGHPUT_MAX_SIZE = 128
"""On the CPU part 7 runs only at --size up to this (at --size, 3 timed steps): at 512 px it would take minutes."""


def throughput_plan(ctx: Context) -> tuple[int, str, int, int]:
    """Size, precision, warm-up and timed steps of part 7: 512 px bf16 (fp16 where bf16 is not native) and 20
    steps on CUDA; on the CPU --size, fp32, 1 + 3 steps."""
    if not ctx.cuda:
        return ctx.size, "fp32", 1, 3
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    return THROUGHPUT_SIZE, "bf16" if native else "fp16", THROUGHPUT_WARMUP, THROUGHPUT_STEPS


def throughput_estimate(ctx: Context, size: int, precision: str, steps: int) -> float:
    """Seconds part 7 is expected to take: from part 2's ms/step of the same combination when it ran at the same
    size (×1.5 and 10 s for building and warm-up), else a guess of 0.2 s per step."""
    rows = [r for r in ctx.shared.get("train_steps", []) if r.get("ms_per_step") and r["precision"] == precision
            and r["masks"] == "off" and r["variant"] in ("baseline", "mdf")]
    ms = max((r["ms_per_step"] for r in rows), default=None) if size == ctx.size else None
    per_step = ms / 1000 if ms else 0.2
    return 10 + 1.5 * 2 * steps * per_step


def throughput(ctx: Context) -> Row:
    """Part 7 (optional): train images/s of baseline and mdf, masks off, batch 4, interleaved in 2 rounds (median),
    and the mdf/baseline ratio; skipped when the budget is short, and on the CPU above
    :data:`CPU_THROUGHPUT_MAX_SIZE`."""
    if not ctx.cuda and ctx.size > CPU_THROUGHPUT_MAX_SIZE:
        return {"ok": True, "skipped": f"CPU at --size {ctx.size} > {CPU_THROUGHPUT_MAX_SIZE}"}
    size, precision, warmup, steps = throughput_plan(ctx)
    need = throughput_estimate(ctx, size, precision, warmup + steps)
    if ctx.left() < need:
        return {"ok": True, "skipped": f"budget ({ctx.left():.0f} s left, ~{need:.0f} s needed)"}
    runners = {v: build_train_parts(ctx, v, precision, True, False, size) for v in ("baseline", "mdf")}
    batch = synthetic_batch(BATCH, size, False, pin=ctx.cuda)
    ips: dict[str, list[float]] = {v: [] for v in runners}
    try:
        for v, (parts, clip) in runners.items():
            ctx.say(f"7/7 throughput: warm-up {v} {size} px {precision}")
            timed_steps(ctx, parts, clip, batch, warmup, 0)
        for _ in range(2):
            for v, (parts, clip) in runners.items():
                seconds, _ = timed_steps(ctx, parts, clip, batch, 0, max(steps // 2, 1))
                ips[v].append(BATCH * len(seconds) / sum(seconds))
    finally:
        del runners
        ctx.free()
    rows = [{"variant": v, "precision": precision, "size": size, "images_per_s": statistics.median(r),
             "rounds": r, "ok": True} for v, r in ips.items()]
    ratio = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    return {"ok": True, "rows": rows, "facts": {"mdf/baseline": ratio, "batch": BATCH, "masks": "off",
                                                "timed_steps": 2 * max(steps // 2, 1), "warmup_steps": warmup}}
