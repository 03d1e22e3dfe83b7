"""One builder for the model family: ``build_model(ModelConfig, num_numeric, num_categorical, image_size)``.

A variant is a choice of modules (:data:`VARIANTS`):

=========  =========================================  ========================================
variant    feature stage (before the RPN)             box head
=========  =========================================  ========================================
baseline   image backbone                             TwoMLPHead (torchvision)
msf3d      image ⊕ clinical backbone(spatialise(C))   TwoMLPHead
msf1d      image backbone                             ClinicalTwoMLPHead (RoI features ‖ C)
mdf        image ⊕ clinical backbone(spatialise(C))   ClinicalTwoMLPHead
=========  =========================================  ========================================

Both backbones are cut at ``cfg.backbone_stride`` (:mod:`mdfnet.model.backbones`). The rest is torchvision's:
``AnchorGenerator`` (sizes 32..512, ratios 0.5/1/2 on the single map),
``RegionProposalNetwork``/``RPNHead``, ``RoIHeads`` with RoIAlign 7×7, sampling ratio 2 (14×14 for masks;
:class:`~mdfnet.model.roi_align.SingleMapRoIAlign`: torchvision's values, a faster CPU backward),
``FastRCNNPredictor``, ``MaskRCNNHeads``/``MaskRCNNPredictor`` when ``use_mask``.
"""

from __future__ import annotations

import logging

from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import AnchorGenerator, RegionProposalNetwork, RPNHead

from mdfnet.data.schema import CLASSES
from mdfnet.model.backbones import build_backbone
from mdfnet.model.catalog import VARIANTS, VariantSpec
from mdfnet.model.clinical import (
    ClinicalEncoder,
    NoClinical,
    Spatialiser,
    SpatialMean,
    SpatialMeanNorm,
    num_doublings,
)
from mdfnet.model.config import ModelConfig
from mdfnet.model.detector import FEATURE_KEY, FixedSizeTransform, FusedFeatures, ImageFeatures, MDFNet
from mdfnet.model.fusion import build_fusion
from mdfnet.model.heads import ClinicalRoIPool, ClinicalTwoMLPHead
from mdfnet.model.roi_align import SingleMapRoIAlign

log = logging.getLogger(__name__)

NUM_CLASSES = len(CLASSES) + 1  # + background
ROI_SIZE = 7
MASK_ROI_SIZE = 14


def build_model(cfg: ModelConfig, num_numeric: int, num_categorical: int, image_size: int) -> MDFNet:
    """Build the variant ``cfg.variant`` for images ``image_size × image_size`` and the given clinical features.

    ``num_numeric``/``num_categorical``: how many numeric / categorical (gender) features the data provide
    (``len(ds.numeric_features)``, ``len(ds.categorical_features)``). Fusion variants refuse to build without
    any clinical feature (the feature set "none" is the baseline). The parts are made in a fixed order (encoder,
    feature stage, RPN, RoI heads), so one torch seed gives one initialisation.
    """
    cfg.validate()
    spec = VARIANTS[cfg.variant]
    num_doublings(image_size)  # validates: power of two
    encoder: nn.Module = (
        ClinicalEncoder(num_numeric, num_categorical, cfg.gender_embedding_dim) if spec.uses_clinical else NoClinical()
    )
    if spec.uses_clinical and encoder.out_dim == 0:
        raise ValueError(
            f"variant {cfg.variant!r} fuses clinical data but no clinical feature was selected "
            "(data.features is empty); select features or use model.variant=baseline"
        )
    features = _feature_stage(cfg, spec, encoder.out_dim, image_size)
    rpn = _rpn(cfg, image_size)
    roi_heads = _roi_heads(cfg, spec, encoder.out_dim)
    transform = FixedSizeTransform(image_size, list(cfg.image_mean), list(cfg.image_std))
    return MDFNet(transform, encoder, features, rpn, roi_heads)


def _feature_stage(cfg: ModelConfig, spec: VariantSpec, clinical_dim: int, image_size: int) -> nn.Module:
    """Image backbone alone, or image ⊕ clinical backbone(spatialiser(C)) for 3D fusion (both cut at the stride)."""
    image_backbone = build_backbone(cfg.backbone, cfg.out_channels, cfg.weights_path, cfg.backbone_stride)
    if not spec.fusion_3d:
        return ImageFeatures(image_backbone)
    return FusedFeatures(
        image_backbone,
        Spatialiser(clinical_dim, image_size, 3, cfg.spatialiser_width, cfg.spatialiser_min_width),
        build_backbone(cfg.clinical_backbone_name, cfg.out_channels, cfg.clinical_weights_path, cfg.backbone_stride),
        build_fusion(cfg.fusion, cfg.out_channels),
        _clinical_map(cfg),
    )


def _clinical_map(cfg: ModelConfig) -> nn.Module | None:
    """``model.clinical_map`` → the op between the clinical backbone and the fusion (None: ``full``, the paper's)."""
    if cfg.clinical_map == "mean":
        return SpatialMean()
    if cfg.clinical_map == "mean_norm":
        return SpatialMeanNorm(cfg.out_channels, cfg.clinical_gain_init)
    return None


def _rpn(cfg: ModelConfig, image_size: int) -> RegionProposalNetwork:
    """torchvision's RPN on the single map, anchors in cached-image pixels."""
    if min(cfg.anchor_sizes) * 4 > image_size:
        # anchors are in cached-image pixels: the paper's 32..512 suit 512 px; at 64 px they cover the whole
        # image and the detector learns next to nothing (measured: val AP 0.01 vs 0.12 with 8..64)
        log.warning("model.anchor_sizes=%s are large for %d px images (smallest anchor > 1/4 of the image); "
                    "scale them with the image, e.g. model.anchor_sizes=%s", list(cfg.anchor_sizes), image_size,
                    [max(1, round(a * image_size / 512)) for a in cfg.anchor_sizes])
    anchors = AnchorGenerator(sizes=(tuple(cfg.anchor_sizes),), aspect_ratios=(tuple(cfg.aspect_ratios),))
    return RegionProposalNetwork(
        anchors,
        RPNHead(cfg.out_channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_top_n={"training": cfg.rpn_pre_nms_top_n_train, "testing": cfg.rpn_pre_nms_top_n_test},
        post_nms_top_n={"training": cfg.rpn_post_nms_top_n_train, "testing": cfg.rpn_post_nms_top_n_test},
        nms_thresh=cfg.rpn_nms_thresh,
    )


def _roi_heads(cfg: ModelConfig, spec: VariantSpec, clinical_dim: int) -> RoIHeads:
    """torchvision's RoIHeads; for 1D fusion the box pool and head carry the clinical vector of each RoI."""
    roi_align = SingleMapRoIAlign(FEATURE_KEY, output_size=ROI_SIZE, sampling_ratio=2)
    pooled = cfg.out_channels * ROI_SIZE * ROI_SIZE
    if spec.fusion_1d:
        box_roi_pool: nn.Module = ClinicalRoIPool(roi_align)
        box_head: nn.Module = ClinicalTwoMLPHead(pooled, clinical_dim, cfg.representation_size)
    else:
        box_roi_pool, box_head = roi_align, TwoMLPHead(pooled, cfg.representation_size)
    mask_parts: dict[str, nn.Module] = {}
    if cfg.use_mask:
        mask_parts = dict(
            mask_roi_pool=SingleMapRoIAlign(FEATURE_KEY, output_size=MASK_ROI_SIZE, sampling_ratio=2),
            mask_head=MaskRCNNHeads(cfg.out_channels, (cfg.mask_head_channels,) * 4, 1),
            mask_predictor=MaskRCNNPredictor(cfg.mask_head_channels, cfg.mask_head_channels, NUM_CLASSES),
        )
    return RoIHeads(
        box_roi_pool,
        box_head,
        FastRCNNPredictor(cfg.representation_size, NUM_CLASSES),
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=cfg.box_batch_size_per_image,
        positive_fraction=cfg.box_positive_fraction,
        bbox_reg_weights=None,
        score_thresh=cfg.box_score_thresh,
        nms_thresh=cfg.box_nms_thresh,
        detections_per_img=cfg.box_detections_per_img,
        **mask_parts,
    )
