"""Detection evaluation: COCO AP/AR with IoBB (MDF-Net's metric) or IoU, sweeps, bootstrap, the paired bootstrap of
an AP difference (:func:`paired_bootstrap`), FROC (:func:`froc`), converters, plots, and the look-alike pair's
confusion (:func:`pair_confusion`).

``evaluate`` is identical to pycocotools' COCOeval configured as the MDF-Net authors ran it (see
:mod:`mdfnet.evaluation.evaluator`), vectorised with numpy. Plots (matplotlib) load on first use.
"""

from __future__ import annotations

from mdfnet.evaluation.accumulate import REC_THRS
from mdfnet.evaluation.coco import EvaluationError, GroundTruth, load_json, parse_detections, parse_ground_truth
from mdfnet.evaluation.convert import coco_to_outputs, dataset_to_coco, outputs_to_coco
from mdfnet.evaluation.evaluator import (
    DEFAULT_SWEEP,
    BootstrapResult,
    EvalResult,
    bootstrap,
    evaluate,
    match_detections,
    percentile_interval,
    replicate_ap,
    resample_images,
    sweep,
)
from mdfnet.evaluation.froc import FP_RATES, FROCResult, froc, froc_metric
from mdfnet.evaluation.overlap import OVERLAPS, box_iobb, box_iou
from mdfnet.evaluation.paired import PairedDelta, Scored, check_same_images, paired_bootstrap
from mdfnet.evaluation.pairs import LOOKALIKE_PAIR, PairResult, pair_confusion

_PLOTS = ("plot_counts", "plot_pr_curves", "plot_sweep", "save_plots")

__all__ = [
    "DEFAULT_SWEEP",
    "FP_RATES",
    "OVERLAPS",
    "REC_THRS",
    "BootstrapResult",
    "EvalResult",
    "EvaluationError",
    "FROCResult",
    "GroundTruth",
    "LOOKALIKE_PAIR",
    "PairResult",
    "PairedDelta",
    "Scored",
    "bootstrap",
    "box_iobb",
    "box_iou",
    "check_same_images",
    "coco_to_outputs",
    "dataset_to_coco",
    "evaluate",
    "froc",
    "froc_metric",
    "load_json",
    "match_detections",
    "outputs_to_coco",
    "pair_confusion",
    "paired_bootstrap",
    "parse_detections",
    "parse_ground_truth",
    "percentile_interval",
    "replicate_ap",
    "resample_images",
    "sweep",
    *_PLOTS,
]


def __getattr__(name: str):
    if name in _PLOTS:
        from mdfnet.evaluation import plots

        return getattr(plots, name)
    raise AttributeError(f"module 'mdfnet.evaluation' has no attribute {name!r}")
