"""The training loop: ``train(cfg, data_dir, out_dir)`` trains on the ``train`` split and selects on ``val``.

The ``test`` split is never opened here. Optimisation (paper: SGD, lr 1e-3, batch 4, 100 epochs, L2
regularisation 0): SGD with momentum 0.9 (the paper does not state it; 0.9 is torchvision's detection recipe),
weight decay 0, constant learning rate (``train.schedule`` may be ``step`` — ×``gamma`` every ``step_epochs``
epochs — or ``cosine`` over ``epochs``; stepped per epoch). The loss is the uncertainty-weighted sum of
:mod:`mdfnet.model.loss`; its log-variances are optimised by the same SGD without weight decay. Checkpoints:
:mod:`mdfnet.training.checkpoint`; exact resume: :mod:`mdfnet.training.determinism`.

NaN guard: every loss term and the weighted total are checked before ``backward``; a NaN/inf raises
:class:`NonFiniteLossError` naming the step and the term, and ``last.pt`` is not rewritten, so it still holds
the last checkpointed good state (written at the latest epoch end or ``max_steps`` stop). The failing step's
state is deliberately not saved: its forward pass may already have put NaNs into BatchNorm running statistics.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mdfnet.config import save_config, to_dict
from mdfnet.data import MDFDataset, SplitSubset, collate_detection
from mdfnet.metrics_log import MetricLogger, NullLogger, flatten_params
from mdfnet.model import LOSS_WEIGHTINGS, build_model, loss_names
from mdfnet.model.catalog import check_table
from mdfnet.training.checkpoint import (
    TrainParts,
    TrainState,
    atomic_copy,
    check_resume_config,
    load_checkpoint,
    restore,
    save_checkpoint,
)
from mdfnet.training.config import SCHEDULE_NAMES, TrainConfig
from mdfnet.training.determinism import EpochSampler, seed_everything, seed_worker
from mdfnet.training.device import cudnn_benchmark, describe, device_tags, resolve_amp, resolve_device
from mdfnet.training.errors import NonFiniteLossError, TrainError
from mdfnet.training.inference import evaluate_split
from mdfnet.training.run_folder import CHECKPOINTS, LAST, RunFolder

log = logging.getLogger("mdfnet.train")


@dataclass
class TrainResult:
    out_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_val_ap: float | None
    best_epoch: int | None
    steps: int
    epochs_completed: int
    history: list[dict[str, float]]


SCHEDULES = {
    "constant": lambda opt, t: torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0),
    "step": lambda opt, t: torch.optim.lr_scheduler.StepLR(opt, step_size=t.step_epochs, gamma=t.gamma),
    "cosine": lambda opt, t: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs),
}
"""``train.schedule`` → builder ``(optimizer, TrainSection)`` of a per-epoch LR scheduler (names:
:data:`mdfnet.training.config.SCHEDULE_NAMES`, the ``Literal`` configs are validated against)."""
check_table("schedule", SCHEDULES, SCHEDULE_NAMES, "TrainSection.schedule's Literal")


def build_parts(cfg: TrainConfig, train_ds: MDFDataset) -> TrainParts:
    """Seed, then build the model for ``train_ds``'s features and image size, the loss, SGD, schedule, scaler."""
    t = cfg.train
    device = resolve_device(t.device)
    amp_dtype = resolve_amp(t.amp, device)
    seed_everything(cfg.seed)
    model = build_model(cfg.model, len(train_ds.numeric_features), len(train_ds.categorical_features),
                        train_ds.image_size)
    criterion = LOSS_WEIGHTINGS[t.loss_weighting](loss_names(cfg.model.use_mask))
    model.to(device)
    criterion.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cudnn_benchmark(cfg.model.use_mask)
        if t.channels_last:
            model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        [*model.parameter_groups(t.lr, cfg.model.clinical_lr_scale),
         {"params": list(criterion.parameters()), "weight_decay": 0.0}],
        lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return TrainParts(model, criterion, optimizer, SCHEDULES[t.schedule](optimizer, t), scaler, device, amp_dtype)


def finite_or_raise(losses: dict[str, torch.Tensor], total: torch.Tensor, step: int) -> tuple[dict[str, float], float]:
    """The loss terms and the weighted total as floats, read from the device in one copy (the step's one host sync,
    before ``backward``); raise :class:`NonFiniteLossError` naming the step and every NaN/inf term."""
    values = torch.stack([v.detach().float() for v in losses.values()] + [total.detach().float()]).tolist()
    if all(math.isfinite(v) for v in values):
        return dict(zip(losses, values[:-1], strict=True)), values[-1]
    names = list(losses) + ["total (weighted)"]
    bad = [(n, v) for n, v in zip(names, values, strict=True) if not math.isfinite(v)]
    name, value = bad[0]
    raise NonFiniteLossError(
        f"step {step}: loss term {name!r} is {value}"
        + (f" (also {', '.join(n for n, _ in bad[1:])})" if len(bad) > 1 else "")
        + f"; {CHECKPOINTS}/{LAST} keeps the last good state (try a lower train.lr)"
    )


def optimiser_step(parts: TrainParts, batch, grad_clip_norm: float, step: int) -> tuple[dict[str, float], float]:
    """One optimiser step on ``batch`` (images, clinical, targets); returns the loss terms and the weighted total.

    ``step`` (1-based, across resumes) only names the step in a :class:`NonFiniteLossError`. The host waits for the
    device once per step (:func:`finite_or_raise`); backward and the update are queued behind it, so the next
    batch is prepared while they run (a ``GradScaler`` in fp16 adds its own inf check).
    """
    images, clinical, targets = batch
    nb = parts.device.type == "cuda"
    images = [im.to(parts.device, non_blocking=nb) for im in images]
    clinical = {k: v.to(parts.device, non_blocking=nb) for k, v in clinical.items()}
    targets = [{k: v.to(parts.device, non_blocking=nb) for k, v in t.items()} for t in targets]
    autocast = torch.autocast(parts.device.type, dtype=parts.amp_dtype) if parts.amp_dtype else contextlib.nullcontext()
    with autocast:
        losses = parts.model(images, clinical, targets)
    losses = {k: v.float() for k, v in losses.items()}
    total = parts.criterion(losses)
    values, total_value = finite_or_raise(losses, total, step)
    parts.optimizer.zero_grad(set_to_none=True)
    parts.scaler.scale(total).backward()
    if grad_clip_norm > 0:
        parts.scaler.unscale_(parts.optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in parts.optimizer.param_groups for p in g["params"]], grad_clip_norm)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    return values, total_value


def validate(parts: TrainParts, cfg: TrainConfig, val_ds: MDFDataset, state: TrainState,
             metrics: dict[str, float], train_subset: SplitSubset | None = None) -> bool:
    """Score ``val_ds`` into ``metrics`` (``val/ap``, ``val/ar``, ``time/val_s``; ``train/ap``, ``train/ar`` on
    ``train_subset`` if given); True if the val AP is the best so far (ties keep the earlier; non-finite = -1).

    In fp32 even when training uses autocast: the AP that picks ``best.pt`` is the one the evaluate step computes
    for it (bf16 would put every box coordinate above 256 px on a 2-px grid)."""
    t1 = time.perf_counter()
    args = (cfg.train.batch_size, cfg.model.box_detections_per_img, cfg.model.box_score_thresh, parts.device)
    res = evaluate_split(parts.model, val_ds, *args)
    ap = float(res.ap)
    metrics.update({"val/ap": ap, "val/ar": float(res.ar), "time/val_s": time.perf_counter() - t1})
    if train_subset is not None and len(train_subset):
        seen = evaluate_split(parts.model, train_subset, *args)
        metrics.update({"train/ap": float(seen.ap), "train/ar": float(seen.ar)})
    score = ap if math.isfinite(ap) and ap >= 0 else -1.0
    if state.best_val_ap is not None and score <= state.best_val_ap:
        return False
    state.best_val_ap, state.best_epoch, state.best_step = score, state.epoch + 1, state.step
    return True


def _reached(state: TrainState, max_steps: int | None) -> bool:
    """The run has done its ``max_steps`` optimiser steps (None: no limit)."""
    return max_steps is not None and state.step >= max_steps


def run_epoch(parts: TrainParts, loader: DataLoader, cfg: TrainConfig, val_ds: MDFDataset, state: TrainState,
              max_steps: int | None, checkpoint: Callable[[], None] | None = None) -> tuple[dict[str, float], bool]:
    """Train (the rest of) epoch ``state.epoch`` or up to ``max_steps``, validate when due; returns the epoch's
    metrics and whether the validation AP is the best so far. ``checkpoint()`` is called mid-epoch every
    ``train.checkpoint_every_s`` seconds (an exact resume point: the epoch's position and sums are in the state)."""
    t = cfg.train
    batches_per_epoch = math.ceil(len(loader.dataset) / t.batch_size)
    loader.sampler.set_epoch(state.epoch, start=state.batch_in_epoch * t.batch_size)
    parts.model.train()
    lr = parts.optimizer.param_groups[0]["lr"]
    t0 = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {state.epoch + 1}/{t.epochs}", initial=state.batch_in_epoch,
               total=batches_per_epoch, disable=not t.progress, leave=False)
    saved = time.monotonic()
    for batch in bar:
        losses, total = optimiser_step(parts, batch, t.grad_clip_norm, state.step + 1)
        state.record_step(losses, total)
        bar.set_postfix(loss=f"{total:.3f}")
        if _reached(state, max_steps):
            break
        if checkpoint is not None and t.checkpoint_every_s and time.monotonic() - saved >= t.checkpoint_every_s:
            state.epoch_time += time.perf_counter() - t0
            t0 = time.perf_counter()
            checkpoint()
            saved = time.monotonic()
    bar.close()
    state.epoch_time += time.perf_counter() - t0
    epoch_done = state.batch_in_epoch >= batches_per_epoch
    due = _reached(state, max_steps) or (epoch_done and (state.epoch + 1 == t.epochs or (state.epoch + 1) % t.eval_every == 0))
    metrics = {"epoch": float(state.epoch + (1 if epoch_done else state.batch_in_epoch / batches_per_epoch)),
               "lr": float(lr), "time/epoch_s": state.epoch_time}
    metrics.update({f"train/{k}": v / max(state.epoch_steps, 1) for k, v in state.epoch_sums.items()})
    metrics.update({f"train/{k}": v for k, v in parts.criterion.weights().items()})
    if state.epoch_time > 0:
        metrics["train/images_per_s"] = state.epoch_steps * t.batch_size / state.epoch_time
    subset = SplitSubset(loader.dataset, cfg.eval.train_ap_images) if cfg.eval.train_ap_images else None
    improved = validate(parts, cfg, val_ds, state, metrics, subset) if due else False
    if epoch_done:
        parts.scheduler.step()
        state.next_epoch()
    state.history.append(metrics)
    return metrics, improved


def _open_run(cfg: TrainConfig, out_dir: Path, max_steps: int | None, resume: bool) -> dict[str, Any] | None:
    """Check the arguments and the run folder; return the checkpoint to resume from (or None)."""
    last_path = RunFolder(out_dir).last
    if max_steps is not None and max_steps < 1:
        raise TrainError(f"max_steps must be >= 1, got {max_steps}")
    if not resume and last_path.exists():
        raise TrainError(f"{out_dir} already holds a run ({last_path}); pass resume=True (--resume) or another out dir")
    ckpt = load_checkpoint(last_path) if resume else None
    if ckpt is not None:
        check_resume_config(cfg, ckpt["config"])
    last_path.parent.mkdir(parents=True, exist_ok=True)
    return ckpt


def _datasets(cfg: TrainConfig, data_dir: str | Path) -> tuple[MDFDataset, MDFDataset]:
    """The train and val splits with the config's features (and the shuffled-clinical control if asked)."""
    features, shuffle = list(cfg.data.features), cfg.data.shuffle_clinical
    train_ds = MDFDataset(data_dir, "train", features=features, with_masks=cfg.model.use_mask, shuffle_clinical=shuffle)
    val_ds = MDFDataset(data_dir, "val", features=features, with_masks=False, shuffle_clinical=shuffle)
    if cfg.data.image_size is not None and cfg.data.image_size != train_ds.image_size:
        raise TrainError(f"data.image_size={cfg.data.image_size} but {data_dir} holds {train_ds.image_size} px images")
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise TrainError(f"{data_dir}: need non-empty train and val splits, got {len(train_ds)} train / {len(val_ds)} val")
    return train_ds, val_ds


def _meta(ds: MDFDataset, cfg: TrainConfig) -> dict[str, Any]:
    return {"image_size": ds.image_size, "features": list(ds.features), "numeric_features": list(ds.numeric_features),
            "categorical_features": list(ds.categorical_features), "classes": list(ds.classes),
            "torch_version": str(torch.__version__), "loss_names": list(loss_names(cfg.model.use_mask)),
            "transform": ds.transform.to_dict()}  # train-split imputation/scaling: a checkpoint can serve alone


def _loader(ds: MDFDataset, cfg: TrainConfig, device: torch.device) -> DataLoader:
    t = cfg.train
    return DataLoader(ds, batch_size=t.batch_size, sampler=EpochSampler(len(ds), cfg.seed),
                      collate_fn=collate_detection, num_workers=t.num_workers, pin_memory=device.type == "cuda",
                      persistent_workers=t.num_workers > 0, worker_init_fn=seed_worker,
                      generator=torch.Generator().manual_seed(cfg.seed))


def train(cfg: TrainConfig, data_dir: str | Path, out_dir: str | Path, logger: MetricLogger | None = None,
          max_steps: int | None = None, resume: bool = False,
          on_checkpoint: Callable[[Path], None] | None = None) -> TrainResult:
    """Train ``cfg`` on ``data_dir``'s train split, validate on its val split, write ``out_dir`` (run folder:
    :mod:`mdfnet.training.run_folder`). ``max_steps``: stop after that many optimiser steps in total (counting
    steps before a resume), then validate and checkpoint. ``resume``: continue from ``checkpoints/last.pt``.
    ``on_checkpoint(path)``: called with ``last.pt`` after each checkpoint (epoch ends, after the metrics, and timed
    ones) and with ``best.pt`` when it changes (the pipeline copies them to durable storage there, so a preempted
    task resumes from them)."""
    logger = logger or NullLogger()
    out_dir = Path(out_dir)
    folder = RunFolder(out_dir)
    last_path, best_path = folder.last, folder.best
    ckpt = _open_run(cfg, out_dir, max_steps, resume)
    train_ds, val_ds = _datasets(cfg, data_dir)
    parts = build_parts(cfg, train_ds)
    state = restore(parts, ckpt) if ckpt is not None else TrainState()
    if ckpt is not None:
        log.info("resumed from %s at step %d (epoch %d, batch %d)", last_path, state.step, state.epoch + 1,
                 state.batch_in_epoch)
    save_config(cfg, folder.config)
    logger.log_params(flatten_params(to_dict(cfg)))
    tags = device_tags(parts.device, parts.amp_dtype)
    logger.set_tags(tags)
    log.info("training on %s", describe(tags))
    meta, loader = _meta(train_ds, cfg), _loader(train_ds, cfg, parts.device)

    def checkpoint() -> None:  # mid-epoch, on a timer (preemptible GPUs): the same file and hook as epoch ends
        save_checkpoint(last_path, parts, state, cfg, meta)
        if on_checkpoint is not None:
            on_checkpoint(last_path)

    while state.epoch < cfg.train.epochs and not _reached(state, max_steps):
        metrics, improved = run_epoch(parts, loader, cfg, val_ds, state, max_steps, checkpoint)
        save_checkpoint(last_path, parts, state, cfg, meta)
        if improved:
            atomic_copy(last_path, best_path)
        logger.log_metrics(metrics, step=state.step)
        if on_checkpoint is not None:  # best first: a durable last.pt always has its best.pt beside it
            if improved:
                on_checkpoint(best_path)
            on_checkpoint(last_path)
        log.info("epoch %.2f step %d: loss %.4f%s", metrics["epoch"], state.step,
                 metrics.get("train/loss_total", math.nan),
                 f", val AP {metrics['val/ap']:.4f}" if "val/ap" in metrics else "")
    return TrainResult(out_dir=out_dir, last_checkpoint=last_path,
                       best_checkpoint=best_path if best_path.exists() else None, best_val_ap=state.best_val_ap,
                       best_epoch=state.best_epoch, steps=state.step, epochs_completed=state.epoch,
                       history=list(state.history))
