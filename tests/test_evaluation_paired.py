"""The paired bootstrap of an AP difference (``mdfnet.evaluation.paired``): on constructed predictions where the two
models' own intervals overlap, the paired interval of the difference excludes 0; seeds combine as documented."""

from __future__ import annotations

import numpy as np
import pytest

from mdfnet.evaluation import EvaluationError, Scored, bootstrap, evaluate, paired_bootstrap

N_IMAGES = 60
BOX = [10, 10, 20, 20]


def _gt(n: int = N_IMAGES) -> dict:
    """``n`` images with one lesion each (one class)."""
    return {"images": [{"id": i} for i in range(1, n + 1)], "categories": [{"id": 1, "name": "lesion"}],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": BOX} for i in range(1, n + 1)]}


def _dets(found: range | list[int], score: float = 0.9) -> list[dict]:
    """A hit (a box inside the lesion) on each image in ``found``, nothing elsewhere."""
    return [{"image_id": i, "category_id": 1, "bbox": [12, 12, 10, 10], "score": score} for i in found]


# a finds the lesion on images 1-45, b on the same images except 6 of them: b is never better on any image
A = _dets(range(1, 46))
B = _dets([i for i in range(1, 46) if i % 7 != 0])  # 7, 14, ..., 42 missed: 39 of 60


def test_paired_interval_excludes_zero_where_the_unpaired_intervals_overlap():
    gt = _gt()
    ia, ib = (bootstrap(gt, d, n=1000, seed=0).ap for d in (A, B))
    assert ia[0] <= ib[1]  # the per-model intervals overlap: the old rule called them "not different"
    r = paired_bootstrap([(Scored(gt, A), Scored(gt, B))], n=1000, seed=0)
    # AP with precision 1 up to recall r is (number of the 101 recall thresholds ≤ r) / 101: a 76/101, b 66/101
    assert evaluate(gt, A).ap == pytest.approx(76 / 101) and evaluate(gt, B).ap == pytest.approx(66 / 101)
    assert r.delta == pytest.approx(10 / 101)
    assert r.interval[0] > 0 and r.interval[1] > r.delta and r.verdict == "higher" and r.pairs == 1
    # paired = the same resampled images for both: each replicate's Δ is the difference of the two bootstraps'
    np.testing.assert_allclose(r.samples, bootstrap(gt, A, n=1000, seed=0).samples_ap
                               - bootstrap(gt, B, n=1000, seed=0).samples_ap)
    back = paired_bootstrap([(Scored(gt, B), Scored(gt, A))], n=1000, seed=0)
    assert back.verdict == "lower" and back.interval == pytest.approx((-r.interval[1], -r.interval[0]))
    same = paired_bootstrap([(Scored(gt, A), Scored(gt, list(A)))], n=200)
    assert same.delta == 0 and same.interval == (0.0, 0.0) and same.verdict == "not different"
    assert r.to_dict()["verdict"] == "higher" and r.to_dict()["interval"] == list(r.interval)


def test_seeds_are_paired_seed_by_seed_and_averaged_per_resample():
    """Two seeds: Δ per replicate = mean of the seeds' Δ on the same drawn images; point = mean of the seeds' Δ."""
    gt = _gt()
    a1, b1 = _dets(range(1, 41)), _dets(range(1, 39))  # seed 1: a 2 images ahead
    pairs = [(Scored(gt, A), Scored(gt, B)), (Scored(gt, a1), Scored(gt, b1))]
    both = paired_bootstrap(pairs, n=300, seed=3)
    one = [paired_bootstrap([p], n=300, seed=3) for p in pairs]
    np.testing.assert_allclose(both.samples, (one[0].samples + one[1].samples) / 2)
    assert both.delta == pytest.approx((one[0].delta + one[1].delta) / 2) and both.pairs == 2
    assert both.interval == pytest.approx(tuple(np.percentile(both.samples, (2.5, 97.5))))
    # the scoring settings are each side's own: a score threshold above a's scores leaves a with nothing
    none = paired_bootstrap([(Scored(gt, A, score_threshold=0.95), Scored(gt, B))], n=100)
    assert none.delta == pytest.approx(-66 / 101) and none.verdict == "lower"


def test_refuses_models_scored_on_different_images():
    with pytest.raises(EvaluationError, match="not on the same test images"):
        paired_bootstrap([(Scored(_gt(), A), Scored(_gt(59), B))])
    with pytest.raises(ValueError, match="at least one"):
        paired_bootstrap([])
