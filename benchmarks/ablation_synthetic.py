"""Does clinical fusion help on the synthetic data? Variants × seeds on one generated dataset, scored on val and test.

    python benchmarks/ablation_synthetic.py [--studies 600] [--image-size 64] [--variants baseline,msf1d,mdf]
                                            [--seeds 0,1] [--epochs 30] [--set model.use_mask=false ...]
                                            [--workdir data/ablation] [--json FILE]

The generator (``mdfnet/data/synthetic.py``) renders *Consolidation* and *Pulmonary edema* with the same
renderer and the same box distribution: the image cannot tell them apart, the triage can (temperature vs
respiratory rate / SpO₂). Besides the overall IoBB AP@0.5 this script therefore reports the **look-alike
accuracy**: for every ground-truth box of the pair, the highest-scoring detection of either class of the pair
that covers it (IoBB ≥ 0.5, score ≥ 0.05); the accuracy is the share of those whose class is right (boxes no
detection covers are counted separately as missed). An image-only model can only guess from co-occurring
findings; a model that uses the clinical data should do better.

Pipeline: ``generate`` (cached in ``WORKDIR/sources`` for the same ``--studies/--data-seed``) → ``join`` →
``preprocess`` (``image_size``) → ``train`` per variant × seed (best checkpoint on validation AP only) → predict
val and test with the best checkpoint. Every run is an ordinary ``mdfnet train`` run folder under ``WORKDIR/runs``;
a second invocation resumes unfinished runs and re-scores finished ones (use a new ``--workdir`` for new settings).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mdfnet.data import MDFDataset
from mdfnet.data.schema import CLASSES
from mdfnet.evaluation import box_iobb, dataset_to_coco, evaluate, outputs_to_coco
from mdfnet.train import config_from_sources, load_model, predict, train

log = logging.getLogger("ablation")
TWINS = ("Consolidation", "Pulmonary edema")
# the tiny grid's CPU settings (pipelines/grids/tiny.yaml), without masks: anchors scaled to small images
DEFAULTS = ("model.backbone=mobilenet_v3_small", "model.use_mask=false", "model.anchor_sizes=[8,16,32,64]",
            "train.batch_size=4", "train.lr=0.01", "train.grad_clip_norm=10", "train.num_workers=0",
            "train.device=cpu", "train.progress=false")


def _xywh(b: np.ndarray) -> np.ndarray:
    """xyxy ``[..., 4]`` → COCO xywh ``[..., 4]``."""
    return np.stack([b[..., 0], b[..., 1], b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]], -1)


def twin_accuracy(dataset: MDFDataset, outputs: list[dict[str, torch.Tensor]], score_threshold: float = 0.05,
                  min_iobb: float = 0.5) -> dict[str, int]:
    """Counts over the ground-truth boxes of the look-alike pair: ``correct`` / ``swapped`` (covered by a detection
    of the twin class first) / ``missed`` (no detection of the pair covers it)."""
    twin_ids = [CLASSES.index(c) + 1 for c in TWINS]
    counts = {"correct": 0, "swapped": 0, "missed": 0}
    for i, out in enumerate(outputs):
        target = dataset.target(i)
        keep = (out["scores"] >= score_threshold) & torch.isin(out["labels"], torch.tensor(twin_ids))
        boxes = out["boxes"][keep].double().numpy()
        labels, scores = out["labels"][keep].numpy(), out["scores"][keep].numpy()
        for gt_box, gt_label in zip(target["boxes"].double().numpy(), target["labels"].numpy(), strict=True):
            if gt_label not in twin_ids:
                continue
            if len(boxes) == 0:
                counts["missed"] += 1
                continue
            cover = box_iobb(_xywh(boxes), _xywh(gt_box[None])) >= min_iobb  # [K] against [1] → [K]
            if not cover.any():
                counts["missed"] += 1
                continue
            best = np.flatnonzero(cover)[np.argmax(scores[cover])]
            counts["correct" if labels[best] == gt_label else "swapped"] += 1
    return counts


def score_split(model, data_dir: Path, split: str) -> dict[str, float]:
    ds = MDFDataset(data_dir, split)
    outputs = predict(model, ds, batch_size=8)
    res = evaluate(dataset_to_coco(ds), outputs_to_coco(outputs, [i + 1 for i in range(len(ds))]), overlap="iobb")
    tw = twin_accuracy(ds, outputs)
    decided = tw["correct"] + tw["swapped"]
    row = {"ap": res.ap, "ar": res.ar, "twin_acc": tw["correct"] / decided if decided else float("nan"),
           **{f"twin_{k}": v for k, v in tw.items()}}
    for c in TWINS:
        ap = res.per_class.get(c, {}).get("ap")  # None: no ground truth of the class in this split
        row[f"ap/{c}"] = float("nan") if ap is None else ap
    return row


def prepare(workdir: Path, studies: int, data_seed: int, image_size: int, source_size: int) -> Path:
    from mdfnet.config import load_config
    from mdfnet.data.join import join
    from mdfnet.data.preprocess import PreprocessConfig, preprocess
    from mdfnet.data.synthetic import generate

    sources = workdir / f"sources-{studies}-{data_seed}-{source_size}"
    if not (sources / ".complete").is_file():
        generate(sources, n_studies=studies, seed=data_seed, image_size=source_size)
        (sources / ".complete").touch()
    joined, pre = workdir / "joined", workdir / f"pre-{image_size}"
    join(sources, joined)
    preprocess(joined, pre, load_config(PreprocessConfig, None, [f"image_size={image_size}"]))
    return pre


def mean_sd(xs: list[float]) -> str:
    xs = [x for x in xs if x == x]
    if not xs:
        return "n/a"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--studies", type=int, default=600)
    p.add_argument("--data-seed", type=int, default=1)
    p.add_argument("--source-size", type=int, default=128, help="typical side of the generated JPEGs")
    p.add_argument("--image-size", type=int, default=64, help="preprocess image_size")
    p.add_argument("--variants", default="baseline,msf1d,mdf")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra TrainConfig override")
    p.add_argument("--workdir", type=Path, default=Path("data/ablation"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(a.threads)
    data = prepare(a.workdir, a.studies, a.data_seed, a.image_size, a.source_size)
    rows = []
    for variant in a.variants.split(","):
        for seed in (int(s) for s in a.seeds.split(",")):
            out = a.workdir / "runs" / f"{variant}-s{seed}"
            cfg = config_from_sources(None, [*DEFAULTS, f"model.variant={variant}", f"train.epochs={a.epochs}",
                                             f"seed={seed}", *a.overrides])
            t0 = time.perf_counter()
            # an interrupted (or finished) run continues from its last.pt instead of starting again
            result = train(cfg, data, out, resume=(out / "checkpoints" / "last.pt").is_file())
            model, _ = load_model(result.best_checkpoint)
            row = {"variant": variant, "seed": seed, "best_epoch": result.best_epoch,
                   "train_s": round(time.perf_counter() - t0, 1)}
            for split in ("val", "test"):
                row.update({f"{split}/{k}": v for k, v in score_split(model, data, split).items()})
            log.info("%s", row)
            rows.append(row)
    cols = ("val/ap", "test/ap", "val/twin_acc", "test/twin_acc", f"test/ap/{TWINS[0]}", f"test/ap/{TWINS[1]}")
    print(f"{'variant':<10} " + " ".join(f"{c:>24}" for c in cols))
    for variant in a.variants.split(","):
        mine = [r for r in rows if r["variant"] == variant]
        print(f"{variant:<10} " + " ".join(f"{mean_sd([r[c] for r in mine]):>24}" for c in cols))
    twin_counts = {v: {k: sum(r[f"test/twin_{k}"] for r in rows if r["variant"] == v)
                       for k in ("correct", "swapped", "missed")} for v in a.variants.split(",")}
    print("look-alike pair on test (summed over seeds):", twin_counts)
    if a.json:
        a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
