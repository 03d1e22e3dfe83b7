"""The look-alike accuracy of ``benchmarks/ablation_synthetic.py`` on hand-built detections."""

from __future__ import annotations

import torch

from benchmarks.ablation_synthetic import TWINS, twin_accuracy
from mdfnet.data.schema import CLASSES

CONS, EDEMA = (CLASSES.index(c) + 1 for c in TWINS)
ECS = CLASSES.index("Enlarged cardiac silhouette") + 1


class _Targets:
    """Only what twin_accuracy reads of an MDFDataset: ``target(i)``."""

    def __init__(self, targets):
        self.targets = targets

    def target(self, i):
        return self.targets[i]


def _t(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}


def _o(boxes, labels, scores):
    return {**_t(boxes, labels), "scores": torch.tensor(scores, dtype=torch.float32)}


def test_twin_accuracy_counts_correct_swapped_missed():
    ds = _Targets([
        _t([[10, 10, 30, 30], [0, 0, 8, 8]], [CONS, ECS]),     # consolidation + an ECS box (not of the pair)
        _t([[0, 0, 20, 20]], [EDEMA]),
        _t([[40, 40, 60, 60]], [CONS]),
        _t([], []),                                            # no ground truth at all
    ])
    outputs = [
        # the highest-scoring covering detection of the pair is edema → swapped (the right class scores lower)
        _o([[12, 12, 20, 20], [12, 12, 20, 20], [0, 0, 8, 8]], [EDEMA, CONS, ECS], [0.9, 0.5, 0.99]),
        # an ECS detection scores higher but is not of the pair; the edema one inside the box → correct
        _o([[0, 0, 20, 20], [5, 5, 10, 10]], [ECS, EDEMA], [0.95, 0.3]),
        # one outside the box, one inside but below the score threshold → missed
        _o([[0, 0, 10, 10], [45, 45, 50, 50]], [CONS, CONS], [0.9, 0.01]),
        _o([[1, 1, 5, 5]], [EDEMA], [0.9]),
    ]
    assert twin_accuracy(ds, outputs) == {"correct": 1, "swapped": 1, "missed": 1}
    # a large detection that covers only 25 % of its own area (IoBB 0.25) does not count
    big = [_o([[10, 10, 50, 50]], [CONS], [0.9])]
    assert twin_accuracy(_Targets([_t([[10, 10, 30, 30]], [CONS])]), big) == {"correct": 0, "swapped": 0, "missed": 1}
    assert twin_accuracy(_Targets([_t([[10, 10, 30, 30]], [CONS])]), big, min_iobb=0.25)["correct"] == 1
