"""The parts of ``benchmarks/device_check.py`` that use a preprocessed data set and a trained run: ``train()`` end
to end with a resume and a CPU-only reload (part 4), validation AP in fp32 against autocast (part 5) and serving
latency (part 6).

The data set is a handful of synthetic studies (``mdfnet.data.synthetic`` → join → preprocess at ``--size``),
made once per size under ``--cache`` (or ``--data DIR``: an existing preprocessed folder). Parts 5 and 6 use part
4's checkpoint; if part 4 made none they use an untrained one (said in their facts), so that a failing
``train()`` still leaves the evaluation and serving paths measured.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from device_check_parts import BATCH, Context, Row, error_text, precision_name

ROOT = Path(__file__).resolve().parents[1]
"""The checkout this script is in (its ``mdfnet`` is importable without an install)."""
N_STUDIES = 24
"""Synthetic studies of the generated data set (about 12 train / 6 val / 5 test readings)."""
FIRST_STEPS, RESUMED_STEPS = 2, 4
"""``max_steps`` of the first ``train()`` and of the resumed one."""

CPU_LOAD = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from mdfnet.data import MDFDataset
from mdfnet.training import load_model
checkpoint, data = sys.stdin.readline().strip(), sys.stdin.readline().strip()
t0 = time.perf_counter()
model, cfg = load_model(checkpoint, device="cpu")
ds = MDFDataset(data, "val", features=cfg.data.features, with_masks=False,
                shuffle_clinical=cfg.data.shuffle_clinical)
image, clinical, _ = ds[0]
with torch.no_grad():
    out = model([image], {k: v[None] for k, v in clinical.items()})[0]
print(json.dumps({"cuda_visible": torch.cuda.is_available(), "device": str(next(model.parameters()).device),
                  "detections": int(len(out["boxes"])), "finite": bool(torch.isfinite(out["boxes"]).all()),
                  "seconds": time.perf_counter() - t0}))
"""
"""Run with ``CUDA_VISIBLE_DEVICES=""``: imports, then reads a checkpoint path and a data folder from stdin (so it
is started early and its imports overlap training), loads the checkpoint on the CPU of a process that sees no
GPU and predicts one val image; prints one JSON line (``seconds``: load + predict)."""


# ------------------------------------------------------------------------------------------ data
def generate_data(out: Path, size: int) -> Path:
    """Synthetic sources → join → preprocess at ``size`` into ``out`` (built beside it, then renamed into place)."""
    from mdfnet.data.join import join
    from mdfnet.data.preprocess import PreprocessConfig, preprocess
    from mdfnet.data.synthetic import generate

    tmp = out.parent / f".{out.name}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        generate(tmp / "sources", N_STUDIES, seed=0, image_size=max(size, 32))
        join(tmp / "sources", tmp / "joined")
        preprocess(tmp / "joined", tmp / "pre", PreprocessConfig(image_size=size, fractions=(0.5, 0.25, 0.25),
                                                                 seed=0, workers=1))
        if not (out / "preprocessing.json").is_file():
            shutil.rmtree(out, ignore_errors=True)
            os.replace(tmp / "pre", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def data_dir(ctx: Context) -> Path:
    """The preprocessed folder: ``--data``, else the cached synthetic one for ``--size`` (made on first use).
    A failure is remembered, so later parts report it instead of trying again."""
    if "data" not in ctx.shared:
        try:
            if ctx.data is not None:
                ctx.shared["data"] = ctx.data
            else:
                out = ctx.cache / f"synthetic-{N_STUDIES}-{ctx.size}px"
                ready = (out / "preprocessing.json").is_file()
                ctx.shared["data"] = out if ready else generate_data(out, ctx.size)
        except Exception as e:  # noqa: BLE001 - remembered and re-raised below, with its cause named
            ctx.shared["data"] = e
    data = ctx.shared["data"]
    if isinstance(data, Exception):
        raise RuntimeError(f"no data set ({error_text(data)})") from data
    return data


def train_config(ctx: Context):
    """The paper's config (mdf, masks on) as a training run on this device gets it: ``train.amp=auto``,
    2 loader workers (pinned memory on CUDA), batch 4, no progress bar, no train-split AP."""
    from mdfnet.training import config_from_sources

    return config_from_sources(None, [f"train.device={ctx.device}", "train.amp=auto", "train.num_workers=2",
                                      "train.batch_size=4", "train.progress=false", "eval.train_ap_images=0"])


# ------------------------------------------------------------------------------------------ 4. train()
def stage(ctx: Context, rows: list[Row], name: str, fn: Callable[[], tuple[Any, str]]) -> Any:
    """Run one stage of part 4: a row with its seconds, ``ok`` and the detail ``fn`` returns (or the error);
    returns ``fn``'s value (None when it failed)."""
    ctx.say(f"4/7 train end to end: {name}")
    t0 = time.perf_counter()
    try:
        value, detail = fn()
    except Exception as e:  # noqa: BLE001 - the stage's row says what failed; the part goes on where it can
        rows.append({"stage": name, "seconds": time.perf_counter() - t0, "ok": False, "error": error_text(e)})
        return None
    rows.append({"stage": name, "seconds": time.perf_counter() - t0, "ok": True, "detail": detail})
    return value


def start_cpu_child() -> subprocess.Popen:
    """The :data:`CPU_LOAD` process, started now (it imports while part 4 trains), waiting for its paths."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)  # mdfnet, installed or not
    return subprocess.Popen([sys.executable, "-c", CPU_LOAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": path})


def cpu_load(child: subprocess.Popen, checkpoint: Path, data: Path) -> tuple[dict, str]:
    """Hand ``checkpoint`` to the child that sees no GPU; it loads it on the CPU and predicts one val image."""
    stdout, stderr = child.communicate(f"{checkpoint}\n{data}\n", timeout=300)
    if child.returncode != 0:
        raise RuntimeError(f"CPU load of {checkpoint.name} exited {child.returncode}: {stderr.strip()[-400:]}")
    out = json.loads(stdout.strip().splitlines()[-1])
    if out["device"] != "cpu" or out["cuda_visible"] or not out["finite"]:
        raise RuntimeError(f"CPU load of {checkpoint.name}: {out}")
    return out, f"{checkpoint.name} on the CPU (no GPU visible): {out['detections']} detections, {out['seconds']:.1f} s"


def train_e2e(ctx: Context) -> Row:
    """Part 4: ``train()`` for a few steps, resumed for more (the step count must continue), then the checkpoint
    loaded on the CPU in a subprocess. Hands the checkpoint to parts 5 and 6."""
    child = start_cpu_child()
    try:
        rows, cfg, steps = train_and_resume(ctx)
        if "checkpoint" in ctx.shared:
            stage(ctx, rows, "load on CPU", lambda: cpu_load(child, ctx.shared["checkpoint"], data_dir(ctx)))
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    ok = len(rows) == 4 and all(r["ok"] for r in rows)
    return {"ok": ok, "rows": rows, "facts": {
        "config": f"{cfg.model.variant}, masks {'on' if cfg.model.use_mask else 'off'}, train.amp=auto, batch "
                  f"{cfg.train.batch_size}, {cfg.train.num_workers} workers, device {cfg.train.device}", **steps}}


def train_and_resume(ctx: Context) -> tuple[list[Row], Any, dict[str, int | None]]:
    """Part 4's data, first ``train()`` and resumed ``train()`` stages: their rows, the config and the step counts
    each run ended at; leaves the checkpoint in ``ctx.shared``."""
    from mdfnet.training import train

    rows: list[Row] = []
    data = stage(ctx, rows, "data", lambda: (data_dir(ctx), f"{data_dir(ctx)}"))
    cfg, out = train_config(ctx), ctx.work / "run"
    first = resumed = None
    if data is not None:
        first = stage(ctx, rows, f"train {FIRST_STEPS} steps", lambda: _trained(
            train(cfg, data, out, max_steps=FIRST_STEPS)))
    if first is not None:
        resumed = stage(ctx, rows, f"resume to {RESUMED_STEPS} steps", lambda: _resumed(
            first, train(cfg, data, out, max_steps=RESUMED_STEPS, resume=True)))
    result = resumed or first
    if result is not None:
        ctx.shared["checkpoint"] = result.best_checkpoint or result.last_checkpoint
    steps = {"steps_first": first.steps if first else None, "steps_resumed": resumed.steps if resumed else None}
    return rows, cfg, steps


def _trained(result) -> tuple[Any, str]:
    """A first ``train()`` result with the detail of its row."""
    if result.steps != FIRST_STEPS:
        raise RuntimeError(f"train(max_steps={FIRST_STEPS}) stopped at step {result.steps}")
    return result, f"step {result.steps}, val AP {result.best_val_ap}, best {result.best_checkpoint is not None}"


def _resumed(first, result) -> tuple[Any, str]:
    """The resumed result, checked: its step count went on from the first run's."""
    if not result.steps > first.steps or result.steps != RESUMED_STEPS:
        raise RuntimeError(f"resume: step {first.steps} -> {result.steps}, expected {RESUMED_STEPS}")
    return result, f"step {first.steps} -> {result.steps}, epochs done {result.epochs_completed}"


# ------------------------------------------------------------------------------------------ checkpoint for 5, 6
def checkpoint(ctx: Context) -> tuple[Path, Path, str]:
    """Part 4's checkpoint, data folder and a note; an untrained checkpoint (``build_parts`` + ``save_checkpoint``,
    the way ``train()`` writes one) when part 4 made none."""
    data = data_dir(ctx)
    if "checkpoint" in ctx.shared:
        return ctx.shared["checkpoint"], data, f"part 4's {ctx.shared['checkpoint'].name}"
    from mdfnet.data import MDFDataset
    from mdfnet.training.checkpoint import TrainState, save_checkpoint
    from mdfnet.training.loop import _meta, build_parts
    from mdfnet.training.run_folder import RunFolder

    cfg = train_config(ctx)
    train_ds = MDFDataset(data, "train", features=cfg.data.features, with_masks=cfg.model.use_mask)
    path = RunFolder(ctx.work / "untrained").last
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, build_parts(cfg, train_ds), TrainState(), cfg, _meta(train_ds, cfg))
    ctx.shared["checkpoint"] = path
    return path, data, "untrained checkpoint (part 4 made none)"


def val_dataset(data: Path, cfg):
    from mdfnet.data import MDFDataset

    return MDFDataset(data, "val", features=cfg.data.features, with_masks=False,
                      shuffle_clinical=cfg.data.shuffle_clinical)


# ------------------------------------------------------------------------------------------ 5. validation AP
def box_difference(a: list[dict], b: list[dict], min_iou: float = 0.5) -> dict[str, Any]:
    """How far autocast moves the boxes: each box of ``a`` is paired, image by image, with the box of ``b`` of the
    same label that overlaps it most, if that IoU is at least ``min_iou`` (the same detection; an untrained model's
    near-tied scores let the two precisions keep different ones, which are not compared). Returns the largest and
    the median coordinate difference (px) over the pairs, and how many of ``a``'s boxes were paired."""
    from torchvision.ops import box_iou

    diffs, total = [], 0
    for pa, pb in zip(a, b, strict=True):
        total += len(pa["boxes"])
        if not len(pa["boxes"]) or not len(pb["boxes"]):
            continue
        iou = box_iou(pa["boxes"], pb["boxes"]) * (pa["labels"][:, None] == pb["labels"][None, :])
        best, j = iou.max(dim=1)
        keep = best >= min_iou
        diffs += (pa["boxes"][keep] - pb["boxes"][j[keep]]).abs().amax(dim=1).tolist()
    return {"max_box_diff_px": max(diffs, default=None),
            "median_box_diff_px": statistics.median(diffs) if diffs else None,
            "boxes_paired": f"{len(diffs)} of {total} (same label, IoU >= {min_iou})"}


def validation_ap(ctx: Context) -> Row:
    """Part 5: ``evaluate_split`` on the val split without and with autocast (the AMP dtype; bf16 as the CPU's
    stand-in), and the largest box-coordinate difference between the two ``predict`` outputs."""
    from mdfnet.training.checkpoint import load_model
    from mdfnet.training.inference import evaluate_split, predict

    path, data, note = checkpoint(ctx)
    model, cfg = load_model(path, device=ctx.device)
    val = val_dataset(data, cfg)
    dtype = ctx.amp or torch.bfloat16
    args = (BATCH, cfg.model.box_detections_per_img, cfg.model.box_score_thresh, ctx.device)
    rows, outputs = [], {}
    for name, dt in (("fp32", None), (precision_name(dtype), dtype)):
        ctx.say(f"5/7 validation AP: {name}")
        t0 = time.perf_counter()
        res = evaluate_split(model, val, *args, dt)
        ap = float(res.ap)
        outputs[name] = predict(model, val, BATCH, ctx.device, autocast_dtype=dt)
        rows.append({"precision": name, "ap": ap, "ar": float(res.ar), "seconds": time.perf_counter() - t0,
                     "detections": sum(len(o["boxes"]) for o in outputs[name]),
                     "ok": ap == -1 or 0.0 <= ap <= 1.0})
    boxes = box_difference(outputs["fp32"], outputs[rows[1]["precision"]])
    return {"ok": all(r["ok"] for r in rows), "rows": rows,
            "facts": {"checkpoint": note, "val_images": len(val), **boxes,
                      "autocast": precision_name(dtype) + ("" if ctx.amp else " (CPU stand-in)")}}


# ------------------------------------------------------------------------------------------ 6. serving
def request_image(data: Path) -> bytes:
    """The first cached image of ``data`` as PNG bytes (what a client would send)."""
    from PIL import Image

    images = np.load(data / "images.npy", mmap_mode="r")
    buf = io.BytesIO()
    Image.fromarray(np.asarray(images[0])).save(buf, "PNG")
    return buf.getvalue()


def serving(ctx: Context) -> Row:
    """Part 6: ``Predictor.from_checkpoint`` moved to the device, single-study requests (50 on CUDA after 3
    untimed, 5 on the CPU after 2): p50/p99 latency of ``Predictor.predict`` (decode, clinical transform, model,
    result table)."""
    from mdfnet.serving.inputs import example_request
    from mdfnet.serving.predictor import Predictor

    path, data, note = checkpoint(ctx)
    predictor = Predictor.from_checkpoint(path, data).to(str(ctx.device))
    frame = example_request(predictor.transform.median, request_image(data))
    (warmup, n), seconds, detections = ((3, 50) if ctx.cuda else (2, 5)), [], 0
    ctx.say(f"6/7 serving: {n} requests on {ctx.device}")
    for i in range(warmup + n):
        ctx.sync()
        t0 = time.perf_counter()
        detections = len(predictor.predict(frame))
        ctx.sync()
        if i >= warmup:
            seconds.append(time.perf_counter() - t0)
    p50, p99 = (1000 * float(q) for q in np.percentile(seconds, [50, 99]))
    model_device = str(next(predictor.model.parameters()).device)
    row = {"requests": n, "p50_ms": p50, "p99_ms": p99, "mean_ms": 1000 * statistics.fmean(seconds),
           "detections": detections, "model_device": model_device, "ok": model_device.startswith(ctx.device.type)}
    return {"ok": row["ok"], "rows": [row], "facts": {"checkpoint": note, "precision": "fp32 (Predictor.predict)"}}
