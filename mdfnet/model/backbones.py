"""Backbone registry: torchvision classifiers cut to their stride-32 feature extractor + a 1×1 projection.

Each entry of :data:`BACKBONES` says how to make the torchvision classifier (random init, ``weights=None``)
and how to cut it to its convolutional trunk. :func:`build_backbone` returns a :class:`FeatureBackbone`
mapping ``[B, 3, H, W]`` to one feature map ``[B, out_channels, ceil(H/32), ceil(W/32)]`` (16×16×64 at
512 px, as in the paper) and exposing ``.out_channels`` as torchvision's detection heads expect.

Pretrained weights are never downloaded: ``weights_path`` may name a local ``state_dict`` of the whole
torchvision classifier (the files torchvision itself distributes), loaded with ``weights_only=True``.
The same builder makes the image backbone and the clinical backbone (separate weights).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    """``make()`` → torchvision classifier; ``trunk(classifier)`` → its feature extractor with ``channels``."""

    make: Callable[[], nn.Module]
    trunk: Callable[[nn.Module], nn.Module]
    channels: int


def _features(m: nn.Module) -> nn.Module:
    return m.features


def _densenet_trunk(m: nn.Module) -> nn.Module:
    # torchvision's DenseNet applies the final ReLU in forward(), outside ``features``.
    return nn.Sequential(m.features, nn.ReLU(inplace=False))


def _resnet_trunk(m: nn.Module) -> nn.Module:
    return nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v3_small": BackboneSpec(lambda: tvm.mobilenet_v3_small(weights=None), _features, 576),
    "mobilenet_v3_large": BackboneSpec(lambda: tvm.mobilenet_v3_large(weights=None), _features, 960),
    "efficientnet_b0": BackboneSpec(lambda: tvm.efficientnet_b0(weights=None), _features, 1280),
    "resnet18": BackboneSpec(lambda: tvm.resnet18(weights=None), _resnet_trunk, 512),
    "resnet50": BackboneSpec(lambda: tvm.resnet50(weights=None), _resnet_trunk, 2048),
    "densenet121": BackboneSpec(lambda: tvm.densenet121(weights=None), _densenet_trunk, 1024),
    "convnext_tiny": BackboneSpec(lambda: tvm.convnext_tiny(weights=None), _features, 768),
}
"""Backbone name → how to build it. Add an entry to support another torchvision classifier."""


class FeatureBackbone(nn.Module):
    """``[B, 3, H, W]`` → ``[B, out_channels, h, w]`` (trunk, then a 1×1 convolution to ``out_channels``)."""

    def __init__(self, trunk: nn.Module, trunk_channels: int, out_channels: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.proj = nn.Conv2d(trunk_channels, out_channels, kernel_size=1)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.trunk(x))


def build_backbone(name: str, out_channels: int = 64, weights_path: str | Path | None = None) -> FeatureBackbone:
    """Build backbone ``name`` from :data:`BACKBONES`, optionally loading a local classifier ``state_dict``."""
    spec = BACKBONES.get(name)
    if spec is None:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
    classifier = spec.make()
    if weights_path is not None:
        load_classifier_weights(classifier, name, weights_path)
    return FeatureBackbone(spec.trunk(classifier), spec.channels, out_channels)


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
