"""The look-alike pair's confusion (``mdfnet.evaluation.pair_confusion``) on hand-built COCO inputs."""

from __future__ import annotations

import math

import pytest

from mdfnet.data.schema import CLASSES
from mdfnet.evaluation import LOOKALIKE_PAIR, EvaluationError, pair_confusion

CONS, EDEMA = (CLASSES.index(c) + 1 for c in LOOKALIKE_PAIR)
ECS = CLASSES.index("Enlarged cardiac silhouette") + 1


def _gt(per_image: list[list[tuple[list[float], int]]]) -> dict:
    """COCO ground truth: image i + 1 holds the (xyxy box, label) pairs of ``per_image[i]``."""
    anns = [{"id": k + 1, "image_id": i + 1, "category_id": lab, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
            for i, img in enumerate(per_image) for k, (b, lab) in enumerate(img)]
    for k, a in enumerate(anns):
        a["id"] = k + 1
    return {"images": [{"id": i + 1} for i in range(len(per_image))], "annotations": anns,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)]}


def _det(image: int, box: list[float], label: int, score: float) -> dict:
    return {"image_id": image, "category_id": label, "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
            "score": score}


def test_counts_correct_swapped_missed_per_class():
    gt = _gt([
        [([10, 10, 30, 30], CONS), ([0, 0, 8, 8], ECS)],   # consolidation + an ECS box (not of the pair)
        [([0, 0, 20, 20], EDEMA)],
        [([40, 40, 60, 60], CONS)],
        [],                                                 # no ground truth at all
        [([0, 0, 20, 20], EDEMA)],
    ])
    dets = [
        # the highest-scoring covering detection of the pair is edema → swapped (the right class scores lower)
        _det(1, [12, 12, 20, 20], EDEMA, 0.9), _det(1, [12, 12, 20, 20], CONS, 0.5), _det(1, [0, 0, 8, 8], ECS, .99),
        # an ECS detection scores higher but is not of the pair; the edema one inside the box → correct
        _det(2, [0, 0, 20, 20], ECS, 0.95), _det(2, [5, 5, 10, 10], EDEMA, 0.3),
        # one outside the box, one inside but below the score threshold → missed
        _det(3, [0, 0, 10, 10], CONS, 0.9), _det(3, [45, 45, 50, 50], CONS, 0.01),
        _det(4, [1, 1, 5, 5], EDEMA, 0.9),
        # a detection on another image never covers this one's box → missed
        _det(4, [0, 0, 20, 20], EDEMA, 0.9),
    ]
    r = pair_confusion(gt, dets)
    assert r.classes == LOOKALIKE_PAIR
    assert (r.correct, r.swapped, r.missed) == ((0, 1), (1, 0), (1, 1))
    assert r.ground_truth == (2, 2) and r.both_present and r.total_missed == 2
    assert math.isnan(r.recall[0]) is False and r.recall == (0.0, 1.0)
    assert r.balanced_accuracy == pytest.approx(0.5)
    assert r.to_dict()["balanced_accuracy"] == pytest.approx(0.5)
    assert r.metrics("final/test") == {"final/test/lookalike_bacc": pytest.approx(0.5), "final/test/lookalike_missed": 2.0}


def test_balanced_accuracy_is_not_fooled_by_always_the_majority_class():
    boxes = [[([0, 0, 10, 10], CONS)]] * 6 + [[([0, 0, 10, 10], EDEMA)]] * 2
    always_cons = [_det(i + 1, [1, 1, 9, 9], CONS, 0.8) for i in range(8)]
    r = pair_confusion(_gt(boxes), always_cons)
    assert (r.correct, r.swapped) == ((6, 0), (0, 2))
    assert r.balanced_accuracy == pytest.approx(0.5)  # plain accuracy would be 0.75
    right = [_det(i + 1, [1, 1, 9, 9], CONS if i < 6 else EDEMA, 0.8) for i in range(8)]
    assert pair_confusion(_gt(boxes), right).balanced_accuracy == 1.0


def test_overlap_threshold_and_undefined_cases():
    gt = _gt([[([10, 10, 30, 30], CONS)]])
    big = [_det(1, [10, 10, 50, 50], CONS, 0.9)]  # covers the box but only 25 % of it lies inside: IoBB 0.25
    assert pair_confusion(gt, big).missed == (1, 0)
    assert pair_confusion(gt, big, min_overlap=0.25).correct == (1, 0)
    r = pair_confusion(gt, big, min_overlap=0.25)
    assert not r.both_present and math.isnan(r.balanced_accuracy)  # no edema ground truth: undefined
    assert r.to_dict()["balanced_accuracy"] is None
    assert r.metrics("final/val") == {}  # only one class has ground truth: nothing is logged
    all_missed = pair_confusion(_gt([[([0, 0, 5, 5], CONS)], [([0, 0, 5, 5], EDEMA)]]), [])
    assert all_missed.metrics("x") == {"x/lookalike_missed": 2.0}  # balanced accuracy undefined, misses counted
    assert pair_confusion(_gt([[]]), []).ground_truth == (0, 0)
    with pytest.raises(EvaluationError, match="missing"):
        pair_confusion(gt, [], classes=("Consolidation", "Pneumothorax"))
    with pytest.raises(EvaluationError, match="distinct"):
        pair_confusion(gt, [], classes=("Consolidation", "Consolidation"))
