"""Backbones (the table :data:`BACKBONES`): torchvision classifiers cut to a feature extractor of stride 8, 16 or 32 + a 1×1 projection.

Each entry of :data:`BACKBONES` says how to make the torchvision classifier (random init, ``weights=None``), how
to list its trunk as an ordered sequence of stages, and where to cut that sequence for each output stride
(:data:`BACKBONE_STRIDES`): the cut keeps every stage up to the deepest one still at that stride. Stride 32 is
the whole trunk (the paper's feature extractor: 16×16 at 512 px); stride 8 or 16 scales the paper's geometry
down to small images (at 64 px, stride 8 gives an 8×8 map; at 128 px, stride 8 gives the paper's 16×16).
:func:`build_backbone` returns a :class:`FeatureBackbone` mapping ``[B, 3, H, W]`` to one feature map
``[B, out_channels, ceil(H/stride), ceil(W/stride)]`` and exposing ``.out_channels`` as torchvision's detection
heads expect.

=====================  ===================================  =====================================
backbone               stages (cut at stride 8 / 16 / 32)   channels at stride 8 / 16 / 32
=====================  ===================================  =====================================
mobilenet_v3_small     ``features[:4]`` / ``[:9]`` / all     24 / 48 / 576
mobilenet_v3_large     ``features[:7]`` / ``[:13]`` / all    40 / 112 / 960
efficientnet_b0        ``features[:4]`` / ``[:6]`` / all     40 / 112 / 1280
resnet18               … layer2 / layer3 / layer4            128 / 256 / 512
resnet50               … layer2 / layer3 / layer4            512 / 1024 / 2048
densenet121            … denseblock2 / denseblock3 / all     512 / 1024 / 1024
convnext_tiny          ``features[:4]`` / ``[:6]`` / all     192 / 384 / 768
=====================  ===================================  =====================================

Pretrained weights are never downloaded: ``weights_path`` may name a local ``state_dict`` of the whole
torchvision classifier (the files torchvision itself distributes), loaded with ``weights_only=True`` before the
cut. The same builder makes the image backbone and the clinical backbone (separate weights, same stride).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn

from mdfnet.model.catalog import BACKBONE_NAMES, BACKBONE_STRIDES, check_table


@dataclass(frozen=True)
class BackboneSpec:
    """``make(weights=None)`` → torchvision classifier (random init); ``stages(classifier)`` → its trunk as an
    ordered list of modules; ``cuts[stride] = (number of stages kept, channels of the last kept stage)``."""

    make: Callable[..., nn.Module]
    stages: Callable[[nn.Module], list[nn.Module]]
    cuts: dict[int, tuple[int, int]]

    def trunk(self, classifier: nn.Module, stride: int) -> tuple[nn.Sequential, int]:
        """The classifier's trunk cut at output ``stride`` and its channel count."""
        if stride not in self.cuts:
            raise ValueError(f"backbone stride {stride!r} is not supported; expected one of {sorted(self.cuts)}")
        keep, channels = self.cuts[stride]
        return nn.Sequential(*self.stages(classifier)[:keep]), channels


def _features(m: nn.Module) -> list[nn.Module]:
    return list(m.features)


def _densenet_stages(m: nn.Module) -> list[nn.Module]:
    # torchvision's DenseNet applies the final ReLU in forward(), outside ``features``.
    return [*m.features, nn.ReLU(inplace=False)]


def _resnet_stages(m: nn.Module) -> list[nn.Module]:
    return [m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4]


BACKBONES: dict[str, BackboneSpec] = {  # name: (torchvision constructor, its stages, {stride: (stages, channels)})
    "mobilenet_v3_small": BackboneSpec(tvm.mobilenet_v3_small, _features, {8: (4, 24), 16: (9, 48), 32: (13, 576)}),
    "mobilenet_v3_large": BackboneSpec(tvm.mobilenet_v3_large, _features, {8: (7, 40), 16: (13, 112), 32: (17, 960)}),
    "efficientnet_b0": BackboneSpec(tvm.efficientnet_b0, _features, {8: (4, 40), 16: (6, 112), 32: (9, 1280)}),
    "resnet18": BackboneSpec(tvm.resnet18, _resnet_stages, {8: (6, 128), 16: (7, 256), 32: (8, 512)}),
    "resnet50": BackboneSpec(tvm.resnet50, _resnet_stages, {8: (6, 512), 16: (7, 1024), 32: (8, 2048)}),
    "densenet121": BackboneSpec(tvm.densenet121, _densenet_stages, {8: (7, 512), 16: (9, 1024), 32: (13, 1024)}),
    "convnext_tiny": BackboneSpec(tvm.convnext_tiny, _features, {8: (4, 192), 16: (6, 384), 32: (8, 768)}),
}
"""Backbone name → how to build and cut it. To support another torchvision classifier, add an entry here and its
name to :data:`mdfnet.model.catalog.BACKBONE_NAMES`."""
check_table("backbone", BACKBONES, BACKBONE_NAMES)
for _name, _spec in BACKBONES.items():
    check_table(f"backbone {_name!r} stride", (str(s) for s in _spec.cuts), (str(s) for s in BACKBONE_STRIDES))


class FeatureBackbone(nn.Module):
    """``[B, 3, H, W]`` → ``[B, out_channels, H/stride, W/stride]`` (trunk, then a 1×1 convolution to
    ``out_channels``)."""

    def __init__(self, trunk: nn.Module, trunk_channels: int, out_channels: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.proj = nn.Conv2d(trunk_channels, out_channels, kernel_size=1)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.trunk(x))


def build_backbone(name: str, out_channels: int = 64, weights_path: str | Path | None = None,
                   stride: int = 32) -> FeatureBackbone:
    """Build backbone ``name`` from :data:`BACKBONES` cut at output ``stride`` (8, 16 or 32), optionally loading
    a local classifier ``state_dict`` first."""
    spec = BACKBONES.get(name)
    if spec is None:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
    classifier = spec.make(weights=None)
    if weights_path is not None:
        load_classifier_weights(classifier, name, weights_path)
    trunk, channels = spec.trunk(classifier, stride)
    return FeatureBackbone(trunk, channels, out_channels)


def load_classifier_weights(classifier: nn.Module, name: str, weights_path: str | Path) -> None:
    """Load a local torchvision ``state_dict`` into ``classifier``; errors name the file and the mismatch."""
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"weights_path {str(path)!r} for backbone {name!r} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights_path {str(path)!r} holds a {type(state).__name__}, expected a state_dict")
    head = ("fc.", "classifier.")  # the classification head is not used: it may be absent or differ
    trunk_state = {k: v for k, v in state.items() if not k.startswith(head)}
    expected = {k: v for k, v in classifier.state_dict().items() if not k.startswith(head)}
    missing = sorted(set(expected) - set(trunk_state))
    unexpected = sorted(set(trunk_state) - set(expected))
    wrong = [k for k in expected if k in trunk_state and tuple(trunk_state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise ValueError(
            f"weights_path {str(path)!r} is not a torchvision {name!r} state_dict: "
            f"missing {missing[:3]} ({len(missing)}), unexpected {unexpected[:3]} ({len(unexpected)}), "
            f"wrong shape {wrong[:3]} ({len(wrong)})"
        )
    classifier.load_state_dict(trunk_state, strict=False)
