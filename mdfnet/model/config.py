"""``ModelConfig``: the typed description from which :func:`mdfnet.model.build_model` builds a network.

Defaults are the paper's (MDF-Net, element-wise sum fusion, MobileNetV3 feature extractor projected to 64
channels, RPN NMS 0.3, box NMS 0.2, 10 detections per image, score threshold 0.05). Every key can be set
from YAML or with ``--set model.<key>=<value>``. Torch-free: names are checked against
:mod:`mdfnet.model.catalog`, so configs validate without importing torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mdfnet.config import ConfigError
from mdfnet.model.catalog import BACKBONE_NAMES, BACKBONE_STRIDES, CLINICAL_MAPS, FUSION_NAMES, NO_FUSION, VARIANTS


@dataclass
class ModelConfig:
    """Keys of the ``model`` config section.

    - ``variant``: ``baseline`` (image only), ``msf3d`` (3D fusion before the RPN), ``msf1d`` (clinical vector
      concatenated into the box head), ``mdf`` (both).
    - ``fusion``: 3D fusion op (used by ``msf3d`` and ``mdf``); ``none`` for the variants without 3D fusion —
      :meth:`resolved` sets it, so their runs do not claim a fusion they do not use.
    - ``backbone`` / ``clinical_backbone``: names in :data:`mdfnet.model.backbones.BACKBONES`; the clinical
      backbone defaults to the image backbone's architecture (separate weights).
    - ``weights_path`` / ``clinical_weights_path``: optional local torchvision classifier ``state_dict`` files
      (nothing is downloaded; default random init).
    - ``backbone_stride``: output stride of both backbones, 8, 16 or 32 (paper: 32, a 16×16 map at 512 px).
      Scales the paper's geometry down to small images: at 64 px, stride 32 leaves a 2×2 map (48 anchors, most
      small lesions never proposed); stride 8 gives 8×8 (the paper's 16×16 at 128 px).
    - ``out_channels``: channels of the single feature map (paper: 64; 16×16 at 512 px).
    - ``use_mask``: add the Mask R-CNN mask branch (targets' masks are the filled boxes); off = 4 losses.
    - ``gender_embedding_dim``: size of the gender embedding (paper: 55, so 55 + 9 numeric = 64).
    - ``spatialiser_width`` / ``spatialiser_min_width``: channels of spatialiser block ``i`` are
      ``max(min_width, width // 2**i)``; the last block outputs 3 channels.
    - ``representation_size``: width of the box head's fc6/fc7 (paper: 64).
    - ``rpn_pre/post_nms_top_n_train/test``: proposals kept per image before / after the RPN's NMS
      (torchvision's ``RegionProposalNetwork`` arguments).
    - ``clinical_map``: what 3D fusion receives from the clinical backbone (:data:`~mdfnet.model.catalog.CLINICAL_MAPS`):
      ``full`` (the paper), ``mean`` (spatially constant) or ``mean_norm`` (spatially constant, standardised across
      studies, times a learnable gain initialised to ``clinical_gain_init``). Ours, for MSF-Net 3D at small scale:
      with ``full`` the box head never learned the look-alike rule (README, "MSF-Net 3D"); ``none`` for the
      variants without 3D fusion (:meth:`resolved`).
    - ``clinical_lr_scale``: learning-rate multiplier of the clinical branch
      (:meth:`~mdfnet.model.detector.MDFNet.clinical_branch_parameters`); 1 = the paper's single learning rate.
    - ``box_batch_size_per_image`` / ``box_positive_fraction``: RoIs sampled per image for the box head's loss and
      their positive share (torchvision's ``RoIHeads``: 512 / 0.25). Small images with few lesions learn faster
      with fewer (32): each ground-truth box yields few positive RoIs, drowned among 512.
    """

    variant: str = "mdf"
    fusion: str = "sum"
    backbone: str = "mobilenet_v3_small"
    clinical_backbone: str | None = None
    weights_path: str | None = None
    clinical_weights_path: str | None = None
    backbone_stride: int = 32
    out_channels: int = 64
    use_mask: bool = True
    gender_embedding_dim: int = 55
    spatialiser_width: int = 64
    spatialiser_min_width: int = 8
    representation_size: int = 64
    mask_head_channels: int = 256
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_nms_thresh: float = 0.3
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    box_nms_thresh: float = 0.2
    box_score_thresh: float = 0.05
    box_detections_per_img: int = 10
    clinical_map: str = "full"
    clinical_gain_init: float = 0.2
    clinical_lr_scale: float = 1.0
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def validate(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"model.variant: value {self.variant!r} is not one of {list(VARIANTS)}")
        fusions = list(FUSION_NAMES) if VARIANTS[self.variant].fusion_3d else [*FUSION_NAMES, NO_FUSION]
        if self.fusion not in fusions:
            raise ConfigError(f"model.fusion: value {self.fusion!r} is not one of {fusions} "
                              f"(for model.variant={self.variant!r})")
        for key in ("backbone", "clinical_backbone"):
            name = getattr(self, key)
            if name is not None and name not in BACKBONE_NAMES:
                raise ConfigError(f"model.{key}: unknown backbone {name!r}; expected one of {sorted(BACKBONE_NAMES)}")
        if self.backbone_stride not in BACKBONE_STRIDES:
            raise ConfigError(f"model.backbone_stride: expected one of {list(BACKBONE_STRIDES)}, "
                              f"got {self.backbone_stride!r}")
        for key in ("out_channels", "gender_embedding_dim", "spatialiser_width", "spatialiser_min_width",
                    "representation_size", "mask_head_channels", "box_detections_per_img",
                    "box_batch_size_per_image", "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train",
                    "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key}: expected a positive integer, got {getattr(self, key)!r}")
        for key in ("rpn_nms_thresh", "box_nms_thresh", "box_score_thresh", "box_positive_fraction"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"model.{key}: expected a value in [0, 1], got {getattr(self, key)!r}")
        maps = list(CLINICAL_MAPS) if VARIANTS[self.variant].fusion_3d else [*CLINICAL_MAPS, NO_FUSION]
        if self.clinical_map not in maps:
            raise ConfigError(f"model.clinical_map: value {self.clinical_map!r} is not one of {maps} "
                              f"(for model.variant={self.variant!r})")
        for key in ("clinical_gain_init", "clinical_lr_scale"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"model.{key}: expected a positive number, got {getattr(self, key)!r}")
        if not self.anchor_sizes or not self.aspect_ratios:
            raise ConfigError("model.anchor_sizes and model.aspect_ratios must be non-empty")

    def resolved(self) -> ModelConfig:
        """This config with ``fusion`` and ``clinical_map`` set to ``none`` when the variant has no 3D fusion (the
        values it records)."""
        if VARIANTS[self.variant].fusion_3d:
            return self
        return dataclasses.replace(self, fusion=NO_FUSION, clinical_map=NO_FUSION)

    @property
    def clinical_backbone_name(self) -> str:
        return self.clinical_backbone or self.backbone
