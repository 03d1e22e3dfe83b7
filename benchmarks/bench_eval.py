"""Evaluation speed: ``mdfnet.evaluation.evaluate`` vs pycocotools' COCOeval on the same input.

10k detections over 1k images (5 classes, seeded random: jittered copies of the ground truth plus clutter,
scores rounded to 2 decimals so that ties occur), IoU and IoBB at 0.5, maxDets 10, score threshold 0.05.
Prints both times (best of ``--repeat``), their ratio and the largest absolute difference of AP, AR and the
per-class AP/AR/TP/FP/FN. The goal: ours <= 1 s and >= 5x faster than pycocotools.

Timed for us: ``evaluate(gt_dict, results_list)``, i.e. parsing and validating the inputs, matching and
accumulating. Timed for pycocotools: ``COCOeval.evaluate()`` + ``accumulate()`` (the speed-up is computed
against this, which favours pycocotools), and separately the loading (``COCO.createIndex`` + ``loadRes``, plus
the deep copies our reference wrapper makes) that a user also pays. Exit status 1 when the goal is missed.

    python benchmarks/bench_eval.py [--images 1000] [--dets 10000] [--repeat 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from mdfnet.evaluation import evaluate
from mdfnet.evaluation.reference import prepare, run, summarise

CLASSES = ("Enlarged cardiac silhouette", "Atelectasis", "Pleural effusion", "Consolidation", "Pulmonary edema")


def make_case(n_images: int, n_dets: int, seed: int = 0, size: float = 512.0) -> tuple[dict, list]:
    """Seeded COCO ground truth (0-4 boxes per image, some images empty) and ``n_dets`` detections."""
    rng = np.random.default_rng(seed)
    n_gt = rng.integers(0, 5, size=n_images)
    img = np.repeat(np.arange(1, n_images + 1), n_gt)
    xy = rng.uniform(0, size * 0.7, size=(len(img), 2))
    wh = rng.uniform(8, size * 0.3, size=(len(img), 2))
    cat = rng.integers(1, len(CLASSES) + 1, size=len(img))
    gt = {
        "images": [{"id": i, "width": size, "height": size} for i in range(1, n_images + 1)],
        "annotations": [
            {"id": j + 1, "image_id": int(img[j]), "category_id": int(cat[j]), "bbox": [*xy[j], *wh[j]],
             "area": float(wh[j, 0] * wh[j, 1]), "iscrowd": 0}
            for j in range(len(img))
        ],
        "categories": [{"id": k + 1, "name": name} for k, name in enumerate(CLASSES)],
    }
    # half jittered copies of ground truths (possibly with the wrong class), half clutter
    n_near = n_dets // 2
    src = rng.integers(0, len(img), size=n_near)
    d_img = np.r_[img[src], rng.integers(1, n_images + 1, size=n_dets - n_near)]
    d_cat = np.r_[np.where(rng.random(n_near) < 0.8, cat[src], rng.integers(1, 6, size=n_near)),
                  rng.integers(1, len(CLASSES) + 1, size=n_dets - n_near)]
    d_xy = np.r_[xy[src] + rng.normal(0, 10, size=(n_near, 2)), rng.uniform(0, size * 0.8, size=(n_dets - n_near, 2))]
    d_wh = np.r_[wh[src] * rng.uniform(0.5, 1.3, size=(n_near, 2)), rng.uniform(4, size * 0.3, size=(n_dets - n_near, 2))]
    score = np.round(rng.random(n_dets), 2)
    dets = [
        {"image_id": int(d_img[j]), "category_id": int(d_cat[j]), "bbox": [*d_xy[j], *d_wh[j]], "score": float(score[j])}
        for j in range(n_dets)
    ]
    return gt, dets


def _best(fn, repeat: int, setup=lambda: ()) -> tuple[float, object]:
    """Best wall time of ``fn(*setup())`` over ``repeat`` runs (``setup`` untimed) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        args = setup()
        t0 = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, out


def _max_diff(ours, ref: dict) -> float:
    """Largest |ours - pycocotools| over AP, AR and per-class AP/AR/TP/FP/FN (NaN on both sides = equal)."""
    pairs = [(ours.ap, ref["ap"]), (ours.ar, ref["ar"])]
    for cid, name in zip(ours.category_ids, ours.class_names, strict=True):
        mine, theirs = ours.per_class[name], ref["per_class"][cid]
        pairs += [(np.nan if mine[k] is None else mine[k], theirs[k]) for k in ("ap", "ar", "tp", "fp", "fn")]
    diffs = [0.0 if (np.isnan(a) and np.isnan(b)) else abs(a - b) for a, b in pairs]
    return float(np.max(diffs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--dets", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    gt, dets = make_case(args.images, args.dets, args.seed)
    print(f"{args.dets} detections, {len(gt['annotations'])} ground truths, {args.images} images, 5 classes; "
          f"IoU/IoBB 0.5, maxDets 10, score >= 0.05; best of {args.repeat}")
    print(f"{'overlap':>7}  {'ours (s)':>9}  {'pycocotools (s)':>15}  {'speed-up':>8}  {'+ loading (s)':>13}  "
          f"{'AP':>8}  {'AR':>8}  {'max |diff|':>10}")
    ok = True
    for overlap in ("iou", "iobb"):
        kwargs = dict(overlap=overlap, thresholds=(0.5,), max_dets=10, score_threshold=0.05)
        t_ours, ours = _best(lambda kw=kwargs: evaluate(gt, dets, **kw), args.repeat)
        # pycocotools, timed: COCOeval.evaluate() + accumulate() only (untimed: COCO indexing, loadRes), so the
        # comparison favours pycocotools; ours includes parsing and validating the JSON-like inputs
        t_ref, E = _best(run, args.repeat, setup=lambda kw=kwargs: (prepare(gt, dets, **kw),))
        ref = summarise(E)
        t_load, _ = _best(lambda kw=kwargs: prepare(gt, dets, **kw), args.repeat)
        diff = _max_diff(ours, ref)
        print(f"{overlap:>7}  {t_ours:9.3f}  {t_ref:15.3f}  {t_ref / t_ours:7.1f}x  {t_load:13.3f}  {ours.ap:8.5f}  "
              f"{ours.ar:8.5f}  {diff:10.2e}")
        ok &= diff <= 1e-9 and t_ours <= 1.0 and t_ref / t_ours >= 5
    print("goal (<= 1 s, >= 5x, |diff| <= 1e-9):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
