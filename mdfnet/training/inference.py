"""Inference: predictions of a model over a dataset split, and its validation AP/AR at IoBB 0.5."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mdfnet.data import MDFDataset, collate_detection
from mdfnet.training.config import TrainConfig


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int = 4, device: str | torch.device | None = None,
            keep_masks: bool = False, num_workers: int = 0,
            autocast_dtype: torch.dtype | None = None) -> list[dict[str, torch.Tensor]]:
    """Run ``model`` in eval mode over ``dataset`` in order; returns CPU outputs ``{"boxes","labels","scores"}``
    (plus ``"masks"`` if ``keep_masks``). Only images and clinical data reach the model, never targets."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_detection,
                        num_workers=num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(0))
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


@dataclass
class SplitScore:
    """A model scored on one split: the dataset, COCO ground truth and detections, the IoBB AP/AR result and the
    look-alike pair's confusion."""

    dataset: MDFDataset
    gt: dict[str, Any]
    dets: list[dict[str, Any]]
    result: Any  # mdfnet.evaluation.EvalResult
    pair: Any  # mdfnet.evaluation.PairResult

    def metrics(self, prefix: str) -> dict[str, float]:
        """``<prefix>/ap``, per-class AP/AR and the pair's ``lookalike_bacc`` / ``lookalike_missed``."""
        return {**self.result.metrics(prefix), **self.pair.metrics(prefix)}

    def sweep(self):
        """AP/AR over IoBB thresholds with the same overlap, detection limit and score threshold as ``result``."""
        from mdfnet.evaluation import sweep

        r = self.result
        return sweep(self.gt, self.dets, overlap=r.overlap, max_dets=r.max_dets, score_threshold=r.score_threshold)


def score_split(model: nn.Module, cfg: TrainConfig, data_dir: str | Path, split: str,
                batch_size: int = 4) -> SplitScore:
    """The evaluation recipe, in one place (the evaluate step, the ablation): predict ``split`` with the run's
    features and clinical control, then IoBB AP/AR at 0.5 and the look-alike pair, with the model's detection
    limit and score threshold."""
    from mdfnet.evaluation import dataset_to_coco, evaluate, outputs_to_coco, pair_confusion

    ds = MDFDataset(data_dir, split, features=cfg.data.features, with_masks=False,
                    shuffle_clinical=cfg.data.shuffle_clinical)
    gt = dataset_to_coco(ds, description=f"{data_dir} split {split}")
    dets = outputs_to_coco(predict(model, ds, batch_size=batch_size), [i + 1 for i in range(len(ds))])
    result = evaluate(gt, dets, overlap="iobb", thresholds=(0.5,), max_dets=cfg.model.box_detections_per_img,
                      score_threshold=cfg.model.box_score_thresh)
    return SplitScore(ds, gt, dets, result, pair_confusion(gt, dets, score_threshold=cfg.model.box_score_thresh))
