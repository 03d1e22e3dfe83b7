"""Detection evaluation: COCO AP/AR with IoBB (MDF-Net's metric) or IoU, sweeps, bootstrap, converters, plots,
and the look-alike pair's confusion (:func:`pair_confusion`).

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
    resample_images,
    sweep,
)
from mdfnet.evaluation.overlap import OVERLAPS, box_iobb, box_iou
from mdfnet.evaluation.pairs import LOOKALIKE_PAIR, PairResult, pair_confusion

_PLOTS = ("plot_counts", "plot_pr_curves", "plot_sweep", "save_plots")

__all__ = [
    "DEFAULT_SWEEP",
    "OVERLAPS",
    "REC_THRS",
    "BootstrapResult",
    "EvalResult",
    "EvaluationError",
    "GroundTruth",
    "LOOKALIKE_PAIR",
    "PairResult",
    "bootstrap",
    "box_iobb",
    "box_iou",
    "coco_to_outputs",
    "dataset_to_coco",
    "evaluate",
    "load_json",
    "outputs_to_coco",
    "pair_confusion",
    "parse_detections",
    "parse_ground_truth",
    "resample_images",
    "sweep",
    *_PLOTS,
]


def __getattr__(name: str):
    if name in _PLOTS:
        from mdfnet.evaluation import plots

        return getattr(plots, name)
    raise AttributeError(f"module 'mdfnet.evaluation' has no attribute {name!r}")
