"""Where does MSF-Net 3D lose the clinical signal? One training run of the ablation, probed at every epoch.

    python benchmarks/probe_msf3d.py [--data-seed 1] [--seed 0] [--variant msf3d] [--epochs N]
        [--set key=value ...] [--workdir data/probe-msf3d] [--cache DIR] [--json FILE] [--checkpoint FILE]

The run is the ablation's (``benchmarks/ablation_synthetic.py``: same recipe, data, seed, sampler and optimiser,
through :func:`mdfnet.training.loop.run_epoch`), so its weights follow the same trajectory; every probe runs in
``torch.random.fork_rng`` and never touches the trained model's state. Per epoch:

- **scale at the fusion point** (eval mode, val split): RMS of the image backbone's map and of the clinical
  backbone's map, and their *between-study* standard deviation (the part that can carry a study's triage);
  ``clin_between_train_bn``: the same for the clinical map with BatchNorm in train mode (batch statistics over
  4 studies, what the loss saw);
- **is the signal there** (linear probes: logistic regression fitted on the train split's look-alike
  ground-truth boxes, accuracy on val's; 0.5 = chance): ``lin/vector`` from the clinical vector ``C`` itself
  (the ceiling); ``stage/*`` from the clinical branch pooled to 2×2 after the spatialiser, after each stage of
  the clinical backbone's trunk, after its projection and after ``model.clinical_map`` (what the fusion
  receives); ``lin/spatialised`` from the spatialiser's output pooled to 4×4; ``lin/clinical_global`` from the
  clinical map's channel means over the whole map; ``lin/clinical_roi`` / ``lin/image_roi`` / ``lin/fused_roi``
  from the channel means of the 7×7 RoI pool of the clinical / image (the floor: the images cannot tell the
  pair apart) / fused map on the boxes, i.e. what a RoI can see; ``lin/clinical_roi_train_bn`` the same with
  BatchNorm in train mode;
- **does the box head use it**: the box-head probe of the ablation (pair accuracy on val's ground-truth boxes
  with own / shuffled triage) and ``fc_input_shift``: ‖pool(fused, own) − pool(fused, shuffled)‖ / ‖pool(fused,
  own)‖, how much swapping the triage moves the box head's input;
- **which loss moves the clinical map** (16 fixed training batches, train mode): per weighted loss term, the
  norm of its gradient at the clinical map and whether a step along it widens or narrows the map's
  between-study spread (:func:`loss_gradients`);
- **gradients**: per-step RMS norm of the gradient (before clipping, from parameter hooks) of the clinical
  encoder, spatialiser, clinical backbone, ``clinical_map`` op, image backbone, RPN and box head, the median total
  norm and the share of steps clipped; the uncertainty weights ``0.5·exp(−s_l)`` of each loss; lr; val AP.

Prints one line per epoch and writes every number to ``--json``. ``--checkpoint FILE`` instead prints the
``stage/*`` probes and the box-head probe of a trained checkpoint (``--data-seed`` must name its dataset).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
from pathlib import Path

import torch
from ablation_synthetic import box_probe, prepare, recipe, variant_overrides
from torch import nn

log = logging.getLogger("probe_msf3d")
GROUPS = ("clinical_encoder", "features.spatialiser", "features.clinical_backbone", "features.clinical_map",
          "features.fusion",
          "features.image_backbone", "rpn", "roi_heads")


class GradMeter:
    """Squared gradient norms per parameter group and per step, from tensor hooks (before clipping); a step ends
    when the loss weighting is called again (or at :meth:`read`)."""

    def __init__(self, model: nn.Module, criterion: nn.Module, clip: float) -> None:
        self.sq: dict[str, float] = {}
        self.step_sq, self.totals, self.clip = 0.0, [], clip
        for name, p in [*model.named_parameters(), *(("criterion." + n, p) for n, p in criterion.named_parameters())]:
            group = next((g for g in GROUPS if name.startswith(g + ".")), "other")
            if p.requires_grad:
                p.register_hook(self._hook(group))
        criterion.register_forward_pre_hook(lambda module, args: self._end_step())

    def _hook(self, group: str):
        def hook(grad: torch.Tensor) -> None:
            v = float(grad.detach().float().pow(2).sum())
            self.sq[group] = self.sq.get(group, 0.0) + v
            self.step_sq += v
        return hook

    def _end_step(self) -> None:
        if self.step_sq > 0:
            self.totals.append(math.sqrt(self.step_sq))
        self.step_sq = 0.0

    def read(self) -> dict[str, float]:
        """Per-step RMS gradient norm of each group, median total norm and share of steps clipped; resets."""
        self._end_step()
        steps = max(len(self.totals), 1)
        out = {f"grad/{g}": math.sqrt(v / steps) for g, v in self.sq.items()}
        out["grad/total_median"] = float(torch.tensor(self.totals).median()) if self.totals else math.nan
        out["clipped_share"] = sum(t > self.clip for t in self.totals) / steps if self.clip > 0 else 0.0
        self.sq, self.totals = {}, []
        return out


def pair_boxes(ds) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The look-alike pair's ground-truth boxes of every item (one tensor per image) and their labels."""
    from mdfnet.data.schema import CLASSES
    from mdfnet.evaluation import LOOKALIKE_PAIR

    pair = [CLASSES.index(c) + 1 for c in LOOKALIKE_PAIR]
    boxes, labels = [], []
    for i in range(len(ds)):
        t = ds.target(i)
        keep = (t["labels"] == pair[0]) | (t["labels"] == pair[1])
        boxes.append(t["boxes"][keep])
        labels.append(t["labels"][keep])
    return boxes, torch.cat(labels)


@torch.no_grad()
def maps(model, ds, bn_train: bool = False, batch: int = 4) -> dict[str, torch.Tensor]:
    """Image map, clinical map, fused map ``[N, C, h, w]`` and clinical vector ``[N, D]`` of every item of ``ds``.
    ``bn_train``: the feature stage of a copy in train mode (BatchNorm on batch statistics, batches of 4 as in
    training; the copy's running statistics change, the model's do not)."""
    from mdfnet.data import collate_detection

    net = copy.deepcopy(model) if bn_train else model
    net.eval()
    if bn_train:
        net.features.train()
    f = net.features
    out: dict[str, list[torch.Tensor]] = {"image": [], "clinical": [], "fused": [], "vector": [], "spatialised": []}
    for s in range(0, len(ds), batch):
        images, clinical, _ = collate_detection([ds[i] for i in range(s, min(s + batch, len(ds)))])
        image_list, _ = net.transform(images, None)
        c = net.clinical_encoder(clinical, len(images))
        img = f.image_backbone(image_list.tensors)
        spatialised = f.spatialiser(c)
        clin = f.clinical_map(f.clinical_backbone(spatialised))
        pooled = nn.functional.adaptive_avg_pool2d(spatialised, 4).flatten(1)
        for k, v in (("image", img), ("clinical", clin), ("fused", f.fusion(img, clin)), ("vector", c),
                     ("spatialised", pooled)):
            out[k].append(v)
    return {k: torch.cat(v) for k, v in out.items()}


def roi_means(model, fmap: torch.Tensor, boxes: list[torch.Tensor], size: int) -> torch.Tensor:
    """Channel means of the 7×7 RoI pool of ``fmap`` on ``boxes`` → ``[R, C]`` (the box head's RoIAlign)."""
    from mdfnet.model.detector import FEATURE_KEY

    pool = model.roi_heads.box_roi_pool
    pool = getattr(pool, "roi_align", pool)
    return pool({FEATURE_KEY: fmap}, boxes, [(size, size)] * len(boxes)).mean(dim=(2, 3))


def linear_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor) -> float:
    """Val accuracy of an L2-regularised logistic regression on standardised features (LBFGS, 200 iterations)."""
    mu, sd = x_train.mean(0), x_train.std(0).clamp_min(1e-8)
    xt, xv = (x_train - mu) / sd, (x_val - mu) / sd
    yt = (y_train == y_train.max()).float()
    w = torch.zeros(xt.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + 1e-2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((((xv @ w + b) > 0).float() == (y_val == y_train.max()).float()).float().mean())


def between_sd(x: torch.Tensor) -> float:
    """Mean over channels and positions of the standard deviation across studies."""
    return float(x.std(dim=0).mean())


def fusion_probe(model, train_ds, val_ds, val_shuffled) -> dict[str, float]:
    """The scale, linear-probe and box-input-shift numbers of the module docstring (eval mode unless named)."""
    size = val_ds.image_size
    tb, ty = pair_boxes(train_ds)
    vb, vy = pair_boxes(val_ds)
    tr, va = maps(model, train_ds), maps(model, val_ds)
    tr_bn, va_bn = maps(model, train_ds, bn_train=True), maps(model, val_ds, bn_train=True)
    va_sh = maps(model, val_shuffled)
    counts_t, counts_v = [len(b) for b in tb], [len(b) for b in vb]
    out = {"rms_image": float(va["image"].pow(2).mean().sqrt()),
           "rms_clinical": float(va["clinical"].pow(2).mean().sqrt()),
           "image_between": between_sd(va["image"]), "clin_between": between_sd(va["clinical"]),
           "clin_between_train_bn": between_sd(va_bn["clinical"])}
    vec_t = tr["vector"].repeat_interleave(torch.tensor(counts_t), dim=0)
    vec_v = va["vector"].repeat_interleave(torch.tensor(counts_v), dim=0)
    out["lin/vector"] = linear_probe(vec_t, ty, vec_v, vy)
    out["lin/spatialised"] = linear_probe(tr["spatialised"].repeat_interleave(torch.tensor(counts_t), dim=0), ty,
                                          va["spatialised"].repeat_interleave(torch.tensor(counts_v), dim=0), vy)
    out["lin/clinical_global"] = linear_probe(
        tr["clinical"].mean(dim=(2, 3)).repeat_interleave(torch.tensor(counts_t), dim=0), ty,
        va["clinical"].mean(dim=(2, 3)).repeat_interleave(torch.tensor(counts_v), dim=0), vy)
    for key, (a, b) in {"clinical": (tr, va), "image": (tr, va), "fused": (tr, va)}.items():
        out[f"lin/{key}_roi"] = linear_probe(roi_means(model, a[key], tb, size), ty, roi_means(model, b[key], vb, size), vy)
    out["lin/clinical_roi_train_bn"] = linear_probe(roi_means(model, tr_bn["clinical"], tb, size), ty,
                                                    roi_means(model, va_bn["clinical"], vb, size), vy)
    from mdfnet.model.detector import FEATURE_KEY

    pool = model.roi_heads.box_roi_pool
    pool = getattr(pool, "roi_align", pool)
    own = pool({FEATURE_KEY: va["fused"]}, vb, [(size, size)] * len(vb)).flatten(1)
    shuf = pool({FEATURE_KEY: va_sh["fused"]}, vb, [(size, size)] * len(vb)).flatten(1)
    out["fc_input_shift"] = float((own - shuf).norm(dim=1).mean() / own.norm(dim=1).mean())
    return out


@torch.no_grad()
def stage_features(model, ds, batch: int = 16) -> list[torch.Tensor]:
    """Per study, the clinical branch's activations pooled to 2×2 (flattened) after the spatialiser, after each
    stage of the clinical backbone's trunk, after its 1×1 projection and after ``model.clinical_map`` (eval
    mode)."""
    from mdfnet.data import collate_detection

    f = model.eval().features
    stages = [f.spatialiser, *f.clinical_backbone.trunk, f.clinical_backbone.proj, f.clinical_map]
    out: list[list[torch.Tensor]] = [[] for _ in stages]
    for s in range(0, len(ds), batch):
        images, clinical, _ = collate_detection([ds[i] for i in range(s, min(s + batch, len(ds)))])
        x = model.clinical_encoder(clinical, len(images))
        for k, stage in enumerate(stages):
            x = stage(x)
            out[k].append(nn.functional.adaptive_avg_pool2d(x, 2).flatten(1))
    return [torch.cat(o) for o in out]


def stage_probe(model, train_ds, val_ds) -> dict[str, float]:
    """Linear-probe accuracy (look-alike ground-truth boxes, train → val) from each stage of
    :func:`stage_features`: where along the clinical branch the triage stops being readable."""
    _, ty = pair_boxes(train_ds)
    _, vy = pair_boxes(val_ds)
    counts_t = torch.tensor([len(b) for b in pair_boxes(train_ds)[0]])
    counts_v = torch.tensor([len(b) for b in pair_boxes(val_ds)[0]])
    tr, va = stage_features(model, train_ds), stage_features(model, val_ds)
    names = ["spatialiser", *(f"trunk{k}" for k in range(len(tr) - 3)), "proj", "clinical_map"]
    return {f"stage/{n}": linear_probe(a.repeat_interleave(counts_t, dim=0), ty, b.repeat_interleave(counts_v, dim=0), vy)
            for n, a, b in zip(names, tr, va, strict=True)}


def loss_gradients(parts, batches: list) -> dict[str, float]:
    """Per weighted loss term ``w_l·L_l``: the RMS norm of its gradient at the clinical map (the fusion point) and
    ``push``: −⟨g, x − x̄⟩ / ‖x − x̄‖ with ``x̄`` the batch mean, i.e. how much one descent step along that term
    alone increases (> 0) or shrinks (< 0) the between-study spread of the clinical map. Train mode on a copy."""
    net = copy.deepcopy(parts.model).train()
    captured: list[torch.Tensor] = []

    def keep(module, args, output):
        output.retain_grad()
        captured.append(output)

    net.features.clinical_backbone.register_forward_hook(keep)
    weights = {k.removeprefix("log_var/"): 0.5 * math.exp(-v) for k, v in parts.criterion.weights().items()
               if k.startswith("log_var/")}
    sums: dict[str, float] = {}
    for images, clinical, targets in batches:
        captured.clear()
        losses = net(images, clinical, targets)
        x = captured[0]
        spread = x - x.mean(dim=0, keepdim=True)
        for name, value in losses.items():
            (g,) = torch.autograd.grad(weights[name] * value, x, retain_graph=True)
            sums[f"gnorm/{name}"] = sums.get(f"gnorm/{name}", 0.0) + float(g.pow(2).sum())
            push = -float((g * spread).sum() / spread.norm().clamp_min(1e-12))
            sums[f"push/{name}"] = sums.get(f"push/{name}", 0.0) + push
    return {k: (math.sqrt(v / len(batches)) if k.startswith("gnorm/") else v / len(batches)) for k, v in sums.items()}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-seed", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", default="msf3d")
    p.add_argument("--studies", type=int, default=600)
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's (20)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra TrainConfig override")
    p.add_argument("--workdir", type=Path, default=Path("data/probe-msf3d"))
    p.add_argument("--cache", type=Path, default=None, help="generated/preprocessed datasets (default WORKDIR/data)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="probe this checkpoint's clinical branch stage by stage instead of training")
    return p.parse_args()


def main() -> None:
    from mdfnet.data import MDFDataset, collate_detection
    from mdfnet.training import config_from_sources
    from mdfnet.training.checkpoint import TrainState
    from mdfnet.training.loop import _datasets, _loader, build_parts, run_epoch

    a = parse()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(a.threads)
    data = prepare(a.cache or a.workdir / "data", a.studies, a.data_seed, 64, 96)
    cfg = config_from_sources(None, [*recipe("small", 64), *([f"train.epochs={a.epochs}"] if a.epochs else []),
                                     *variant_overrides(a.variant), *a.overrides, f"seed={a.seed}"])
    train_ds, val_ds = _datasets(cfg, data)
    val_shuffled = MDFDataset(data, "val", features=cfg.data.features, with_masks=False,
                              shuffle_clinical=not cfg.data.shuffle_clinical)
    if a.checkpoint is not None:
        from mdfnet.training import load_model

        model, _ = load_model(a.checkpoint)
        print(json.dumps({**stage_probe(model, train_ds, val_ds),
                          **{f"box_probe/{k}": v for k, v in box_probe(model, {"own": val_ds, "shuffled": val_shuffled}).items()}}))
        return
    parts = build_parts(cfg, train_ds)
    meter = GradMeter(parts.model, parts.criterion, cfg.train.grad_clip_norm)
    batches = [collate_detection([train_ds[i] for i in range(s, s + 4)]) for s in range(0, 64, 4)]
    state, loader, rows, t0 = TrainState(), _loader(train_ds, cfg, parts.device), [], time.perf_counter()
    while state.epoch < cfg.train.epochs:
        metrics, _ = run_epoch(parts, loader, cfg, val_ds, state, None)
        row = {"epoch": state.epoch, "lr": metrics["lr"], "val/ap": metrics.get("val/ap", math.nan),
               **{k.removeprefix("train/"): v for k, v in metrics.items() if k.startswith("train/loss_")},
               **meter.read()}
        row.update({f"weight/{k.removeprefix('log_var/')}": 0.5 * math.exp(-v)
                    for k, v in parts.criterion.weights().items() if k.startswith("log_var/")})
        with torch.random.fork_rng():
            if a.variant.removesuffix("-shuffled") in ("msf3d", "mdf"):
                row.update(fusion_probe(parts.model, train_ds, val_ds, val_shuffled))
                row.update(stage_probe(parts.model, train_ds, val_ds))
                row.update(loss_gradients(parts, batches))
            probe = box_probe(parts.model, {"own": val_ds, "shuffled": val_shuffled})
        parts.model.train()
        row.update({"probe_own": probe["own"], "probe_shuffled": probe["shuffled"]})
        rows.append(row)
        log.info("%s", {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    log.info("%d epochs in %.0f s", cfg.train.epochs, time.perf_counter() - t0)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "epochs": rows}, indent=1))


if __name__ == "__main__":
    main()
