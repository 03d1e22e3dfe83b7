"""Is the model using the clinical data, and which of it? Permutation importance of each clinical feature on AP,
and the AP with every clinical input replaced by the train medians (the evaluate step; ``mdfnet report``).

- **Permutation importance** of feature ``f``: the split's ``f`` column is permuted across studies (a seeded
  permutation of the images; readings of one image keep one value) and the split is scored again; the importance
  is ``AP − AP(permuted)``, repeated ``repeats`` times (mean ± sd). A model that ignores ``f`` scores ≈ 0.
- **Medians control**: every numeric input set to the train median (standardised: ``(median − mean) / std``) and
  gender to "missing" (code 0): the AP a model gets from the image alone through its clinical path.

Scored exactly like the evaluate step (:func:`mdfnet.training.inference.score_split`'s settings), on the clinical
tensors of an :class:`~mdfnet.data.MDFDataset`, so images are decoded once per pass and nothing else changes.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mdfnet.data import MDFDataset
from mdfnet.training.config import TrainConfig

log = logging.getLogger(__name__)


def _score(model: nn.Module, ds: MDFDataset, cfg: TrainConfig, gt: dict, batch_size: int) -> float:
    from mdfnet.evaluation import evaluate, outputs_to_coco
    from mdfnet.training.inference import predict

    dets = outputs_to_coco(predict(model, ds, batch_size=batch_size), [i + 1 for i in range(len(ds))])
    return float(evaluate(gt, dets, overlap="iobb", thresholds=(0.5,), max_dets=cfg.model.box_detections_per_img,
                          score_threshold=cfg.model.box_score_thresh).ap)


def _column(ds: MDFDataset, feature: str) -> tuple[torch.Tensor, int]:
    """The clinical tensor holding ``feature`` and its column."""
    if feature in ds.numeric_features:
        return ds._numeric, ds.numeric_features.index(feature)
    return ds._categorical, ds.categorical_features.index(feature)


def clinical_attribution(model: nn.Module, cfg: TrainConfig, data_dir: str | Path, split: str = "val",
                         repeats: int = 5, seed: int = 0, batch_size: int = 4) -> dict[str, Any]:
    """Permutation importance of each of the model's clinical features and the medians control on ``split``.

    Returns ``{"split", "repeats", "ap", "ap_train_medians", "features": {name: {"importance_mean",
    "importance_sd", "ap_permuted": [...]}}}`` (APs in [0, 1]); ``features`` is empty for a model without clinical
    input."""
    from mdfnet.evaluation import dataset_to_coco

    ds = MDFDataset(data_dir, split, features=cfg.data.features, with_masks=False,
                    shuffle_clinical=cfg.data.shuffle_clinical)
    gt = dataset_to_coco(ds)
    base = _score(model, ds, cfg, gt, batch_size)
    out: dict[str, Any] = {"split": split, "repeats": repeats, "ap": base, "features": {}}
    numeric, categorical = ds._numeric.clone(), ds._categorical.clone()
    keys, first, codes = np.unique(ds.instances["dicom_id"].astype(str).to_numpy(), return_index=True,
                                   return_inverse=True)  # first row of each image, image of each row
    rng = np.random.default_rng(seed)
    for feature in ds.features:
        tensor, col = _column(ds, feature)
        original = tensor[:, col].clone()
        aps = []
        for _ in range(repeats):
            donor = first[rng.permutation(len(keys))][codes]  # each image takes another image's value
            tensor[:, col] = original[torch.from_numpy(donor)]
            aps.append(_score(model, ds, cfg, gt, batch_size))
        tensor[:, col] = original
        drops = [base - a for a in aps]
        out["features"][feature] = {"importance_mean": statistics.fmean(drops) if drops else float("nan"),
                                    "importance_sd": statistics.stdev(drops) if len(drops) > 1 else 0.0,
                                    "ap_permuted": aps}
        log.info("attribution %s: AP %.4f → %.4f (mean of %d)", feature, base, statistics.fmean(aps) if aps
                 else float("nan"), repeats)
    if ds.features:
        ds._numeric[:] = torch.tensor([(ds.transform.median[f] - ds.transform.mean[f]) / ds.transform.std[f]
                                       for f in ds.numeric_features], dtype=torch.float32)
        ds._categorical[:] = 0
        out["ap_train_medians"] = _score(model, ds, cfg, gt, batch_size)
        ds._numeric, ds._categorical = numeric, categorical
    else:
        out["ap_train_medians"] = base
    return out
