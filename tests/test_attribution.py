"""Clinical attribution (``mdfnet.training.attribution``): a model without a clinical path gets zero importance
and the same AP at the train medians; a model with one is moved by permuting its inputs; the permutations are
seeded and keep one value per image."""

from __future__ import annotations

import pytest
import torch

from mdfnet.training import config_from_sources

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = ["model.backbone=mobilenet_v3_small", "model.backbone_stride=8", "model.use_mask=false",
        "model.anchor_sizes=[8,16,32,64]", "model.box_score_thresh=0.0", "model.box_detections_per_img=20",
        "model.rpn_pre_nms_top_n_test=100", "model.rpn_post_nms_top_n_test=50"]


def _model(variant: str):
    from mdfnet.model import build_model

    torch.manual_seed(0)
    cfg = config_from_sources(None, [*TINY, f"model.variant={variant}"])
    return build_model(cfg.model, 9, 1, 64).eval(), cfg


def test_no_clinical_path_means_no_importance(tiny_preprocessed):
    from mdfnet.training.attribution import clinical_attribution

    model, cfg = _model("baseline")
    att = clinical_attribution(model, cfg, tiny_preprocessed, "val", repeats=2)
    assert set(att["features"]) == {"age", "temperature", "heartrate", "resprate", "o2sat", "sbp", "dbp", "pain",
                                    "acuity", "gender"}
    assert all(v["importance_mean"] == 0.0 and v["importance_sd"] == 0.0 for v in att["features"].values())
    assert att["ap_train_medians"] == att["ap"] and 0 <= att["ap"] <= 1


def test_a_clinical_path_is_moved_by_its_inputs_and_the_run_is_seeded(tiny_preprocessed):
    from mdfnet.training.attribution import clinical_attribution

    model, cfg = _model("mdf")
    first = clinical_attribution(model, cfg, tiny_preprocessed, "val", repeats=2, seed=3)
    again = clinical_attribution(model, cfg, tiny_preprocessed, "val", repeats=2, seed=3)
    assert first == again  # seeded permutations, and the dataset is restored between features
    moved = [f for f, v in first["features"].items() if any(a != first["ap"] for a in v["ap_permuted"])]
    assert moved, first
    assert first["ap_train_medians"] != first["ap"]
