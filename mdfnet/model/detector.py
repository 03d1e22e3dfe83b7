"""The MDF-Net detector: torchvision's R-CNN parts composed with a clinical pathway.

Data flow of :class:`MDFNet` (``B`` images of ``S×S``, clinical vector of size ``D``, ``C`` feature channels):

1. ``transform`` (:class:`FixedSizeTransform`, a small subclass of torchvision's
   ``GeneralizedRCNNTransform``): uint8 ``[1, S, S]`` → float, ImageNet normalisation and expansion to 3
   channels on the model's device, and batching to ``[B, 3, S, S]``; cached images are already square ``S×S``,
   so it checks the size instead of resizing.
2. ``clinical_encoder``: clinical dict → ``C`` ``[B, D]`` (``D = 0`` for the baseline), computed once per image.
3. ``features``: the feature stage, ``(images [B,3,S,S], C [B,D])`` → ``[B, C, h, w]``: either
   :class:`ImageFeatures` (image backbone only) or :class:`FusedFeatures` (image backbone ⊕ clinical backbone
   on the spatialised ``C``, combined by a 3D fusion op).
4. ``rpn``: torchvision ``RegionProposalNetwork`` on ``{"0": map}``.
5. ``roi_heads``: torchvision ``RoIHeads`` on ``{"0": map, "clinical": C}``; for 1D fusion its box RoI pool
   and box head are :class:`~mdfnet.model.heads.ClinicalRoIPool` / ``ClinicalTwoMLPHead`` (see
   :mod:`mdfnet.model.heads`), otherwise torchvision's own, which ignore the ``"clinical"`` entry.

Which variant a model is depends only on which modules the builder (:mod:`mdfnet.model.build`) put in;
``forward`` has no variant flags. In eval mode the model takes images + clinical data only: passing targets
raises, so no ground truth can reach inference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from mdfnet.model.heads import CLINICAL_KEY

FEATURE_KEY = "0"


class FixedSizeTransform(GeneralizedRCNNTransform):
    """``GeneralizedRCNNTransform`` for images that are already ``image_size × image_size``: convert, normalise
    and batch, never resize (no padding either: ``size_divisible=1``); a differently sized image raises.

    Accepted images (each converted once, on the device it is on: the model's):

    - uint8 ``[1, S, S]``, the cached grayscale (:class:`mdfnet.data.MDFDataset`, the serving decoder): ÷ 255;
    - float32 ``[1, S, S]`` or ``[3, S, S]`` in [0, 1] (the range is not checked).

    Output of :meth:`normalize`: float32 ``[3, S, S]``, ``(x - image_mean[c]) / image_std[c]`` per channel ``c``;
    a 1-channel image is broadcast to 3 channels, which gives the values of the grayscale repeated on 3 channels
    and then normalised. Any other dtype or channel count raises ValueError naming it.
    """

    def __init__(self, image_size: int, image_mean: list[float], image_std: list[float]) -> None:
        super().__init__(min_size=image_size, max_size=image_size, image_mean=list(image_mean),
                         image_std=list(image_std), size_divisible=1)
        self.image_size = image_size
        # [3, 1, 1] on the model's device (follow .to(device)); not in the state dict, which holds weights only
        self.register_buffer("_mean", torch.tensor(self.image_mean, dtype=torch.float32)[:, None, None],
                             persistent=False)
        self.register_buffer("_std", torch.tensor(self.image_std, dtype=torch.float32)[:, None, None],
                             persistent=False)

    def check_image(self, image: torch.Tensor) -> None:
        """Raise ValueError unless ``image`` is uint8 ``[1, H, W]`` or float32 ``[1|3, H, W]`` (size: ``resize``)."""
        ok_channels = (1,) if image.dtype == torch.uint8 else (1, 3)
        if image.dtype not in (torch.uint8, torch.float32) or image.dim() != 3 or image.shape[0] not in ok_channels:
            s = self.image_size
            raise ValueError(
                f"image of dtype {image.dtype} and shape {tuple(image.shape)}, expected uint8 [1, {s}, {s}] "
                f"(grayscale 0..255) or float32 [1 or 3, {s}, {s}] in [0, 1]"
            )

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 ``[1, S, S]`` or float32 ``[1|3, S, S]`` → normalised float32 ``[3, S, S]`` (class docstring)."""
        self.check_image(image)
        if image.dtype == torch.uint8:
            image = image.to(torch.float32).div_(255.0)
        mean, std = self._mean.to(image.device), self._std.to(image.device)  # no-ops once the model is there
        return (image - mean).div_(std)

    def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None):
        if tuple(image.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"image of size {tuple(image.shape[-2:])}, expected {(self.image_size, self.image_size)} "
                "(the model is built for the preprocessed image size)"
            )
        return image, target


class ImageFeatures(nn.Module):
    """Image-only feature stage: ``(images [B,3,S,S], clinical [B,D])`` → ``image_backbone(images)``."""

    def __init__(self, image_backbone: nn.Module) -> None:
        super().__init__()
        self.image_backbone = image_backbone
        self.out_channels = image_backbone.out_channels

    def forward(self, images: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:
        return self.image_backbone(images)


class FusedFeatures(nn.Module):
    """3D fusion stage: ``fusion(image_backbone(images), clinical_map(clinical_backbone(spatialiser(clinical))))``
    (``clinical_map``: identity, the paper's, or an op of ``model.clinical_map``: :mod:`mdfnet.model.clinical`).

    ``images [B,3,S,S]``, ``clinical [B,D]`` → spatialised ``[B,3,S,S]`` → both backbones ``[B,C,h,w]`` →
    fused ``[B,C,h,w]``.
    """

    def __init__(self, image_backbone: nn.Module, spatialiser: nn.Module, clinical_backbone: nn.Module,
                 fusion: nn.Module, clinical_map: nn.Module | None = None) -> None:
        super().__init__()
        if image_backbone.out_channels != clinical_backbone.out_channels:
            raise ValueError(
                f"image backbone has {image_backbone.out_channels} channels, clinical backbone "
                f"{clinical_backbone.out_channels}: they must match for 3D fusion"
            )
        self.image_backbone = image_backbone
        self.spatialiser = spatialiser
        self.clinical_backbone = clinical_backbone
        self.fusion = fusion
        self.clinical_map = clinical_map if clinical_map is not None else nn.Identity()
        self.out_channels = image_backbone.out_channels

    def forward(self, images: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:
        clinical_map = self.clinical_map(self.clinical_backbone(self.spatialiser(clinical)))
        return self.fusion(self.image_backbone(images), clinical_map)


def check_targets(targets: list[dict[str, torch.Tensor]], batch_size: int) -> None:
    """Raise ValueError naming the bad target: count, boxes shape ``[N, 4]``, degenerate boxes, labels ``[N]``."""
    if len(targets) != batch_size:
        raise ValueError(f"{len(targets)} targets for {batch_size} images")
    for i, t in enumerate(targets):
        boxes, labels = t.get("boxes"), t.get("labels")
        if boxes is None or labels is None:
            raise ValueError(f"target {i} needs 'boxes' and 'labels', got keys {sorted(t)}")
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"target {i}: boxes must have shape [N, 4], got {tuple(boxes.shape)}")
        if labels.shape != boxes.shape[:1]:
            raise ValueError(f"target {i}: {labels.shape[0] if labels.dim() else 0} labels for {boxes.shape[0]} boxes")
        bad = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
        if bad.any():
            j = int(torch.nonzero(bad)[0])
            raise ValueError(f"target {i}: box {boxes[j].tolist()} has non-positive width or height")


class MDFNet(nn.Module):
    """Mask/Faster R-CNN with a clinical pathway (module docstring).

    ``forward(images: list[[1,S,S] uint8 or [C,S,S] float in [0,1]], clinical: {"numeric": [B,k],
    "categorical": [B,m]} | None, targets: list[dict] | None)``: train mode → dict of losses
    (``loss_objectness``, ``loss_rpn_box_reg``, ``loss_classifier``, ``loss_box_reg`` [, ``loss_mask``]); eval
    mode → list of ``{"boxes": [n,4] xyxy, "labels": [n], "scores": [n] [, "masks": [n,1,S,S]]}``. Images
    (uint8 grayscale as :class:`mdfnet.data.MDFDataset` gives them, or float with C = 1 or 3) are converted by
    ``transform`` (:class:`FixedSizeTransform`) on the device they are on.
    """

    def __init__(self, transform: FixedSizeTransform, clinical_encoder: nn.Module, features: nn.Module,
                 rpn: RegionProposalNetwork, roi_heads: RoIHeads) -> None:
        super().__init__()
        self.transform = transform
        self.clinical_encoder = clinical_encoder
        self.features = features
        self.rpn = rpn
        self.roi_heads = roi_heads

    def forward(self, images: list[torch.Tensor], clinical: Mapping[str, torch.Tensor] | None = None,
                targets: list[dict[str, torch.Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        if not self.training and targets is not None:
            raise ValueError("targets must not be passed in eval mode: inference sees images and clinical data only")
        if targets is not None:
            check_targets(targets, len(images))
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, targets, clinical_vector, feature_map = self._feature_stage(images, clinical, targets)
        proposals, rpn_losses = self.rpn(image_list, {FEATURE_KEY: feature_map}, targets)
        roi_inputs = {FEATURE_KEY: feature_map, CLINICAL_KEY: clinical_vector}
        detections, roi_losses = self.roi_heads(roi_inputs, proposals, image_list.image_sizes, targets)
        if self.training:
            return {**rpn_losses, **roi_losses}
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)

    def _feature_stage(self, images: list[torch.Tensor], clinical: Mapping[str, torch.Tensor] | None,
                       targets: list[dict[str, torch.Tensor]] | None):
        """Steps 1-3 of the module docstring: ``(image_list, targets, C [B, D], feature map [B, C, h, w])``."""
        image_list, targets = self.transform(images, targets)
        clinical_vector = self.clinical_encoder(clinical, len(images))  # [B, D]
        return image_list, targets, clinical_vector, self.features(image_list.tensors, clinical_vector)

    def clinical_branch_parameters(self) -> list[nn.Parameter]:
        """The clinical pathway's own parameters before the RoI heads: the encoder's embeddings and, for 3D fusion,
        the spatialiser, the clinical backbone, the ``clinical_map`` op and the fusion op (``model.clinical_lr_scale`` scales their
        learning rate). Empty for the baseline; the 1D head's fc6 is not included."""
        parts: list[nn.Module] = [self.clinical_encoder]
        if isinstance(self.features, FusedFeatures):
            f = self.features
            parts += [f.spatialiser, f.clinical_backbone, f.clinical_map, f.fusion]
        return [p for m in parts for p in m.parameters()]

    def parameter_groups(self, lr: float, clinical_lr_scale: float = 1.0) -> list[dict[str, Any]]:
        """The trainable parameters as optimiser groups: one, or two when ``clinical_lr_scale`` != 1 and the model
        has a clinical branch (:meth:`clinical_branch_parameters`, at ``lr · clinical_lr_scale``; the other group
        takes the optimiser's ``lr``). One group at scale 1 keeps the optimiser state of earlier checkpoints valid."""
        params = [p for p in self.parameters() if p.requires_grad]
        clinical = {id(p) for p in self.clinical_branch_parameters()}
        if clinical_lr_scale == 1.0 or not clinical:
            return [{"params": params}]
        return [{"params": [p for p in params if id(p) not in clinical]},
                {"params": [p for p in params if id(p) in clinical], "lr": lr * clinical_lr_scale}]

    def classify_boxes(self, images: list[torch.Tensor], clinical: Mapping[str, torch.Tensor] | None,
                       boxes: list[torch.Tensor]) -> torch.Tensor:
        """Class logits ``[R, num_classes]`` (background first) of the box head for given boxes, skipping the RPN.

        ``boxes``: one ``[N_b, 4]`` xyxy tensor per image in image pixels, ``R = Σ_b N_b`` in that order. A probe of
        the classification branch alone (e.g. on ground-truth boxes: does the clinical vector decide between two
        look-alike classes?); call it under ``torch.no_grad()`` in eval mode for stable BatchNorm statistics.
        """
        if len(boxes) != len(images):
            raise ValueError(f"{len(boxes)} box tensors for {len(images)} images")
        image_list, _, clinical_vector, feature_map = self._feature_stage(images, clinical, None)
        heads = self.roi_heads
        pooled = heads.box_roi_pool({FEATURE_KEY: feature_map, CLINICAL_KEY: clinical_vector}, list(boxes),
                                    image_list.image_sizes)
        logits, _ = heads.box_predictor(heads.box_head(pooled))
        return logits
