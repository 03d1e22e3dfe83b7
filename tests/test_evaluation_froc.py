"""FROC (``mdfnet.evaluation.froc``) against a case computed by hand, with the arithmetic written out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mdfnet.evaluation import FP_RATES, froc, froc_metric

BOX = [10, 10, 20, 20]  # every ground truth (xywh)
INSIDE = [12, 12, 10, 10]  # IoBB 1 with BOX: a hit when the class matches and the box is still free
OUTSIDE = [40, 40, 10, 10]  # IoBB 0: never a hit


def _case() -> tuple[dict, list]:
    """4 images, classes A (id 1) and B (id 2), a class C (id 3) without ground truth.

    ground truth: image 1 A; image 2 A and B; image 3 B; image 4 nothing → 2 A, 2 B, 4 lesions, 4 images.
    """
    gt = {"images": [{"id": i} for i in (1, 2, 3, 4)],
          "categories": [{"id": 1, "name": "A"}, {"id": 2, "name": "B"}, {"id": 3, "name": "C"}],
          "annotations": [{"id": k, "image_id": img, "category_id": cat, "bbox": BOX}
                          for k, (img, cat) in enumerate([(1, 1), (2, 1), (2, 2), (3, 2)], 1)]}

    def det(img, cat, box, score):
        return {"image_id": img, "category_id": cat, "bbox": box, "score": score}

    dets = [
        det(3, 1, INSIDE, 0.95),   # A on image 3 (no A there): FP
        det(1, 1, INSIDE, 0.90),   # A hit on image 1: TP
        det(2, 1, INSIDE, 0.80),   # A hit on image 2: TP
        det(4, 2, INSIDE, 0.80),   # B on image 4 (nothing there): FP, tied with the TP above
        det(4, 1, INSIDE, 0.70),   # A on image 4: FP
        det(1, 1, INSIDE, 0.60),   # second A on image 1, its box already taken: FP
        det(2, 2, INSIDE, 0.50),   # B hit on image 2: TP
        det(3, 2, OUTSIDE, 0.30),  # B beside the box on image 3: FP
        det(3, 2, INSIDE, 0.20),   # B hit on image 3 (the box is still free): TP
        det(1, 2, INSIDE, 0.01),   # below the score threshold 0.05: not counted
    ]
    return gt, dets


def test_froc_matches_the_hand_computed_case():
    r = froc(*_case())
    # Operating points (FP per image = FP / 4, sensitivity = TP / ground truths), one per distinct score.
    # A (2 lesions): .95 FP → (0.25, 0); .90 TP → (0.25, 0.5); .80 TP → (0.25, 1); .70 FP → (0.5, 1); .60 FP → (0.75, 1)
    #   at 0.125 FP/image only the start (0, 0) qualifies → 0; at 0.25 and above → 1. Mean = 6/7.
    a = [0, 1, 1, 1, 1, 1, 1]
    # B (2 lesions): .80 FP → (0.25, 0); .50 TP → (0.25, 0.5); .30 FP → (0.5, 0.5); .20 TP → (0.5, 1)
    #   0.125 → 0; 0.25 → 0.5; 0.5 and above → 1. Mean = (0 + 0.5 + 5) / 7 = 5.5/7.
    b = [0, 0.5, 1, 1, 1, 1, 1]
    # Pooled (4 lesions), cumulative (FP, TP) after each score: .95 (1, 0); .90 (1, 1); .80 (2, 2) — the tied A TP
    # and B FP enter together, so (1, 2) is never an operating point; .70 (3, 2); .60 (4, 2); .50 (4, 3);
    # .30 (5, 3); .20 (5, 4). As (FP/4, TP/4): (.25, 0) (.25, .25) (.5, .5) (.75, .5) (1, .5) (1, .75) (1.25, .75)
    # (1.25, 1). Read: 0.125 → 0; 0.25 → 0.25; 0.5 → 0.5; 1 → 0.75; 2, 4, 8 → 1. Mean = 4.5/7.
    pooled = [0, 0.25, 0.5, 0.75, 1, 1, 1]
    assert r.fp_rates == FP_RATES == (0.125, 0.25, 0.5, 1, 2, 4, 8) and r.num_images == 4
    np.testing.assert_allclose(r.sensitivity[0], a)
    np.testing.assert_allclose(r.sensitivity[1], b)
    assert np.isnan(r.sensitivity[2]).all()  # C has no ground truth
    np.testing.assert_allclose(r.sensitivity[3], pooled)
    np.testing.assert_allclose(r.mean[[0, 1, 3]], [6 / 7, 5.5 / 7, 4.5 / 7])
    fps, sens = r.curves["all"]
    np.testing.assert_allclose(fps, [0, .25, .25, .5, .75, 1, 1, 1.25, 1.25])
    np.testing.assert_allclose(sens, [0, 0, .25, .5, .5, .5, .75, .75, 1])

    m = r.metrics("final/test")
    assert m["final/test/froc/fp0.125"] == 0 and m["final/test/froc/fp0.25"] == 0.25
    assert m["final/test/froc/fp1"] == 0.75 and m["final/test/froc/mean"] == pytest.approx(4.5 / 7)
    assert m["final/test/froc/fp0.25/b"] == 0.5 and m["final/test/froc/mean/a"] == pytest.approx(6 / 7)
    assert not any(k.endswith("/c") for k in m) and len(m) == 3 * 8  # A, B, overall × (7 rates + mean)
    assert froc_metric("final/val", 0.5, "Pulmonary edema") == "final/val/froc/fp0.5/pulmonary_edema"
    d = r.to_dict()
    assert d["sensitivity"]["C"]["mean"] is None and d["sensitivity"]["all"]["at_rates"] == pooled


def test_froc_limits_and_settings():
    gt, dets = _case()
    # max_dets 1 per image and class keeps only the best A on image 1 and the .30 B on image 3 (a miss): B's
    # pooled hits drop to 1 of 2 → B sensitivity is 0.5 at every rate from 0.25 on
    r = froc(gt, dets, max_dets=1)
    np.testing.assert_allclose(r.sensitivity[1], [0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    # an overlap threshold no box reaches: nothing is ever found
    none = froc(gt, [{**d, "bbox": [11, 11, 30, 30]} for d in dets], threshold=0.99)
    assert (none.sensitivity[[0, 1, 3]] == 0).all()
    with pytest.raises(ValueError, match="fp_rates must be positive"):
        froc(gt, dets, fp_rates=(0, 1))
    assert math.isnan(froc(gt, []).sensitivity[2, 0]) and froc(gt, []).sensitivity[3, 0] == 0
