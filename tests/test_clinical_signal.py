"""Regression guard for the clinical pathway: the box head must learn a rule that only the clinical data carry.

Every image shows one opacity; whether it is *Consolidation* or *Pulmonary edema* is decided by the sign of one
clinical feature alone (as fever vs tachypnoea decides in the synthetic data). The whole detector of the
small-scale recipe (64 px, stride-8 MobileNetV3-small) is trained for a few hundred steps on the box classifier
of fixed RoIs (jittered ground-truth boxes, 1–4 per image, fresh images every step so nothing can be memorised).
It must then label held-out ground-truth boxes from their own clinical vectors, and fall to chance when the
clinical vectors are shuffled across images (the control). If anything between the clinical input and the box
classifier stops carrying information (the encoder, the RoI-to-image order of the clinical vectors, the fc6
concatenation), the first assertion fails.

The model trains in eval mode: BatchNorm keeps its fixed statistics, so a few hundred steps test the clinical
path rather than how fast MobileNetV3's running averages (momentum 0.01) catch up with the weights. (In train
mode, with batch statistics and a few hundred steps, the rule was not learned in our runs; full trainings of
≈1,800 steps learn it: see the README's ablation.)
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mdfnet.data.schema import CLASSES
from mdfnet.model import ModelConfig, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

S = 64
CONS, EDEMA = CLASSES.index("Consolidation") + 1, CLASSES.index("Pulmonary edema") + 1
RECIPE = dict(backbone_stride=8, use_mask=False, anchor_sizes=(8, 16, 32, 64), box_batch_size_per_image=32,
              rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=150, rpn_pre_nms_top_n_test=300,
              rpn_post_nms_top_n_test=100)


def make_cases(n: int, g: torch.Generator, max_boxes: int = 1):
    """``n`` images with one opacity each and ``1..max_boxes`` boxes around it (jittered by 10 % of its side);
    the class is the sign of clinical feature 0, which the image does not show."""
    images, boxes, labels, numeric = [], [], [], []
    for i in range(n):
        img = 0.3 + 0.05 * torch.rand(S, S, generator=g)
        side = int(torch.randint(14, 24, (1,), generator=g))
        x0, y0 = (int(v) for v in torch.randint(2, S - side - 2, (2,), generator=g))
        img[y0:y0 + side, x0:x0 + side] += 0.4 + 0.1 * torch.rand(side, side, generator=g)
        images.append(img.clamp(0, 1).expand(3, S, S).contiguous())
        x = torch.randn(9, generator=g)
        x[0] = x[0].sign() * (0.5 + x[0].abs())
        numeric.append(x)
        k = 1 + i % max_boxes
        box = torch.tensor([[x0, y0, x0 + side, y0 + side]], dtype=torch.float32).repeat(k, 1)
        jitter = torch.zeros(k, 4) if max_boxes == 1 else 0.1 * side * torch.randn(k, 4, generator=g)
        boxes.append(box + jitter)
        labels.append(torch.full((k,), CONS if x[0] > 0 else EDEMA))
    clinical = {"numeric": torch.stack(numeric), "categorical": torch.randint(1, 3, (n, 1), generator=g)}
    return images, clinical, boxes, torch.cat(labels)


def pair_accuracy(model, images, clinical, boxes, labels) -> float:
    """Share of boxes whose box-head logits rank the right class of the pair above the other."""
    with torch.no_grad():
        logits = model.classify_boxes(images, clinical, boxes)
    pred = torch.where(logits[:, CONS] > logits[:, EDEMA], CONS, EDEMA)
    return float((pred == labels).float().mean())


def train_box_head(variant: str, steps: int, clip: float | None = None):
    """A detector of the small-scale recipe trained ``steps`` SGD steps (lr 0.01, momentum 0.9) on the box classifier
    of fresh cases (8 images, 1–4 boxes each), in eval mode; ``variant`` baseline gets no clinical input."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    clinical_sizes = (0, 0) if variant == "baseline" else (9, 1)
    model = build_model(ModelConfig(variant=variant, **RECIPE), *clinical_sizes, S).eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(steps):
        images, clinical, boxes, labels = make_cases(8, g, max_boxes=4)
        loss = F.cross_entropy(model.classify_boxes(images, clinical if sum(clinical_sizes) else None, boxes), labels)
        opt.zero_grad()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
    return model


@pytest.mark.parametrize("variant", ["msf1d", "mdf"])
def test_clinical_vector_decides_between_look_alike_lesions(variant):
    model = train_box_head(variant, steps=150, clip=10.0)
    images, clinical, boxes, labels = make_cases(64, torch.Generator().manual_seed(1))
    own = pair_accuracy(model, images, clinical, boxes, labels)
    shuffled = {k: v.roll(1, dims=0) for k, v in clinical.items()}  # every image gets its neighbour's values
    control = pair_accuracy(model, images, shuffled, boxes, labels)
    assert own >= 0.95, f"{variant}: the box head does not read the clinical vector (accuracy {own:.2f})"
    assert control <= 0.7, f"{variant}: accuracy {control:.2f} with shuffled clinical data: the images leak the label"


def test_baseline_cannot_learn_the_rule():
    """The same training without the clinical pathway stays at chance: the images really carry no label."""
    model = train_box_head("baseline", steps=60)
    images, _, boxes, labels = make_cases(64, torch.Generator().manual_seed(1))
    assert pair_accuracy(model, images, None, boxes, labels) <= 0.7


def test_probe_instrument_reads_a_linear_signal_and_nothing_else(monkeypatch):
    """``benchmarks/probe_msf3d.py``'s linear probe (the README's MSF-Net 3D numbers rest on it): a label carried
    by one feature of spread 0.05 beside 63 noise features of spread 5 is read (≥ 0.95 on held-out rows; the probe
    standardises its inputs); labels independent of the features stay near chance (≤ 0.65)."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from probe_msf3d import linear_probe

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (400,), generator=g) + CONS  # two class ids, as the probe gets them
    x = 5 * torch.randn(400, 64, generator=g)
    x[:, 7] = 0.05 * (2.0 * (labels == labels.max()) - 1) + 0.01 * torch.randn(400, generator=g)
    assert linear_probe(x[:300], labels[:300], x[300:], labels[300:]) >= 0.95
    noise = torch.randn(400, 64, generator=g)
    assert linear_probe(noise[:300], labels[:300], noise[300:], labels[300:]) <= 0.65
