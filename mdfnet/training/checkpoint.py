"""Checkpoints: one :class:`TrainState` (bookkeeping) + the :class:`TrainParts` (model, loss, optimiser, schedule,
scaler), written in one place (:func:`save_checkpoint`) and read in one place (:func:`load_checkpoint`,
:func:`restore`, :func:`load_model`).

Where they live (``checkpoints/last.pt``, ``checkpoints/best.pt`` of the run folder): :mod:`mdfnet.training.run_folder`.

Checkpoints are written with ``torch.save`` to a temporary file in the same folder, then ``os.replace``; every
value is a tensor, dict, list, str, int, float, bool or None, so ``torch.load(path, weights_only=True)`` reads
them:

=================  ===========================================================================
key                content
=================  ===========================================================================
``format``         ``"mdfnet-checkpoint-v1"``
``model``          ``model.state_dict()``
``loss_weighting`` the loss module's state_dict (log-variances)
``optimizer``      ``optimizer.state_dict()``
``scheduler``      ``scheduler.state_dict()``
``scaler``         ``GradScaler.state_dict()`` (``{}`` when fp16 scaling is off)
``rng``            ``{"torch": ByteTensor, "cuda": [ByteTensor], "numpy": {...}, "python": {...}}``
``step``           optimiser steps done (across resumes)
``epoch``          index of the epoch in progress (= epochs completed when ``batch_in_epoch`` is 0)
``batch_in_epoch`` batches of that epoch already done
``best_val_ap``    best validation AP so far (float or None), with ``best_epoch``, ``best_step``
``epoch_sums``     running sums of the epoch's loss terms, with ``epoch_steps`` and ``epoch_time`` (seconds),
                   so a resumed epoch logs whole-epoch means
``history``        list of per-epoch metric dicts
``config``         the resolved TrainConfig as a plain dict
``meta``           image_size, features, numeric/categorical feature names, classes, versions, ``transform``
                   (the train split's ``ClinicalTransform`` as a dict: what serving applies to raw values)
=================  ===========================================================================
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mdfnet.config import ConfigError, from_dict, to_dict
from mdfnet.metrics_log import flatten_params
from mdfnet.training.config import TrainConfig
from mdfnet.training.determinism import get_rng_state, set_rng_state
from mdfnet.training.errors import TrainError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "mdfnet-checkpoint-v1"


@dataclass
class TrainState:
    """Where a run stands: steps, epoch position, best validation AP, the epoch's running sums, history."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_val_ap: float | None = None
    best_epoch: int | None = None
    best_step: int | None = None
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_steps: int = 0
    epoch_time: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)

    def record_step(self, losses: dict[str, float], total: float) -> None:
        """Count one optimiser step and add its loss terms (and the weighted total) to the epoch's sums."""
        self.step += 1
        self.batch_in_epoch += 1
        self.epoch_steps += 1
        for k, v in losses.items():
            self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + v
        self.epoch_sums["loss_total"] = self.epoch_sums.get("loss_total", 0.0) + total

    def next_epoch(self) -> None:
        """The epoch is complete: move to the next one and reset the running sums."""
        self.epoch += 1
        self.batch_in_epoch, self.epoch_steps, self.epoch_sums, self.epoch_time = 0, 0, {}, 0.0

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> TrainState:
        return cls(**{f.name: ckpt[f.name] for f in dataclasses.fields(cls) if f.name in ckpt})


@dataclass
class TrainParts:
    """The stateful parts of a run on ``device`` (autocast ``amp_dtype`` or None)."""

    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    device: torch.device
    amp_dtype: torch.dtype | None


@contextlib.contextmanager
def _atomic_target(path: Path):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file next to ``path``, then ``os.replace``."""
    with _atomic_target(path) as tmp:
        torch.save(obj, tmp)


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temporary file and ``os.replace``."""
    with _atomic_target(dst) as tmp:
        shutil.copyfile(src, tmp)


def save_checkpoint(path: Path, parts: TrainParts, state: TrainState, cfg: TrainConfig, meta: dict[str, Any]) -> None:
    """Write the checkpoint of the module docstring to ``path`` (atomically)."""
    atomic_save({
        "format": CHECKPOINT_FORMAT, "model": parts.model.state_dict(), "loss_weighting": parts.criterion.state_dict(),
        "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict(), "rng": get_rng_state(), **state.as_dict(), "config": to_dict(cfg),
        "meta": meta,
    }, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint (``weights_only=True``); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"checkpoint {str(path)!r} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{str(path)!r} is not an mdfnet checkpoint (format {CHECKPOINT_FORMAT!r})")
    return ckpt


def restore(parts: TrainParts, ckpt: dict[str, Any]) -> TrainState:
    """Load every part's state and the RNG states from ``ckpt``; return its :class:`TrainState`."""
    parts.model.load_state_dict(ckpt["model"])
    parts.criterion.load_state_dict(ckpt["loss_weighting"])
    parts.optimizer.load_state_dict(ckpt["optimizer"])
    parts.scheduler.load_state_dict(ckpt["scheduler"])
    if parts.scaler.is_enabled() and not ckpt["scaler"]:  # saved without fp16 (train.amp, or auto on another GPU)
        log.warning("resuming in fp16 from a checkpoint saved without loss scaling (another AMP mode): the "
                    "GradScaler starts fresh (scale %g)", parts.scaler.get_scale())
    else:
        parts.scaler.load_state_dict(ckpt["scaler"])  # a disabled scaler ignores a saved state
    set_rng_state(ckpt["rng"])
    return TrainState.from_checkpoint(ckpt)


def check_resume_config(cfg: TrainConfig, saved: dict[str, Any]) -> None:
    """Model, data, seed and batch size must match the checkpoint's; other train keys may change (warned). A key
    the checkpoint's config predates counts as its default (new keys default to the earlier behaviour)."""
    now = flatten_params(to_dict(cfg))
    before = flatten_params(saved)
    with contextlib.suppress(ConfigError):  # the saved config completed with today's defaults, as runs record it
        before = flatten_params(to_dict(from_dict(TrainConfig, saved).resolved()))
    fixed = [k for k in sorted(set(now) | set(before))
             if (k.startswith(("model.", "data.")) or k in ("seed", "train.batch_size")) and now.get(k) != before.get(k)]
    if fixed:
        raise TrainError("cannot resume with a different " + ", ".join(
            f"{k} ({before.get(k)!r} in the checkpoint, {now.get(k)!r} now)" for k in fixed))
    changed = [k for k in sorted(now) if now.get(k) != before.get(k)]
    if changed:
        log.warning("resuming with changed settings: %s", ", ".join(f"{k}: {before.get(k)!r} → {now.get(k)!r}" for k in changed))


def load_model(checkpoint_path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """Rebuild the model of a checkpoint, load its weights, put it in eval mode on ``device``."""
    from mdfnet.model import build_model

    ckpt = load_checkpoint(checkpoint_path)
    cfg = from_dict(TrainConfig, ckpt["config"])
    meta = ckpt["meta"]
    model = build_model(cfg.model, len(meta["numeric_features"]), len(meta["categorical_features"]),
                        int(meta["image_size"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg
