"""Training: typed config, exact resume, NaN guard, checkpoint selection on validation AP (IoBB 0.5) only.

``train(cfg, data_dir, out_dir)`` trains one model on the ``train`` split of a preprocessed folder and scores
the ``val`` split; the ``test`` split is never opened here. Run folder layout::

    RUN_DIR/config.yaml              the resolved TrainConfig
    RUN_DIR/metrics.jsonl            (CLI) JSON-lines metrics, one object per epoch
    RUN_DIR/checkpoints/last.pt      state after the latest epoch end / stop (resume point)
    RUN_DIR/checkpoints/best.pt      copy of the checkpoint with the highest val AP (ties keep the earlier)

Optimisation (paper: SGD, lr 1e-3, batch 4, 100 epochs, L2 regularisation 0): SGD with momentum 0.9 (the paper
does not state it; 0.9 is torchvision's detection recipe), weight decay 0, constant learning rate
(``train.schedule`` may be ``step`` — ×``gamma`` every ``step_epochs`` epochs — or ``cosine`` over
``epochs``; stepped per epoch). The loss is the uncertainty-weighted sum of :mod:`mdfnet.model.loss`; its
log-variances are optimised by the same SGD without weight decay.

Checkpoints (``torch.save`` to a temporary file in the same folder, then ``os.replace``; every value is a
tensor, dict, list, str, int, float, bool or None, so ``torch.load(path, weights_only=True)`` reads them):

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
``meta``           image_size, features, numeric/categorical feature names, classes, versions
=================  ===========================================================================

Exact resume: the training order is a permutation that depends only on ``(seed, epoch)``
(:class:`EpochSampler`), a resumed epoch skips the batches already done, and all RNG states are restored, so
on CPU ``2 steps + resume to 4`` gives bit-identical weights to 4 straight steps, given the same torch build and
the same number of intra-op threads (``torch.get_num_threads()``: another count changes the order of float
sums). CUDA with ``cudnn.benchmark`` is fast, not bit-exact.

NaN guard: every loss term and the weighted total are checked before ``backward``; a NaN/inf raises
:class:`NonFiniteLossError` naming the step and the term, and ``last.pt`` is not rewritten, so it still holds
the last checkpointed good state (written at the latest epoch end or ``max_steps`` stop). The failing step's
state is deliberately not saved: its forward pass may already have put NaNs into BatchNorm running statistics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from mdfnet.config import ConfigError, from_dict, save_config, to_dict
from mdfnet.data import schema
from mdfnet.metrics_log import MetricLogger, NullLogger, flatten_params
from mdfnet.model import LOSS_WEIGHTINGS, ModelConfig, build_model, loss_names

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "mdfnet-checkpoint-v1"


class TrainError(RuntimeError):
    """Training cannot start or continue; the message says why."""


class NonFiniteLossError(TrainError):
    """A loss term became NaN/inf; the message names the step and the term. ``last.pt`` is left untouched."""


# ------------------------------------------------------------------------------------------ config
@dataclass
class TrainSection:
    """Keys of the ``train`` section (``--set train.lr=0.01``)."""

    epochs: int = 100
    batch_size: int = 4
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["constant", "step", "cosine"] = "constant"
    step_epochs: int = 30
    gamma: float = 0.1
    loss_weighting: Literal["uncertainty", "sum"] = "uncertainty"
    grad_clip_norm: float = 0.0
    eval_every: int = 1
    num_workers: int = 2
    device: str = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    progress: bool = True

    def validate(self) -> None:
        for key in ("epochs", "batch_size", "eval_every", "step_epochs"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key}: expected an integer >= 1, got {getattr(self, key)!r}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr: expected a positive number, got {self.lr!r}")
        for key in ("momentum", "weight_decay", "grad_clip_norm", "num_workers"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key}: expected a value >= 0, got {getattr(self, key)!r}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"train.device: expected 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")


@dataclass
class DataConfig:
    """Keys of the ``data`` section: clinical ``features`` (subset of the 10; ``[]`` = none), the expected
    ``image_size`` (``None``: whatever ``preprocessing.json`` says; otherwise it must match) and
    ``shuffle_clinical`` (the control: every study gets another study's clinical values, a fixed permutation
    per split, in training and evaluation alike; see :class:`mdfnet.data.MDFDataset`)."""

    features: list[str] = field(default_factory=lambda: list(schema.ALL_FEATURES))
    image_size: int | None = None
    shuffle_clinical: bool = False

    def validate(self) -> None:
        unknown = [f for f in self.features if f not in schema.ALL_FEATURES]
        if unknown:
            raise ConfigError(f"data.features: unknown feature(s) {unknown}; expected a subset of {list(schema.ALL_FEATURES)}")
        if len(set(self.features)) != len(self.features):
            raise ConfigError(f"data.features: duplicates in {self.features}")


@dataclass
class TrainConfig:
    """The whole training configuration (``configs/train.yaml`` holds the paper defaults)."""

    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainSection = field(default_factory=TrainSection)
    data: DataConfig = field(default_factory=DataConfig)


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


# ------------------------------------------------------------------------------------------ determinism
class EpochSampler(Sampler[int]):
    """A permutation of ``range(n)`` that depends only on ``(seed, epoch)``, minus its first ``start`` items.

    ``set_epoch(epoch, start)`` before each pass; resuming an epoch after ``k`` batches is ``start = k·batch``.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch, self.start = n, seed, 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def permutation(self, epoch: int) -> list[int]:
        (state,) = np.random.SeedSequence([self.seed, epoch]).generate_state(1)
        g = torch.Generator().manual_seed(int(state))
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        return iter(self.permutation(self.epoch)[self.start:])

    def __len__(self) -> int:
        return max(0, self.n - self.start)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:  # DataLoader worker_init_fn
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def get_rng_state() -> dict[str, Any]:
    """All RNG states as weights_only-loadable values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, pystate, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(pystate, dtype=torch.int64), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss_next"]))


# ------------------------------------------------------------------------------------------ helpers
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"train.device={name!r} but CUDA is not available")
    return device


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: ``auto`` = bf16 on CUDA if supported else fp16, off on CPU."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16" and device.type != "cuda":
        raise TrainError("train.amp=fp16 needs a CUDA device (use bf16 or off on CPU)")
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


SCHEDULES = {
    "constant": lambda opt, t: torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0),
    "step": lambda opt, t: torch.optim.lr_scheduler.StepLR(opt, step_size=t.step_epochs, gamma=t.gamma),
    "cosine": lambda opt, t: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs),
}
"""``train.schedule`` → builder ``(optimizer, TrainSection)`` of a per-epoch LR scheduler."""


def _to_device(batch, device: torch.device):
    images, clinical, targets = batch
    nb = device.type == "cuda"
    images = [im.to(device, non_blocking=nb) for im in images]
    clinical = {k: v.to(device, non_blocking=nb) for k, v in clinical.items()}
    targets = [{k: v.to(device, non_blocking=nb) for k, v in t.items()} for t in targets]
    return images, clinical, targets


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


def _collate():
    from mdfnet.data import collate_detection

    return collate_detection


# ------------------------------------------------------------------------------------------ inference
@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int = 4, device: str | torch.device | None = None,
            keep_masks: bool = False, num_workers: int = 0,
            autocast_dtype: torch.dtype | None = None) -> list[dict[str, torch.Tensor]]:
    """Run ``model`` in eval mode over ``dataset`` in order; returns CPU outputs ``{"boxes","labels","scores"}``
    (plus ``"masks"`` if ``keep_masks``). Only images and clinical data reach the model, never targets."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=_collate(), num_workers=num_workers,
                        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0))
    outputs: list[dict[str, torch.Tensor]] = []
    try:
        for images, clinical, _targets in loader:
            images = [im.to(device) for im in images]
            clinical = {k: v.to(device) for k, v in clinical.items()}
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                out = model(images, clinical)
            for o in out:
                outputs.append({k: v.float().cpu() if v.is_floating_point() else v.cpu()
                                for k, v in o.items() if keep_masks or k != "masks"})
    finally:
        model.train(was_training)
    return outputs


def evaluate_split(model: nn.Module, dataset, batch_size: int, max_dets: int, score_threshold: float,
                   device: torch.device | None = None, autocast_dtype: torch.dtype | None = None):
    """Validation AP/AR at IoBB 0.5 (COCO-style) of ``model`` on ``dataset`` → ``mdfnet.evaluation.EvalResult``."""
    from mdfnet.evaluation import dataset_to_coco, evaluate, outputs_to_coco

    outputs = predict(model, dataset, batch_size=batch_size, device=device, autocast_dtype=autocast_dtype)
    gt = dataset_to_coco(dataset)
    dets = outputs_to_coco(outputs, [i + 1 for i in range(len(dataset))])
    return evaluate(gt, dets, overlap="iobb", thresholds=(0.5,), max_dets=max_dets, score_threshold=score_threshold)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"checkpoint {str(path)!r} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{str(path)!r} is not an mdfnet checkpoint (format {CHECKPOINT_FORMAT!r})")
    return ckpt


def load_model(checkpoint_path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """Rebuild the model of a checkpoint, load its weights, put it in eval mode on ``device``."""
    ckpt = load_checkpoint(checkpoint_path)
    cfg = from_dict(TrainConfig, ckpt["config"])
    meta = ckpt["meta"]
    model = build_model(cfg.model, len(meta["numeric_features"]), len(meta["categorical_features"]),
                        int(meta["image_size"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg


# ------------------------------------------------------------------------------------------ training
@dataclass
class _State:
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


def _check_resume_config(cfg: TrainConfig, saved: dict[str, Any]) -> None:
    """Model, data, seed and batch size must match the checkpoint's; other train keys may change (warned)."""
    now = flatten_params(to_dict(cfg))
    before = flatten_params(saved)
    fixed = [k for k in sorted(set(now) | set(before))
             if (k.startswith(("model.", "data.")) or k in ("seed", "train.batch_size")) and now.get(k) != before.get(k)]
    if fixed:
        raise TrainError("cannot resume with a different " + ", ".join(
            f"{k} ({before.get(k)!r} in the checkpoint, {now.get(k)!r} now)" for k in fixed))
    changed = [k for k in sorted(now) if now.get(k) != before.get(k)]
    if changed:
        log.warning("resuming with changed settings: %s", ", ".join(f"{k}: {before.get(k)!r} → {now.get(k)!r}" for k in changed))


def _finite_or_raise(losses: dict[str, torch.Tensor], total: torch.Tensor, step: int) -> None:
    values = torch.stack([v.detach().float() for v in losses.values()] + [total.detach().float()]).cpu()
    if bool(torch.isfinite(values).all()):
        return
    names = list(losses) + ["total (weighted)"]
    bad = [(n, float(v)) for n, v in zip(names, values.tolist(), strict=True) if not math.isfinite(v)]
    name, value = bad[0]
    raise NonFiniteLossError(
        f"step {step}: loss term {name!r} is {value}"
        + (f" (also {', '.join(n for n, _ in bad[1:])})" if len(bad) > 1 else "")
        + "; checkpoints/last.pt keeps the last good state (try a lower train.lr)"
    )


def train(cfg: TrainConfig, data_dir: str | Path, out_dir: str | Path, logger: MetricLogger | None = None,
          max_steps: int | None = None, resume: bool = False) -> TrainResult:
    """Train ``cfg`` on ``data_dir``'s train split, validate on its val split, write ``out_dir`` (module docstring).

    ``max_steps``: stop after that many optimiser steps in total (counting steps before a resume), then validate
    and checkpoint. ``resume``: continue from ``out_dir/checkpoints/last.pt``.
    """
    from mdfnet.data import MDFDataset

    logger = logger or NullLogger()
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    if max_steps is not None and max_steps < 1:
        raise TrainError(f"max_steps must be >= 1, got {max_steps}")
    if not resume and last_path.exists():
        raise TrainError(f"{out_dir} already holds a run ({last_path}); pass resume=True (--resume) or another out dir")
    ckpt = load_checkpoint(last_path) if resume else None
    if ckpt is not None:
        _check_resume_config(cfg, ckpt["config"])
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    t = cfg.train
    device = resolve_device(t.device)
    amp_dtype = resolve_amp(t.amp, device)
    features = list(cfg.data.features)
    shuffle = cfg.data.shuffle_clinical
    train_ds = MDFDataset(data_dir, "train", features=features, with_masks=cfg.model.use_mask, shuffle_clinical=shuffle)
    val_ds = MDFDataset(data_dir, "val", features=features, with_masks=False, shuffle_clinical=shuffle)
    if cfg.data.image_size is not None and cfg.data.image_size != train_ds.image_size:
        raise TrainError(f"data.image_size={cfg.data.image_size} but {data_dir} holds {train_ds.image_size} px images")
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise TrainError(f"{data_dir}: need non-empty train and val splits, got {len(train_ds)} train / {len(val_ds)} val")

    seed_everything(cfg.seed)
    model = build_model(cfg.model, len(train_ds.numeric_features), len(train_ds.categorical_features),
                        train_ds.image_size)
    criterion = LOSS_WEIGHTINGS[t.loss_weighting](loss_names(cfg.model.use_mask))
    model.to(device)
    criterion.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if t.channels_last:
            model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        [{"params": [p for p in model.parameters() if p.requires_grad]},
         {"params": list(criterion.parameters()), "weight_decay": 0.0}],
        lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
    )
    scheduler = SCHEDULES[t.schedule](optimizer, t)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    st = _State()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        criterion.load_state_dict(ckpt["loss_weighting"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        for f in dataclasses.fields(_State):
            if f.name in ckpt:
                setattr(st, f.name, ckpt[f.name])
        set_rng_state(ckpt["rng"])
        log.info("resumed from %s at step %d (epoch %d, batch %d)", last_path, st.step, st.epoch + 1, st.batch_in_epoch)

    save_config(cfg, out_dir / "config.yaml")
    logger.log_params(flatten_params(to_dict(cfg)))
    meta = {
        "image_size": train_ds.image_size, "features": list(train_ds.features),
        "numeric_features": list(train_ds.numeric_features), "categorical_features": list(train_ds.categorical_features),
        "classes": list(train_ds.classes), "torch_version": str(torch.__version__), "loss_names": list(loss_names(cfg.model.use_mask)),
    }

    def save_last() -> None:
        state = {f.name: getattr(st, f.name) for f in dataclasses.fields(_State)}
        atomic_save({
            "format": CHECKPOINT_FORMAT, "model": model.state_dict(), "loss_weighting": criterion.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "rng": get_rng_state(), **state, "config": to_dict(cfg), "meta": meta,
        }, last_path)

    sampler = EpochSampler(len(train_ds), cfg.seed)
    loader = DataLoader(
        train_ds, batch_size=t.batch_size, sampler=sampler, collate_fn=_collate(), num_workers=t.num_workers,
        pin_memory=device.type == "cuda", persistent_workers=t.num_workers > 0, worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    batches_per_epoch = math.ceil(len(train_ds) / t.batch_size)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    trainable = [p for g in optimizer.param_groups for p in g["params"]]

    def reached_max() -> bool:
        return max_steps is not None and st.step >= max_steps

    while st.epoch < t.epochs and not reached_max():
        sampler.set_epoch(st.epoch, start=st.batch_in_epoch * t.batch_size)
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {st.epoch + 1}/{t.epochs}", initial=st.batch_in_epoch,
                   total=batches_per_epoch, disable=not t.progress, leave=False)
        for batch in bar:
            images, clinical, targets = _to_device(batch, device)
            with autocast():
                losses = model(images, clinical, targets)
            losses = {k: v.float() for k, v in losses.items()}
            total = criterion(losses)
            _finite_or_raise(losses, total, st.step + 1)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if t.grad_clip_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(trainable, t.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            st.step += 1
            st.batch_in_epoch += 1
            st.epoch_steps += 1
            for k, v in losses.items():
                st.epoch_sums[k] = st.epoch_sums.get(k, 0.0) + float(v.detach())
            st.epoch_sums["loss_total"] = st.epoch_sums.get("loss_total", 0.0) + float(total.detach())
            bar.set_postfix(loss=f"{float(total.detach()):.3f}")
            if reached_max():
                break
        bar.close()
        st.epoch_time += time.perf_counter() - t0

        epoch_done = st.batch_in_epoch >= batches_per_epoch
        last_epoch = epoch_done and st.epoch + 1 == t.epochs
        do_eval = reached_max() or last_epoch or (epoch_done and (st.epoch + 1) % t.eval_every == 0)
        metrics: dict[str, float] = {"epoch": float(st.epoch + (1 if epoch_done else st.batch_in_epoch / batches_per_epoch)),
                                     "lr": float(lr), "time/epoch_s": st.epoch_time}
        metrics.update({f"train/{k}": v / max(st.epoch_steps, 1) for k, v in st.epoch_sums.items()})
        metrics.update({f"train/{k}": v for k, v in criterion.weights().items()})
        if st.epoch_time > 0:
            metrics["train/images_per_s"] = st.epoch_steps * t.batch_size / st.epoch_time
        improved = False
        if do_eval:
            t1 = time.perf_counter()
            res = evaluate_split(model, val_ds, t.batch_size, cfg.model.box_detections_per_img,
                                 cfg.model.box_score_thresh, device, amp_dtype)
            ap = float(res.ap)
            metrics.update({"val/ap": ap, "val/ar": float(res.ar), "time/val_s": time.perf_counter() - t1})
            score = ap if math.isfinite(ap) and ap >= 0 else -1.0
            if st.best_val_ap is None or score > st.best_val_ap:
                st.best_val_ap, st.best_epoch, st.best_step, improved = score, st.epoch + 1, st.step, True
        if epoch_done:
            scheduler.step()
            st.epoch += 1
            st.batch_in_epoch, st.epoch_steps, st.epoch_sums, st.epoch_time = 0, 0, {}, 0.0
        st.history.append(metrics)
        save_last()
        if improved:
            atomic_copy(last_path, best_path)
        logger.log_metrics(metrics, step=st.step)
        log.info("epoch %.2f step %d: loss %.4f%s", metrics["epoch"], st.step, metrics.get("train/loss_total", math.nan),
                 f", val AP {metrics['val/ap']:.4f}" if "val/ap" in metrics else "")

    return TrainResult(
        out_dir=out_dir, last_checkpoint=last_path, best_checkpoint=best_path if best_path.exists() else None,
        best_val_ap=st.best_val_ap, best_epoch=st.best_epoch, steps=st.step, epochs_completed=st.epoch,
        history=list(st.history),
    )


def config_from_sources(config: str | Path | None = None, overrides: Sequence[str] = (),
                        base: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults ← ``base`` ← YAML ``config`` ← ``overrides`` (``model.fusion=concat_conv``)."""
    from mdfnet.config import load_config

    return load_config(TrainConfig, config, list(overrides), base=base)
