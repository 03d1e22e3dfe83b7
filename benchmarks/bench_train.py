"""Training and inference speed of the MDF-Net variants, and the fusion overhead relative to the baseline.

    python benchmarks/bench_train.py [--size 128] [--batch 2] [--device auto] [--steps 5] [--rounds 3]
                                     [--variants baseline,msf3d,msf1d,mdf] [--fusion sum]
                                     [--backbone mobilenet_v3_small] [--amp auto] [--no-mask] [--threads 1]
                                     [--json FILE]

Every variant is built from the same ``ModelConfig`` (only ``variant`` differs) and fed the same synthetic batch
(random images, 9 numeric + gender clinical features, 2 boxes per image except the last, which has none).

- train: ``--steps`` full optimiser steps (forward, uncertainty-weighted loss, backward, SGD step) per round,
  the way :func:`mdfnet.training.train` runs them (same AMP/GradScaler/channels_last choices on CUDA);
- inference: ``--steps`` eval-mode forward passes under ``torch.no_grad`` (images + clinical data only).

Variants are measured in interleaved rounds (each round times every variant once, after ``--warmup`` untimed
steps per variant), and each variant's figure is its median over ``--rounds`` rounds, so that a machine shared
with other jobs slows all variants alike. The ratio column is the fused variant's images/s divided by the
baseline's in the same run (1.00 = no overhead; 0.50 = fusion halves the throughput). CPU defaults are small;
on a GPU use e.g. ``--size 512 --batch 4 --steps 20``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch

from mdfnet.model import ModelConfig, UncertaintyWeightedLoss, build_model, loss_names
from mdfnet.training.loop import resolve_amp, resolve_device

VARIANTS = ("baseline", "msf3d", "msf1d", "mdf")


def synthetic_batch(batch: int, size: int, use_mask: bool, device: torch.device, seed: int = 0):
    """``batch`` images ``[3,S,S]`` in [0,1], clinical ``{numeric [B,9], categorical [B,1]}``, targets with 2
    boxes per image except the last (no boxes)."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, size, size, generator=g).to(device) for _ in range(batch)]
    clinical = {"numeric": torch.randn(batch, 9, generator=g).to(device),
                "categorical": torch.randint(1, 3, (batch, 1), generator=g).to(device)}
    targets = []
    for i in range(batch):
        n = 0 if i == batch - 1 else 2
        xy = torch.rand(n, 2, generator=g) * size * 0.5
        wh = (torch.rand(n, 2, generator=g) * 0.4 + 0.1) * size
        boxes = torch.cat([xy, (xy + wh).clamp(max=size)], dim=1)
        t = {"boxes": boxes.to(device), "labels": torch.randint(1, 6, (n,), generator=g).to(device)}
        if use_mask:
            masks = torch.zeros(n, size, size, dtype=torch.uint8)
            for j, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
                masks[j, y0:y1, x0:x1] = 1
            t["masks"] = masks.to(device)
        targets.append(t)
    return images, clinical, targets


class VariantRunner:
    """One variant's model, loss, optimiser and timed step functions."""

    def __init__(self, variant: str, args: argparse.Namespace, device: torch.device, amp: torch.dtype | None) -> None:
        torch.manual_seed(0)
        cfg = ModelConfig(variant=variant, fusion=args.fusion, backbone=args.backbone, use_mask=not args.no_mask)
        self.model = build_model(cfg, 9, 1, args.size).to(device)
        if device.type == "cuda" and not args.no_channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.criterion = UncertaintyWeightedLoss(loss_names(cfg.use_mask)).to(device)
        self.optimizer = torch.optim.SGD(list(self.model.parameters()) + list(self.criterion.parameters()),
                                         lr=1e-3, momentum=0.9)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
        self.autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else contextlib.nullcontext
        self.device = device
        self.params = sum(p.numel() for p in self.model.parameters())

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _timed(self, step, steps: int) -> float:
        """Seconds for ``steps`` calls of ``step()`` (CUDA synchronised before and after)."""
        self._sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        self._sync()
        return time.perf_counter() - t0

    def train_steps(self, batch, steps: int) -> float:
        images, clinical, targets = batch
        self.model.train()

        def step() -> None:
            with self.autocast():
                losses = self.model(images, clinical, targets)
            total = self.criterion({k: v.float() for k, v in losses.items()})
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()

        return self._timed(step, steps)

    @torch.no_grad()
    def infer_steps(self, batch, steps: int) -> float:
        images, clinical, _ = batch
        self.model.eval()

        def step() -> None:
            with self.autocast():
                self.model(images, clinical)

        return self._timed(step, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128, help="image side (power of two)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant before the first round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--fusion", default="sum")
    ap.add_argument("--backbone", default="mobilenet_v3_small")
    ap.add_argument("--amp", default="auto", choices=["auto", "off", "bf16", "fp16"])
    ap.add_argument("--no-mask", action="store_true", help="Faster R-CNN heads only (4 losses)")
    ap.add_argument("--no-channels-last", action="store_true", help="CUDA: keep the default memory format")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: on a shared machine more threads busy-wait and make "
                         "the figures noisy; 0 = torch's default)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args()

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; expected some of {list(VARIANTS)}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    amp = resolve_amp(args.amp, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    batch = synthetic_batch(args.batch, args.size, not args.no_mask, device)
    runners = {v: VariantRunner(v, args, device, amp) for v in variants}
    for r in runners.values():  # warm-up: allocator, cudnn autotuning, lazy init
        r.train_steps(batch, args.warmup)
        r.infer_steps(batch, args.warmup)
    train_ips: dict[str, list[float]] = {v: [] for v in variants}
    infer_ips: dict[str, list[float]] = {v: [] for v in variants}
    images = args.steps * args.batch
    for _ in range(args.rounds):
        for v, r in runners.items():
            train_ips[v].append(images / r.train_steps(batch, args.steps))
            infer_ips[v].append(images / r.infer_steps(batch, args.steps))

    report(args, device, amp, variants, runners, train_ips, infer_ips)


def report(args, device, amp, variants, runners, train_ips, infer_ips) -> None:
    """Print the medians and ratios to the baseline; write ``--json``."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {name}, {args.size} px, batch {args.batch}, backbone {args.backbone}, fusion {args.fusion}, "
          f"mask {'off' if args.no_mask else 'on'}, amp {amp or 'off'}; median of {args.rounds} rounds × "
          f"{args.steps} steps")
    results = []
    base_t = statistics.median(train_ips["baseline"]) if "baseline" in variants else None
    base_i = statistics.median(infer_ips["baseline"]) if "baseline" in variants else None
    print(f"{'variant':>9} {'params (M)':>10} {'train img/s':>12} {'ratio':>6} {'infer img/s':>12} {'ratio':>6}")
    for v in variants:
        t, i = statistics.median(train_ips[v]), statistics.median(infer_ips[v])
        rt = t / base_t if base_t else float("nan")
        ri = i / base_i if base_i else float("nan")
        print(f"{v:>9} {runners[v].params / 1e6:>10.2f} {t:>12.2f} {rt:>6.2f} {i:>12.2f} {ri:>6.2f}")
        results.append({"variant": v, "params": runners[v].params, "train_images_per_s": t, "train_ratio": rt,
                        "infer_images_per_s": i, "infer_ratio": ri, "train_rounds": train_ips[v],
                        "infer_rounds": infer_ips[v]})
    if args.json:
        args.json.write_text(json.dumps({"device": name, "args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
