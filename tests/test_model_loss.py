"""Uncertainty-weighted loss (hand-computed values and gradients) and an overfitting check of the full model."""

from __future__ import annotations

import math

import pytest
import torch

from mdfnet.model import (
    ModelConfig,
    SumLoss,
    UncertaintyWeightedLoss,
    build_model,
    loss_names,
    uncertainty_weighted_loss,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def test_uncertainty_loss_hand_computed_value_and_gradients():
    # L = Σ 0.5·exp(-s)·L + s with L_a = 2, s_a = 0 and L_b = 0.5, s_b = log 4:
    #   a: 0.5·1·2 + 0 = 1;  b: 0.5·(1/4)·0.5 + log 4 = 0.0625 + 1.3862944
    la = torch.tensor(2.0, requires_grad=True)
    lb = torch.tensor(0.5, requires_grad=True)
    sa = torch.tensor(0.0, requires_grad=True)
    sb = torch.tensor(math.log(4.0), requires_grad=True)
    total = uncertainty_weighted_loss({"a": la, "b": lb}, {"a": sa, "b": sb})
    assert total.item() == pytest.approx(1.0 + 0.0625 + math.log(4.0), abs=1e-6)
    total.backward()
    # dL/dL_l = 0.5·exp(-s_l);  dL/ds_l = 1 - 0.5·exp(-s_l)·L_l
    assert la.grad.item() == pytest.approx(0.5)
    assert lb.grad.item() == pytest.approx(0.125)
    assert sa.grad.item() == pytest.approx(0.0, abs=1e-7)  # s_a = log(L_a / 2) is the optimum
    assert sb.grad.item() == pytest.approx(1.0 - 0.0625)


def test_uncertainty_loss_key_mismatch_raises():
    with pytest.raises(KeyError, match=r"missing \['b'\]"):
        uncertainty_weighted_loss({"a": torch.tensor(1.0), "b": torch.tensor(1.0)}, {"a": torch.tensor(0.0)})


def test_uncertainty_module_gradients_reach_log_variances():
    names = loss_names(use_mask=True)
    assert names == ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_mask")
    crit = UncertaintyWeightedLoss(names)
    losses = {n: torch.tensor(float(i + 1)) for i, n in enumerate(names)}
    total = crit(losses)
    assert total.item() == pytest.approx(0.5 * sum(range(1, 6)))  # s = 0 at init
    total.backward()
    for i, n in enumerate(names):
        assert crit.log_vars[n].grad.item() == pytest.approx(1.0 - 0.5 * (i + 1))
    w = crit.weights()
    assert w["sigma/loss_mask"] == pytest.approx(1.0) and w["log_var/loss_mask"] == 0.0
    with pytest.raises(KeyError):
        crit({n: losses[n] for n in names[:4]})


def test_sum_loss_is_plain_sum():
    crit = SumLoss(["x", "y"])
    assert crit({"x": torch.tensor(1.5), "y": torch.tensor(2.0)}).item() == pytest.approx(3.5)
    assert list(crit.parameters()) == []


def _overfit_batch(size: int = 64):
    g = torch.Generator().manual_seed(1)
    boxes = [[8, 8, 48, 40], [16, 12, 56, 56], [4, 20, 40, 60], [20, 4, 60, 44]]
    images, targets = [], []
    for i, b in enumerate(boxes):
        im = torch.rand(3, size, size, generator=g) * 0.2
        im[:, b[1]:b[3], b[0]:b[2]] += 0.7
        images.append(im)
        targets.append({"boxes": torch.tensor([b], dtype=torch.float32), "labels": torch.tensor([1 + i])})
    clinical = {"numeric": torch.randn(4, 9, generator=g), "categorical": torch.tensor([[1], [2], [1], [2]])}
    return images, clinical, targets


def test_mdf_overfits_four_images():
    """On 4 synthetic images (one big bright box each) the summed detector loss halves within 60 SGD steps."""
    torch.manual_seed(0)
    images, clinical, targets = _overfit_batch()
    model = build_model(ModelConfig(variant="mdf", use_mask=False), 9, 1, 64).train()
    crit = UncertaintyWeightedLoss(loss_names(use_mask=False))
    opt = torch.optim.SGD(list(model.parameters()) + list(crit.parameters()), lr=0.02, momentum=0.9)
    history = []
    for _ in range(60):
        losses = model(images, clinical, targets)
        history.append(float(sum(v.detach() for v in losses.values())))
        if len(history) >= 3 and sum(history[-3:]) / 3 <= 0.5 * history[0]:
            break
        opt.zero_grad()
        crit(losses).backward()
        opt.step()
    assert all(math.isfinite(h) for h in history)
    assert sum(history[-3:]) / 3 <= 0.5 * history[0], f"loss went {history[0]:.3f} → {history[-1]:.3f}"
