"""Does clinical fusion help on the synthetic data? Variants × seeds × generated datasets, scored on val and test.

    python benchmarks/ablation_synthetic.py [--studies 600] [--data-seeds 1,2] [--seeds 0,1,2]
        [--variants baseline,msf3d,msf1d,mdf,mdf-shuffled] [--epochs N] [--image-size 64] [--jobs 2]
        [--set key=value ...] [--workdir data/ablation] [--json FILE] [--markdown FILE]

Every run uses the base of the ``demo`` grid (``pipelines/grids/demo.yaml``: the small-scale recipe — 64 px,
stride-8 MobileNetV3-small, 32 RoIs per image, masks off, 20 epochs, lr 0.01 with a cosine decay, clip 10),
or with ``--recipe paper`` the paper's defaults (anchors scaled to ``--image-size``), then ``--epochs`` and
``--set``. On a GPU: ``--recipe paper --source-size 512 --image-size 512 --set train.device=cuda``.
A variant name ending in ``-shuffled`` is the shuffled-clinical control of that variant
(``data.shuffle_clinical=true``: every study gets another study's clinical values). With the paper's clinical
map MSF-Net 3D does not learn the look-alike rule in this recipe; ``--set model.clinical_map=mean_norm`` fuses
a spatially constant one (README, "MSF-Net 3D"; ``benchmarks/probe_msf3d.py`` probes a run per epoch).

The generator (``mdfnet/data/synthetic/``) renders *Consolidation* and *Pulmonary edema* with the same
renderer and the same box distribution: the image cannot tell them apart, the triage can (fever vs tachypnoea /
low SpO₂). Besides IoBB AP@0.5 the script reports the look-alike pair's balanced accuracy
(:func:`mdfnet.evaluation.pair_confusion`: for each ground-truth box of the pair, is the highest-scoring
covering detection of the pair of the right class; misses counted apart) and a probe of the box head alone:
its Consolidation-vs-edema accuracy on the pair's ground-truth boxes with the clinical data of each study and
with shuffled clinical data (``probe_own`` / ``probe_shuffled``; ``--probe-train`` adds the train split).

Per data seed: ``generate`` → ``join`` → ``preprocess`` (``image_size``), cached in ``--cache``; then every variant × seed is
an ordinary ``mdfnet train`` run folder under ``WORKDIR/d<data seed>/runs`` (best checkpoint on validation AP
only; the test split is scored once at the end). Runs go ``--jobs`` at a time, one torch thread each; a second
invocation resumes unfinished runs and re-scores finished ones (use a new ``--workdir`` for new settings).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHUFFLED = "-shuffled"
METRICS = ("ap", "lookalike_bacc", "lookalike_missed")
log = logging.getLogger("ablation")


def recipe(name: str = "small", image_size: int = 64) -> list[str]:
    """Base overrides of a recipe: ``small`` = the ``demo`` grid's base (the small-scale CPU recipe); ``paper`` =
    the paper's defaults (``configs/train.yaml``: stride 32, 512 RoIs, masks, lr 1e-3 constant, 100 epochs) with
    the anchors scaled to ``image_size`` (32..512 at 512 px)."""
    from mdfnet.pipeline.grids import load_grids

    if name == "small":
        return [str(s) for s in load_grids(ROOT / "pipelines" / "grids")["demo"]["base"]]
    if name == "paper":
        anchors = [max(1, round(a * image_size / 512)) for a in (32, 64, 128, 256, 512)]
        return [f"model.anchor_sizes=[{','.join(map(str, anchors))}]", "train.progress=false"]
    raise ValueError(f"unknown recipe {name!r}; expected small or paper")


def variant_overrides(name: str) -> list[str]:
    """``mdf`` → ``[model.variant=mdf]``; ``mdf-shuffled`` → ``[model.variant=mdf, data.shuffle_clinical=true]``."""
    base = name.removesuffix(SHUFFLED)
    return [f"model.variant={base}"] + (["data.shuffle_clinical=true"] if name.endswith(SHUFFLED) else [])


def prepare(workdir: Path, studies: int, data_seed: int, image_size: int, source_size: int) -> Path:
    """Generate (cached), join and preprocess one synthetic dataset; returns the preprocessed folder."""
    from mdfnet.config import load_config
    from mdfnet.data.join import join
    from mdfnet.data.preprocess import PreprocessConfig, preprocess
    from mdfnet.data.synthetic import generate

    sources = workdir / f"sources-{studies}-{data_seed}-{source_size}"
    if not (sources / ".complete").is_file():
        generate(sources, n_studies=studies, seed=data_seed, image_size=source_size)
        (sources / ".complete").touch()
    pre = workdir / f"pre-{studies}-{data_seed}-{image_size}"
    if not (pre / ".complete").is_file():
        joined = workdir / f"joined-{studies}-{data_seed}"
        join(sources, joined)
        preprocess(joined, pre, load_config(PreprocessConfig, None, [f"image_size={image_size}", "workers=1"]))
        (pre / ".complete").touch()
    return pre


def box_probe(model, datasets: dict[str, Any]) -> dict[str, float]:
    """The box head alone on the ground-truth boxes of the look-alike pair (:meth:`MDFNet.classify_boxes`): the
    share whose logits rank the right class of the pair first, with the clinical data of each dataset in
    ``datasets`` (e.g. the run's own and the shuffled control's). NaN without boxes of the pair."""
    import torch

    from mdfnet.data import collate_detection
    from mdfnet.data.schema import CLASSES
    from mdfnet.evaluation import LOOKALIKE_PAIR

    a, b = (CLASSES.index(c) + 1 for c in LOOKALIKE_PAIR)
    out = {}
    for name, ds in datasets.items():
        items = [ds[i] for i in range(len(ds))]
        images, clinical, targets = collate_detection(items)
        pair = [(t["labels"] == a) | (t["labels"] == b) for t in targets]
        labels = torch.cat([t["labels"][m] for t, m in zip(targets, pair, strict=True)])
        if len(labels) == 0:
            out[name] = math.nan
            continue
        with torch.no_grad():
            logits = model.eval().classify_boxes(images, clinical, [t["boxes"][m] for t, m in zip(targets, pair,
                                                                                                    strict=True)])
        out[name] = float((torch.where(logits[:, a] > logits[:, b], a, b) == labels).float().mean())
    return out


def score_split(model, cfg, data_dir: Path, split: str) -> dict[str, float]:
    """IoBB AP/AR@0.5 and the look-alike pair's metrics (the evaluate step's recipe,
    :func:`mdfnet.training.inference.score_split`) and the box-head probe of ``model`` on ``split``."""
    from mdfnet.data import MDFDataset
    from mdfnet.training.inference import score_split as evaluate_split_recipe

    scored = evaluate_split_recipe(model, cfg, data_dir, split, batch_size=8)
    probe = box_probe(model, {"own": scored.dataset, "shuffled": MDFDataset(
        data_dir, split, features=cfg.data.features, with_masks=False, shuffle_clinical=True)})
    res, pair = scored.result, scored.pair
    return {"ap": res.ap, "ar": res.ar, "lookalike_bacc": pair.balanced_accuracy,
            "lookalike_missed": pair.total_missed, "lookalike_correct": sum(pair.correct),
            "lookalike_swapped": sum(pair.swapped), "probe_own": probe["own"], "probe_shuffled": probe["shuffled"]}


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) one variant × seed on one dataset and score its best checkpoint on val and test."""
    import torch

    from mdfnet.training import config_from_sources, load_model, train
    from mdfnet.training.run_folder import RunFolder

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    logging.getLogger().setLevel(logging.WARNING)  # the workers' per-epoch logs would drown the summary
    out = Path(job["out"])
    cfg = config_from_sources(None, [*job["overrides"], f"seed={job['seed']}"])
    t0 = time.perf_counter()
    result = train(cfg, job["data"], out, resume=RunFolder(out).last.is_file())
    model, cfg = load_model(result.best_checkpoint)
    row = {k: job[k] for k in ("variant", "seed", "data_seed")}
    row.update(best_epoch=result.best_epoch, train_s=round(time.perf_counter() - t0, 1))
    for split in ("train", "val", "test") if job.get("probe_train") else ("val", "test"):
        row.update({f"{split}/{k}": v for k, v in score_split(model, cfg, Path(job["data"]), split).items()})
    return row


def mean_sd(xs: list[float], scale: float = 1.0, digits: int = 1) -> str:
    xs = [scale * x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


def table(rows: list[dict[str, Any]], variants: list[str]) -> str:
    """Markdown: per variant, mean ± sd over all runs (seeds × datasets) of AP (%), balanced accuracy, misses;
    and the number of runs whose test AP beats the baseline run of the same dataset and seed."""
    base = {(r["data_seed"], r["seed"]): r["test/ap"] for r in rows if r["variant"] == "baseline"}
    head = ("| variant | runs | val AP % | test AP % | test AP − baseline (pts) | runs above baseline (test AP) "
            "| val look-alike bAcc | test look-alike bAcc | test pair boxes missed "
            "| test box-head probe: own / shuffled clinical |")
    lines = [head, "|" + "---|" * 10]
    for v in variants:
        mine = [r for r in rows if r["variant"] == v]
        gaps = [r["test/ap"] - base[(r["data_seed"], r["seed"])] for r in mine if (r["data_seed"], r["seed"]) in base]
        above = f"{sum(g > 0 for g in gaps)}/{len(gaps)}" if v != "baseline" and gaps else "—"
        lines.append(f"| {v} | {len(mine)} | {mean_sd([r['val/ap'] for r in mine], 100)} "
                     f"| {mean_sd([r['test/ap'] for r in mine], 100)} "
                     f"| {mean_sd(gaps, 100) if v != 'baseline' else '—'} | {above} "
                     f"| {mean_sd([r['val/lookalike_bacc'] for r in mine], 1, 2)} "
                     f"| {mean_sd([r['test/lookalike_bacc'] for r in mine], 1, 2)} "
                     f"| {mean_sd([r['test/lookalike_missed'] for r in mine], 1, 1)} "
                     f"| {mean_sd([r['test/probe_own'] for r in mine], 1, 2)} / "
                     f"{mean_sd([r['test/probe_shuffled'] for r in mine], 1, 2)} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--studies", type=int, default=600)
    p.add_argument("--data-seeds", default="1,2", help="generated datasets (synthetic seeds)")
    p.add_argument("--source-size", type=int, default=96, help="typical side of the generated JPEGs")
    p.add_argument("--image-size", type=int, default=64, help="preprocess image_size")
    p.add_argument("--variants", default="baseline,msf3d,msf1d,mdf,mdf-shuffled")
    p.add_argument("--seeds", default="0,1,2", help="training seeds")
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    p.add_argument("--recipe", choices=("small", "paper"), default="small",
                   help="small: the demo grid's CPU recipe; paper: the paper's defaults, anchors scaled to the image")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra TrainConfig override")
    p.add_argument("--workdir", type=Path, default=Path("data/ablation"))
    p.add_argument("--cache", type=Path, default=None, help="generated/preprocessed datasets (default WORKDIR/data)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (0 = torch's default)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--markdown", type=Path, default=None)
    p.add_argument("--probe-train", action="store_true", help="also score the train split (is the rule learned?)")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    variants = a.variants.split(",")
    jobs = []
    for data_seed in (int(s) for s in a.data_seeds.split(",")):
        data = prepare(a.cache or a.workdir / "data", a.studies, data_seed, a.image_size, a.source_size)
        for variant in variants:
            for seed in (int(s) for s in a.seeds.split(",")):
                jobs.append({"variant": variant, "seed": seed, "data_seed": data_seed, "data": str(data),
                             "probe_train": a.probe_train, "threads": a.threads,
                             "out": str(a.workdir / f"d{data_seed}" / "runs" / f"{variant}-s{seed}"),
                             "overrides": [*recipe(a.recipe, a.image_size), *([f"train.epochs={a.epochs}"] if a.epochs else []),
                                           *variant_overrides(variant), *a.overrides]})
    t0 = time.perf_counter()
    rows = []
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        for row in pool.map(run_one, jobs):
            log.info("%s", {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
            rows.append(row)
    md = table(rows, variants)
    print(md)
    print(f"{len(rows)} runs in {time.perf_counter() - t0:.0f} s ({a.jobs} at a time)")
    if a.markdown:
        a.markdown.write_text(md + "\n")
    if a.json:
        a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
