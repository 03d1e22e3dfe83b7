"""Training and inference speed of the MDF-Net variants next to torchvision's stock detector, and the loader.

    python benchmarks/bench_train.py [--quick] [--size 128] [--batch 2] [--device auto] [--steps 5] [--rounds 3]
                                     [--variants baseline,msf3d,msf1d,mdf,torchvision] [--fusion sum]
                                     [--backbone mobilenet_v3_small] [--amp auto] [--no-mask] [--threads 1]
                                     [--no-loader] [--data DIR | --data-cache DIR] [--loader-workers 2]
                                     [--json FILE]

One run on one machine gives three comparisons:

1. **Our baseline vs torchvision's stock detector** (row ``torchvision``): ``torchvision.models.detection.MaskRCNN``
   (``FasterRCNN`` with ``--no-mask``) built from torchvision's public API with its own defaults, over the same
   backbone as ours (:func:`mdfnet.model.build_backbone`: the same trunk, stride and 1×1 projection to
   ``out_channels``; random init, nothing downloaded), torchvision's ``AnchorGenerator`` with our anchor sizes
   and ratios, ``MultiScaleRoIAlign(["0"], 7, 2)`` (14 for masks), ``min_size = max_size = --size``, 6 classes
   and ``ModelConfig``'s detections per image and score threshold. Its heads are torchvision's defaults (box
   head ``TwoMLPHead`` of 1024, NMS 0.7 / 0.5), i.e. what a user picks for image-only detection; its transform
   keeps the size (it still runs its scale-1 bilinear resize, as every user of it does); its loss is the plain
   sum of its loss dict (:class:`mdfnet.model.SumLoss`). Target: baseline ≥ 1.0× its train images/s.
2. **Fusion overhead**: each variant's images/s divided by the baseline's (the ``ratio`` columns). Target:
   mdf ≥ 0.8× the baseline at 512 px, masks off.
3. **Loader vs training**: :mod:`bench_loader` times the DataLoader that training builds (``_loader``, batch
   ``--batch``, ``--loader-workers`` workers, pinned memory on CUDA) on a preprocessed folder (``--data``, or one
   generated once into ``--data-cache``); column ``loader/train`` = loader images/s ÷ the row's train images/s,
   measured apart (the loader alone, then training alone). Target: ≥ 5× at 512 px. ``--no-loader`` skips it.

Every MDF-Net variant is built by training's own :func:`mdfnet.training.loop.build_parts` (same seed, AMP,
GradScaler, cuDNN autotuner choice, channels_last on CUDA, SGD) from one ``ModelConfig`` (only ``variant``
differs); the stock model gets the same recipe (:func:`stock_parts`). All rows are fed one synthetic batch as the
loader yields it: uint8 ``[1,S,S]`` images (``torch.randint(0, 256, ...)``; the stock model gets the same pixels
as float ``[3,S,S]`` in [0,1], converted once outside the timed region, since that is the input it takes),
clinical ``{numeric [B,9], categorical [B,1]}``, targets with 2 boxes per image except the last (none), kept
on the host (pinned on CUDA) and moved to the device inside each step, as training does.

- train: ``--steps`` calls of :func:`mdfnet.training.loop.optimiser_step` per round (host → device copy, forward
  under autocast, loss, the per-step finiteness check, backward, SGD step);
- inference: ``--steps`` eval-mode forward passes under ``torch.no_grad`` (images + clinical data only).

Rows are measured in interleaved rounds (each round times the loader once and every row once, after
``--warmup`` untimed steps per row), and each figure is its median over ``--rounds`` rounds, so that a machine
shared with other jobs slows all rows alike. ``--quick``: a smoke run (64 px, 1 step, 2 rounds, small loader
folder). CPU defaults are small; on a GPU use e.g. ``--size 512 --batch 4 --steps 20 --no-mask``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from bench_loader import LoaderRunner, add_loader_args, open_loader
from synthetic_batch import Batch, synthetic_batch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.rpn import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from mdfnet.model import ModelConfig, SumLoss, build_backbone, loss_names
from mdfnet.model.build import NUM_CLASSES
from mdfnet.training.checkpoint import TrainParts
from mdfnet.training.config import TrainConfig, TrainSection
from mdfnet.training.determinism import seed_everything
from mdfnet.training.device import AMP_NAMES, cudnn_benchmark, resolve_amp, resolve_device
from mdfnet.training.loop import build_parts, optimiser_step

VARIANTS = ("baseline", "msf3d", "msf1d", "mdf")
STOCK = "torchvision"
ROWS = (*VARIANTS, STOCK)
QUICK = {"size": 64, "batch": 2, "steps": 1, "warmup": 1, "rounds": 2, "studies": 24, "loader_batches": 4}
"""``--quick`` defaults (explicit flags still win)."""



def stock_input(batch: Batch) -> Batch:
    """The same batch with float ``[3,S,S]`` images in [0,1], the input torchvision's detectors take."""
    images, clinical, targets = batch
    return [im.float().div(255.0).expand(3, -1, -1).contiguous() for im in images], clinical, targets


def pinned(batch: Batch) -> Batch:
    """``batch`` in page-locked host memory (what the CUDA loader's ``pin_memory`` hands out)."""
    images, clinical, targets = batch
    return ([im.pin_memory() for im in images], {k: v.pin_memory() for k, v in clinical.items()},
            [{k: v.pin_memory() for k, v in t.items()} for t in targets])


class StockDetector(nn.Module):
    """torchvision's stock detector behind MDF-Net's call signature (the clinical data are ignored), so that
    ``optimiser_step`` runs it unchanged."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: list[torch.Tensor], clinical: Any = None, targets: Any = None) -> Any:
        return self.net(images, targets)


def stock_model(cfg: ModelConfig, size: int) -> StockDetector:
    """Stock ``MaskRCNN`` (``FasterRCNN`` without masks) over our backbone (module docstring, item 1)."""
    backbone = build_backbone(cfg.backbone, cfg.out_channels, None, cfg.backbone_stride)
    common: dict[str, Any] = dict(
        num_classes=NUM_CLASSES, min_size=size, max_size=size, image_mean=list(cfg.image_mean),
        image_std=list(cfg.image_std),
        rpn_anchor_generator=AnchorGenerator(sizes=(tuple(cfg.anchor_sizes),), aspect_ratios=(tuple(cfg.aspect_ratios),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), box_detections_per_img=cfg.box_detections_per_img,
        box_score_thresh=cfg.box_score_thresh,
    )
    if cfg.use_mask:
        return StockDetector(MaskRCNN(backbone, mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2), **common))
    return StockDetector(FasterRCNN(backbone, **common))


def stock_parts(cfg: TrainConfig, size: int) -> TrainParts:
    """:func:`build_parts`' recipe (seed, device, AMP, cuDNN autotuner, channels_last, SGD, scaler) around the
    stock model, with the plain sum of its losses."""
    t = cfg.train
    device = resolve_device(t.device)
    amp_dtype = resolve_amp(t.amp, device)
    seed_everything(cfg.seed)
    model = stock_model(cfg.model, size).to(device)
    criterion = SumLoss(loss_names(cfg.model.use_mask)).to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cudnn_benchmark(cfg.model.use_mask)
        if t.channels_last:
            model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return TrainParts(model, criterion, optimizer, None, scaler, device, amp_dtype)


class Runner:
    """One row: its training parts, the batch it is fed and its timed train/inference steps."""

    def __init__(self, parts: TrainParts, batch: Batch) -> None:
        self.parts, self.batch = parts, batch
        self.params = sum(p.numel() for p in parts.model.parameters())
        self.loss_keys: list[str] = []
        self.steps_done = 0

    def _timed(self, step: Callable[[], None], steps: int) -> float:
        """Seconds for ``steps`` calls of ``step()`` (CUDA synchronised before and after)."""
        device = self.parts.device
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        return time.perf_counter() - t0

    def train_steps(self, steps: int) -> float:
        """Seconds for ``steps`` calls of training's ``optimiser_step`` on the batch."""
        self.parts.model.train()

        def step() -> None:
            self.steps_done += 1
            losses, _ = optimiser_step(self.parts, self.batch, 0.0, self.steps_done)
            self.loss_keys = sorted(losses)

        return self._timed(step, steps)

    @torch.no_grad()
    def infer_steps(self, steps: int) -> float:
        """Seconds for ``steps`` eval-mode forward passes (inputs moved to the device in each)."""
        images, clinical, _ = self.batch
        model, device, amp = self.parts.model, self.parts.device, self.parts.amp_dtype
        model.eval()
        nb = device.type == "cuda"

        def step() -> None:
            with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
                model([im.to(device, non_blocking=nb) for im in images],
                      {k: v.to(device, non_blocking=nb) for k, v in clinical.items()})

        return self._timed(step, steps)


def build_runners(args: argparse.Namespace, rows: list[str], device: torch.device,
                  amp: torch.dtype | None) -> dict[str, Runner]:
    """A :class:`Runner` per row, every one from the same ``TrainConfig`` (only ``model.variant`` differs)."""
    batch = synthetic_batch(args.batch, args.size, not args.no_mask)
    train = TrainSection(batch_size=args.batch, device=str(device), amp=AMP_NAMES[amp],
                         channels_last=not args.no_channels_last)
    stub = SimpleNamespace(numeric_features=("n",) * 9, categorical_features=("gender",), image_size=args.size)
    prep = pinned if device.type == "cuda" else (lambda b: b)
    runners = {}
    for row in rows:
        cfg = TrainConfig(model=ModelConfig(variant=row if row in VARIANTS else "baseline", fusion=args.fusion,
                                            backbone=args.backbone, use_mask=not args.no_mask), train=train)
        if row == STOCK:
            runners[row] = Runner(stock_parts(cfg, args.size), prep(stock_input(batch)))
        else:
            runners[row] = Runner(build_parts(cfg, stub), prep(batch))  # type: ignore[arg-type]
    return runners


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"smoke run: defaults {QUICK}")
    ap.add_argument("--size", type=int, default=128, help="image side (power of two)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per row per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per row before the first round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default=",".join(ROWS), help=f"rows, some of {','.join(ROWS)}")
    ap.add_argument("--fusion", default="sum")
    ap.add_argument("--backbone", default="mobilenet_v3_small")
    ap.add_argument("--amp", default="auto", choices=["auto", "off", "bf16", "fp16"])
    ap.add_argument("--no-mask", action="store_true", help="Faster R-CNN heads only (4 losses)")
    ap.add_argument("--no-channels-last", action="store_true", help="CUDA: keep the default memory format")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: on a shared machine more threads busy-wait and make "
                         "the figures noisy; 0 = torch's default)")
    ap.add_argument("--no-loader", action="store_true", help="skip the DataLoader measurement")
    add_loader_args(ap)
    ap.add_argument("--json", type=str, default=None, help="also write the results as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        ap.set_defaults(**QUICK)
        args = ap.parse_args(argv)
    args.rows = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.rows) - set(ROWS))
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; expected some of {list(ROWS)}")
    return args


def measure(args: argparse.Namespace, runners: dict[str, Runner], loader: LoaderRunner | None
            ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Warm-up, then ``--rounds`` interleaved rounds (loader, then every row); images/s of each round."""
    for r in runners.values():  # allocator, cuDNN autotuning, lazy init
        r.train_steps(args.warmup)
        r.infer_steps(args.warmup)
    train_ips: dict[str, list[float]] = {v: [] for v in runners}
    infer_ips: dict[str, list[float]] = {v: [] for v in runners}
    images = args.steps * args.batch
    for _ in range(args.rounds):
        if loader is not None:
            loader.timed_round()
        for v, r in runners.items():
            train_ips[v].append(images / r.train_steps(args.steps))
            infer_ips[v].append(images / r.infer_steps(args.steps))
    return train_ips, infer_ips


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, write ``--json``; returns what the JSON holds."""
    args = parse_args(argv)
    load_start = os.getloadavg()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    amp = resolve_amp(args.amp, device)
    loader = None if args.no_loader else open_loader(args, device)
    try:
        runners = build_runners(args, args.rows, device, amp)
        train_ips, infer_ips = measure(args, runners, loader)
    finally:
        if loader is not None:
            loader.close()
    out = report(args, device, amp, runners, train_ips, infer_ips, loader.summary() if loader else None)
    out["loadavg"] = {"start": list(load_start), "end": list(os.getloadavg())}
    if args.json:
        Path(args.json).write_text(json.dumps(_json_safe(out), indent=2))
    return out


def _json_safe(x: Any) -> Any:
    """``x`` with NaN/inf floats as None (strict JSON)."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _ratio(a: float, b: float | None) -> float:
    return a / b if b else math.nan


TARGETS = {"baseline_vs_torchvision": ("baseline", STOCK, 1.0, "train img/s, baseline / torchvision"),
           "mdf_vs_baseline": ("mdf", "baseline", 0.8, "train img/s, mdf / baseline (stated at 512 px, masks off)")}
"""Targets of the issue: name → (row, reference row, least ratio, what is compared)."""
LOADER_TARGET = 5.0
"""Loader images/s ÷ the fastest MDF-Net row's train images/s, at least (stated at 512 px)."""


def targets(rows: dict[str, dict[str, Any]], loader: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Each target the run can check: its value, the least value asked for and whether it is met."""
    out: dict[str, dict[str, Any]] = {}
    for name, (row, ref, least, what) in TARGETS.items():
        if row in rows and ref in rows:
            value = _ratio(rows[row]["train_images_per_s"], rows[ref]["train_images_per_s"])
            out[name] = {"value": value, "target": least, "met": value >= least, "what": what}
    ours = [r for v, r in rows.items() if v in VARIANTS]
    if loader is not None and ours:
        fastest = max(ours, key=lambda r: r["train_images_per_s"])
        value = _ratio(loader["images_per_s"], fastest["train_images_per_s"])
        out["loader_vs_train"] = {"value": value, "target": LOADER_TARGET, "met": value >= LOADER_TARGET,
                                  "what": f"loader img/s / train img/s of {fastest['variant']} (fastest; stated at 512 px)"}
    return out


def report(args: argparse.Namespace, device: torch.device, amp: torch.dtype | None, runners: dict[str, Runner],
           train_ips: dict[str, list[float]], infer_ips: dict[str, list[float]],
           loader: dict[str, Any] | None) -> dict[str, Any]:
    """Print the medians, the ratios and the targets; return them as the JSON's content."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {name}, {args.size} px, batch {args.batch}, backbone {args.backbone}, fusion {args.fusion}, "
          f"mask {'off' if args.no_mask else 'on'}, amp {amp or 'off'}; median of {args.rounds} rounds × "
          f"{args.steps} steps")
    base = statistics.median(train_ips["baseline"]) if "baseline" in runners else None
    base_i = statistics.median(infer_ips["baseline"]) if "baseline" in runners else None
    loader_ips = loader["images_per_s"] if loader else math.nan
    rows: dict[str, dict[str, Any]] = {}
    print(f"{'row':>11} {'params (M)':>10} {'train img/s':>12} {'ratio':>6} {'infer img/s':>12} {'ratio':>6} "
          f"{'loader/train':>12}")
    for v, r in runners.items():
        t, i = statistics.median(train_ips[v]), statistics.median(infer_ips[v])
        rows[v] = {"variant": v, "params": r.params, "train_images_per_s": t, "train_ratio": _ratio(t, base),
                   "infer_images_per_s": i, "infer_ratio": _ratio(i, base_i), "loader_ratio": _ratio(loader_ips, t),
                   "input": "float32 [3,S,S]" if v == STOCK else "uint8 [1,S,S]", "loss_keys": r.loss_keys,
                   "train_rounds": train_ips[v], "infer_rounds": infer_ips[v]}
        print(f"{v:>11} {r.params / 1e6:>10.2f} {t:>12.2f} {rows[v]['train_ratio']:>6.2f} {i:>12.2f} "
              f"{rows[v]['infer_ratio']:>6.2f} {rows[v]['loader_ratio']:>12.1f}")
    if loader:
        print(f"{'loader':>11} {loader['images_per_s']:.1f} img/s ({loader['workers']} workers, batch "
              f"{loader['batch']}, {loader['batches_per_round']} batches/round, masks "
              f"{'on' if loader['with_masks'] else 'off'}, pinned {loader['pin_memory']}); start-up "
              f"{loader['startup_s']:.2f} s, not in the figure")
    checks = targets(rows, loader)
    for k, c in checks.items():
        print(f"target {k}: {c['value']:.2f}x (>= {c['target']:.1f}: {'met' if c['met'] else 'MISSED'}; {c['what']})")
    return {"device": name, "args": {k: str(v) for k, v in vars(args).items()}, "results": list(rows.values()),
            "loader": loader, "targets": checks}


if __name__ == "__main__":
    main()
