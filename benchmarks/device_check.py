"""A ready device check: everything about the GPU training path in one run, for the rare minutes a GPU is lent.

    python benchmarks/device_check.py [--device auto|cpu|cuda[:N]] [--size 512] [--json FILE] [--budget-s 400]
                                      [--steps N] [--warmup 1] [--data DIR] [--cache DIR] [--threads N]

On a lent GPU (no install needed: this checkout's ``mdfnet`` is put on the path), e.g. with a 480 s timeout::

    python3 benchmarks/device_check.py --device cuda --json $OUT/device_check.json 2>&1 | tee $OUT/device_check.txt

Prints one table (a section per part, the card named at the top), writes ``--json`` (rewritten after every part,
so a run cut short keeps what it measured), and prints a progress line per step to stderr. Parts, in order:

1. environment: what ``train.device=auto`` resolves to, torch/CUDA/cuDNN/driver versions, the GPU, native bf16,
   ``train.amp=auto``'s choice, ``/dev/shm``, CPUs;
2. train steps per variant × precision (fp32, bf16, fp16 on CUDA) × memory format (channels_last on CUDA), masks
   off, plus each variant with masks on at ``train.amp=auto`` (the paper's model): ``build_parts`` +
   ``optimiser_step`` on a loader-shaped synthetic batch of 4: ms/step, peak memory, finite losses, RoIAlign kernel;
3. ``roi_align_cpu`` vs ``torchvision.ops.roi_align`` on the device: max |Δ| in fp32 and bf16, fwd+bwd time;
4. ``train()`` end to end on a small synthetic set (2 loader workers), resumed, then loaded on the CPU in a
   process that sees no GPU;
5. validation AP of that checkpoint in fp32 and under autocast, and the largest box difference between them;
6. serving latency: ``Predictor`` on the device, single-study requests, p50/p99;
7. optional, when the budget allows: train images/s at 512 px, batch 4, bf16, masks off, baseline and mdf.

Every part (and every row of parts 2–4) is guarded: a failure is reported in its row (error type and message)
and the rest still runs. Exit code 1 when a required part (1–6) failed, 2 when the device cannot be used.
``--budget-s`` (default 400 s; an H100 run is expected to take ~3 minutes, not yet measured) bounds part 2 (it leaves 40 % for the later parts
and marks what it had no time for "skipped: budget") and part 7 (skipped when short). On the CPU,
``--device cpu --size 64`` is the suite's smoke test (~20 s on a shared 2-core machine: 1 thread, 1 + 1 steps
per combination, 5 serving requests).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # the part modules beside this script; mdfnet of this checkout

import torch  # noqa: E402
from device_check_parts import Context, Row, environment, error_text, throughput, train_steps  # noqa: E402
from device_check_roi import roi_align_check  # noqa: E402
from device_check_run import serving, train_e2e, validation_ap  # noqa: E402
from device_check_table import render  # noqa: E402


@dataclass(frozen=True)
class Part:
    """One part of the check: its JSON key, its title in the table, the function, whether it is required."""

    key: str
    title: str
    run: Callable[[Context], Row]
    required: bool = True


PARTS: list[Part] = [
    Part("environment", "environment", environment),
    Part("train_steps", "train steps", train_steps),
    Part("roi_align", "RoIAlign on the device", roi_align_check),
    Part("train_e2e", "train() end to end", train_e2e),
    Part("validation_ap", "validation AP, fp32 vs autocast", validation_ap),
    Part("serving", "serving latency", serving),
    Part("throughput", "train throughput (optional)", throughput, required=False),
]


def run_part(ctx: Context, index: int, part: Part) -> Row:
    """``part.run(ctx)`` timed, with ``required``; an exception becomes ``ok: False`` with ``error`` (type and
    message) and ``traceback`` (its last lines)."""
    ctx.say(f"{index}/{len(PARTS)} {part.title} ...")
    t0 = time.perf_counter()
    try:
        result = dict(part.run(ctx))
    except Exception as e:  # noqa: BLE001 - one failing part must not stop the check
        result = {"ok": False, "error": error_text(e), "traceback": traceback.format_exc().strip().splitlines()[-6:]}
    result.setdefault("ok", all(r.get("ok", True) for r in result.get("rows", [])))
    result.update(required=part.required, seconds=time.perf_counter() - t0)
    ctx.say(f"{index}/{len(PARTS)} {part.title}: {'ok' if result['ok'] else 'FAILED'} ({result['seconds']:.1f} s)")
    return result


def write_json(path: Path | None, report: dict[str, Any]) -> None:
    """Write ``report`` to ``path`` atomically (no-op without ``--json``)."""
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    os.replace(tmp, path)


def card_name(device: torch.device) -> str:
    """The GPU's name, or ``cpu``."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (resolved as train.device)")
    ap.add_argument("--size", type=int, default=512, help="image side for parts 2-6 (a power of two)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here (after every part)")
    ap.add_argument("--budget-s", type=float, default=400.0, help="wall-clock budget of the whole check")
    ap.add_argument("--steps", type=int, default=None, help="part 2: timed train steps per combination (default: 2 "
                    "on CUDA, 1 on the CPU)")
    ap.add_argument("--warmup", type=int, default=1, help="part 2: untimed train steps before them")
    ap.add_argument("--data", type=Path, default=None, help="an existing preprocessed folder for parts 4-6")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mdfnet-device-check",
                    help="where the synthetic data set of each --size is made once and kept")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (0: torch's default; default: 1 on the CPU, where a shared machine's "
                         "busy-waiting threads make steps several times slower, else torch's default)")
    args = ap.parse_args(argv)
    if args.size < 32 or args.size & (args.size - 1):
        ap.error(f"--size must be a power of two >= 32, got {args.size}")
    if (args.steps is not None and args.steps < 1) or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    return args


class _Once(logging.Filter):
    """Let each distinct log message through once (every model built at a small --size warns about anchors)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def make_context(args: argparse.Namespace, work: Path) -> Context:
    """Resolve ``--device`` as ``train.device`` does (``cuda`` never falls back) and its ``train.amp=auto``."""
    from mdfnet.training.device import resolve_amp, resolve_device

    device = resolve_device(args.device)
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else 0)
    if threads > 0:
        torch.set_num_threads(threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    steps = args.steps or (2 if device.type == "cuda" else 1)
    return Context(device=device, amp=resolve_amp("auto", device), size=args.size, budget_s=args.budget_s,
                   steps=steps, warmup=args.warmup, work=work, cache=args.cache, data=args.data)


def main(argv: list[str] | None = None) -> int:
    """Run every part, print the table, write the JSON; 0 when every required part passed (module docstring)."""
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Once())
    logging.getLogger("mdfnet").addHandler(handler)
    threads = torch.get_num_threads()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    work = Path(tempfile.mkdtemp(prefix="mdfnet-device-check-"))
    report: dict[str, Any] = {"started": started, "args": {k: str(v) for k, v in vars(args).items()}}
    try:
        try:
            ctx = make_context(args, work)
        except Exception as e:  # noqa: BLE001 - a device that cannot be used ends the check, said plainly
            report.update(device=args.device, card=None, ok=False, error=error_text(e), wall_s=0.0)
            write_json(args.json, report)
            print(f"device check: --device {args.device} cannot be used: {error_text(e)}", file=sys.stderr)
            return 2
        report.update(device=str(ctx.device), card=card_name(ctx.device))
        for i, part in enumerate(PARTS, start=1):
            report[part.key] = run_part(ctx, i, part)
            report["wall_s"] = ctx.elapsed()
            write_json(args.json, report)
        report["ok"] = all(report[p.key]["ok"] for p in PARTS if p.required)
        write_json(args.json, report)
        print(render(report, PARTS))
        return 0 if report["ok"] else 1
    finally:
        logging.getLogger("mdfnet").removeHandler(handler)
        torch.set_num_threads(threads)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
