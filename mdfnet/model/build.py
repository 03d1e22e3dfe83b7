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
from dataclasses import dataclass

from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import AnchorGenerator, RegionProposalNetwork, RPNHead

from mdfnet.data.schema import CLASSES
from mdfnet.model.backbones import build_backbone
from mdfnet.model.clinical import ClinicalEncoder, NoClinical, Spatialiser, num_doublings
from mdfnet.model.config import ModelConfig
from mdfnet.model.detector import FEATURE_KEY, FixedSizeTransform, FusedFeatures, ImageFeatures, MDFNet
from mdfnet.model.fusion import build_fusion
from mdfnet.model.heads import ClinicalRoIPool, ClinicalTwoMLPHead
from mdfnet.model.roi_align import SingleMapRoIAlign

log = logging.getLogger(__name__)

NUM_CLASSES = len(CLASSES) + 1  # + background
ROI_SIZE = 7
MASK_ROI_SIZE = 14


@dataclass(frozen=True)
class VariantSpec:
    """Which fusions a variant uses."""

    fusion_3d: bool
    fusion_1d: bool

    @property
    def uses_clinical(self) -> bool:
        return self.fusion_3d or self.fusion_1d


VARIANTS: dict[str, VariantSpec] = {
    "baseline": VariantSpec(fusion_3d=False, fusion_1d=False),
    "msf3d": VariantSpec(fusion_3d=True, fusion_1d=False),
    "msf1d": VariantSpec(fusion_3d=False, fusion_1d=True),
    "mdf": VariantSpec(fusion_3d=True, fusion_1d=True),
}


def build_model(cfg: ModelConfig, num_numeric: int, num_categorical: int, image_size: int) -> MDFNet:
    """Build the variant ``cfg.variant`` for images ``image_size × image_size`` and the given clinical features.

    ``num_numeric``/``num_categorical``: how many numeric / categorical (gender) features the data provide
    (``len(ds.numeric_features)``, ``len(ds.categorical_features)``). Fusion variants refuse to build without
    any clinical feature (the feature set "none" is the baseline).
    """
    cfg.validate()
    spec = VARIANTS.get(cfg.variant)
    if spec is None:
        raise ValueError(f"unknown model variant {cfg.variant!r}; expected one of {sorted(VARIANTS)}")
    num_doublings(image_size)  # validates: power of two

    encoder: nn.Module = (
        ClinicalEncoder(num_numeric, num_categorical, cfg.gender_embedding_dim) if spec.uses_clinical else NoClinical()
    )
    if spec.uses_clinical and encoder.out_dim == 0:
        raise ValueError(
            f"variant {cfg.variant!r} fuses clinical data but no clinical feature was selected "
            "(data.features is empty); select features or use model.variant=baseline"
        )

    image_backbone = build_backbone(cfg.backbone, cfg.out_channels, cfg.weights_path, cfg.backbone_stride)
    if spec.fusion_3d:
        features: nn.Module = FusedFeatures(
            image_backbone,
            Spatialiser(encoder.out_dim, image_size, 3, cfg.spatialiser_width, cfg.spatialiser_min_width),
            build_backbone(cfg.clinical_backbone_name, cfg.out_channels, cfg.clinical_weights_path,
                           cfg.backbone_stride),
            build_fusion(cfg.fusion, cfg.out_channels),
        )
    else:
        features = ImageFeatures(image_backbone)

    channels = cfg.out_channels
    if min(cfg.anchor_sizes) * 4 > image_size:
        # anchors are in cached-image pixels: the paper's 32..512 suit 512 px; at 64 px they cover the whole
        # image and the detector learns next to nothing (measured: val AP 0.01 vs 0.12 with 8..64)
        log.warning("model.anchor_sizes=%s are large for %d px images (smallest anchor > 1/4 of the image); "
                    "scale them with the image, e.g. model.anchor_sizes=%s", list(cfg.anchor_sizes), image_size,
                    [max(1, round(a * image_size / 512)) for a in cfg.anchor_sizes])
    anchors = AnchorGenerator(sizes=(tuple(cfg.anchor_sizes),), aspect_ratios=(tuple(cfg.aspect_ratios),))
    rpn = RegionProposalNetwork(
        anchors,
        RPNHead(channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_top_n={"training": cfg.rpn_pre_nms_top_n_train, "testing": cfg.rpn_pre_nms_top_n_test},
        post_nms_top_n={"training": cfg.rpn_post_nms_top_n_train, "testing": cfg.rpn_post_nms_top_n_test},
        nms_thresh=cfg.rpn_nms_thresh,
    )

    roi_align = SingleMapRoIAlign(FEATURE_KEY, output_size=ROI_SIZE, sampling_ratio=2)
    pooled = channels * ROI_SIZE * ROI_SIZE
    if spec.fusion_1d:
        box_roi_pool: nn.Module = ClinicalRoIPool(roi_align)
        box_head: nn.Module = ClinicalTwoMLPHead(pooled, encoder.out_dim, cfg.representation_size)
    else:
        box_roi_pool, box_head = roi_align, TwoMLPHead(pooled, cfg.representation_size)

    mask_parts: dict[str, nn.Module] = {}
    if cfg.use_mask:
        mask_parts = dict(
            mask_roi_pool=SingleMapRoIAlign(FEATURE_KEY, output_size=MASK_ROI_SIZE, sampling_ratio=2),
            mask_head=MaskRCNNHeads(channels, (cfg.mask_head_channels,) * 4, 1),
            mask_predictor=MaskRCNNPredictor(cfg.mask_head_channels, cfg.mask_head_channels, NUM_CLASSES),
        )

    roi_heads = RoIHeads(
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
    transform = FixedSizeTransform(image_size, list(cfg.image_mean), list(cfg.image_std))
    return MDFNet(transform, encoder, features, rpn, roi_heads)
