"""Stand-in detectors for serving tests that need a model with a *known* clinical dependence (a tiny trained model
may not learn the synthetic rule), and a tiny real MDF-Net saved as an MLflow pyfunc model.

:class:`RuleDetector` mirrors the synthetic data's rule (:mod:`mdfnet.data.synthetic`: fever → Consolidation,
tachypnoea / low SpO₂ → Pulmonary edema): every image gets one box (the central half of the image, model pixels,
shifted by its mean grey / 32) and on it two detections, *Consolidation* and *Pulmonary edema*, scored by a softmax over the background and the
five classes whose logits are linear in the standardised clinical inputs ``z`` (:data:`WEIGHTS`). Its
``classify_boxes`` gives the same logits for any box (and records the boxes it was given), so every score change
of :mod:`mdfnet.serving.explain` can be computed by hand (:func:`expected_probability`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from mdfnet.data import schema
from mdfnet.data.preprocess import ClinicalTransform
from mdfnet.serving.predictor import Predictor
from mdfnet.training.config import TrainConfig

IMAGE_SIZE = 32
WEIGHTS: dict[str, dict[str, float]] = {
    "Consolidation": {"temperature": 2.0},
    "Pulmonary edema": {"resprate": 1.5, "o2sat": -1.5},
}
"""Logit of a class = Σ weight · z[feature]; the other classes (and the background) have logit −3 (0)."""
OTHER_LOGIT = -3.0
MEDIAN = {"age": 60.0, "temperature": 98.2, "heartrate": 85.0, "resprate": 18.0, "o2sat": 97.0, "sbp": 130.0,
          "dbp": 75.0, "pain": 3.0, "acuity": 3.0}
MEAN = {**MEDIAN, "temperature": 98.6, "resprate": 18.5, "o2sat": 96.0}
STD = {f: 10.0 for f in MEDIAN} | {"temperature": 1.5, "resprate": 3.0, "o2sat": 3.0}
TRANSFORM = ClinicalTransform(MEDIAN, MEAN, STD)
DETECTED = ("Consolidation", "Pulmonary edema")


def logits_of(z: np.ndarray) -> np.ndarray:
    """``z`` ``[B, 9]`` standardised numeric inputs (:data:`schema.NUMERIC_FEATURES` order) → logits ``[B, 6]``."""
    out = np.full((len(z), len(schema.CLASSES) + 1), OTHER_LOGIT)
    out[:, 0] = 0.0
    for name, weights in WEIGHTS.items():
        col = schema.CLASS_TO_ID[name]
        out[:, col] = sum(w * z[:, schema.NUMERIC_FEATURES.index(f)] for f, w in weights.items())
    return out


def expected_probability(values: dict[str, float | None], label: str) -> float:
    """The stand-in's probability of ``label`` for cleaned ``values`` (missing → median), by hand in numpy."""
    z = np.array([[((MEDIAN[f] if values.get(f) is None else values[f]) - MEAN[f]) / STD[f]
                   for f in schema.NUMERIC_FEATURES]])
    e = np.exp(logits_of(z)[0])
    return float(e[schema.CLASS_TO_ID[label]] / e.sum())


class RuleDetector(nn.Module):
    """See the module docstring. ``calls`` counts ``classify_boxes`` calls and their images; ``boxes_seen`` holds
    the boxes it was given; ``emitted`` the boxes ``forward`` returned (model pixels)."""

    def __init__(self, numeric_names: tuple[str, ...] = schema.NUMERIC_FEATURES) -> None:
        super().__init__()
        self.numeric_names = numeric_names  # the model's numeric inputs; the rule reads an absent one as 0
        self.anchor = nn.Parameter(torch.zeros(1))  # a parameter, so the predictor finds the device
        self.calls: list[int] = []
        self.boxes_seen: list[torch.Tensor] = []
        self.emitted: list[torch.Tensor] = []

    def _logits(self, clinical: dict[str, torch.Tensor]) -> torch.Tensor:
        z = np.zeros((len(clinical["numeric"]), len(schema.NUMERIC_FEATURES)))
        for j, name in enumerate(self.numeric_names):
            z[:, schema.NUMERIC_FEATURES.index(name)] = clinical["numeric"][:, j].double().numpy()
        return torch.from_numpy(logits_of(z)).float()

    def forward(self, images: list[torch.Tensor], clinical: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        probs = torch.softmax(self._logits(clinical), dim=-1)
        box = torch.tensor([[IMAGE_SIZE / 4, IMAGE_SIZE / 4, 3 * IMAGE_SIZE / 4, 3 * IMAGE_SIZE / 4]])
        outputs = []
        for i in range(len(images)):
            labels = torch.tensor([schema.CLASS_TO_ID[c] for c in DETECTED])
            shifted = box + float(images[i].float().mean()) / 32  # a box that depends on the image's content
            self.emitted.append(shifted.repeat(2, 1))
            outputs.append({"boxes": shifted.repeat(2, 1), "labels": labels, "scores": probs[i, labels]})
        return outputs

    def classify_boxes(self, images: list[torch.Tensor], clinical: dict[str, torch.Tensor],
                       boxes: list[torch.Tensor]) -> torch.Tensor:
        self.calls.append(len(images))
        self.boxes_seen += [b.clone() for b in boxes]
        logits = self._logits(clinical)
        counts = torch.tensor([len(b) for b in boxes])
        return logits.repeat_interleave(counts, dim=0)


def rule_predictor(variant: str = "mdf", features: list[str] | None = None) -> Predictor:
    """A :class:`Predictor` around a fresh :class:`RuleDetector` (images :data:`IMAGE_SIZE` px)."""
    cfg = TrainConfig()
    cfg.model.variant = variant
    if features is not None:
        cfg.data.features = list(features)
    meta = {"image_size": IMAGE_SIZE, "classes": list(schema.CLASSES),
            "numeric_features": list(schema.NUMERIC_FEATURES),
            "categorical_features": list(schema.CATEGORICAL_FEATURES), "transform": TRANSFORM.to_dict()}
    from mdfnet.data.dataset import select_features

    return Predictor(RuleDetector(select_features(cfg.data.features)[0]).eval(), cfg, meta)


TINY_MDF = ["model.variant=mdf", "model.backbone=mobilenet_v3_small", "model.backbone_stride=8",
            "model.use_mask=false", "model.box_score_thresh=0.0", "model.anchor_sizes=[8,16,32,64]",
            "model.rpn_pre_nms_top_n_test=50", "model.rpn_post_nms_top_n_test=20",
            "model.box_detections_per_img=5"]
"""A tiny MDF-Net (64 px, random init, score threshold 0: every image keeps its 5 detections)."""


def tiny_mdf_predictor(seed: int = 0) -> Predictor:
    """A random-init MDF-Net at 64 px with :data:`TRANSFORM` (no training: explanations are defined for any
    weights; what is tested on it is the plumbing, the rule is tested on :class:`RuleDetector`)."""
    from mdfnet.model import build_model
    from mdfnet.training import config_from_sources

    cfg = config_from_sources(None, TINY_MDF)
    torch.manual_seed(seed)
    model = build_model(cfg.model, len(schema.NUMERIC_FEATURES), len(schema.CATEGORICAL_FEATURES), 64)
    meta = {"image_size": 64, "classes": list(schema.CLASSES), "numeric_features": list(schema.NUMERIC_FEATURES),
            "categorical_features": list(schema.CATEGORICAL_FEATURES), "transform": TRANSFORM.to_dict()}
    return Predictor(model.eval(), cfg, meta)


def save_pyfunc(predictor: Predictor, path: Path) -> Path:
    """``predictor`` as an MLflow pyfunc model folder, exactly as :func:`mdfnet.serving.pyfunc.log_served_model`
    logs it (models-from-code, bundle artefact, signature with params), without a tracking store."""
    import warnings

    import mlflow

    from mdfnet.serving.pyfunc import MODEL_CODE, signature

    bundle = predictor.write_bundle(path.parent / f"{path.name}-bundle")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="An input example was not provided")
        mlflow.pyfunc.save_model(str(path), python_model=str(MODEL_CODE), artifacts={"bundle": str(bundle)},
                                 signature=signature(), pip_requirements=["mdfnet"])
    return path
