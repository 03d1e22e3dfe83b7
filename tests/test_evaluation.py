"""mdfnet.evaluation: equality with pycocotools (IoU, and IoBB via the authors' patched COCOeval), hand-computed
cases, sweeps and bootstrap (converters, malformed inputs, plots and the commands: ``test_evaluation_io.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdfnet.evaluation import (
    REC_THRS,
    bootstrap,
    box_iobb,
    box_iou,
    evaluate,
    resample_images,
    sweep,
)
from mdfnet.evaluation.reference import reference_evaluate

pytest.importorskip("pycocotools")

NAMES = {1: "a", 2: "b", 3: "c"}


# ------------------------------------------------------------------------------------------------- helpers
def make_gt(images, anns, cats=(1, 2)) -> dict:
    """``anns``: ``(image_id, category_id, [x, y, w, h])``; annotation ids 1..N (pycocotools needs ids >= 1)."""
    return {
        "images": [{"id": i} for i in images],
        "annotations": [
            {"id": j + 1, "image_id": i, "category_id": c, "bbox": list(map(float, b)), "area": b[2] * b[3],
             "iscrowd": 0}
            for j, (i, c, b) in enumerate(anns)
        ],
        "categories": [{"id": c, "name": NAMES.get(c, f"c{c}")} for c in cats],
    }


def make_dets(rows) -> list[dict]:
    """``rows``: ``(image_id, category_id, [x, y, w, h], score)``."""
    return [{"image_id": i, "category_id": c, "bbox": list(map(float, b)), "score": s} for i, c, b, s in rows]


def random_case(seed: int, n_images: int = 30, n_dets: int = 300, size: float = 64.0) -> tuple[dict, list]:
    """Seeded case: 0-3 ground truths per image (some images empty), jittered copies plus clutter, tied scores."""
    rng = np.random.default_rng(seed)
    n_gt = rng.integers(0, 4, size=n_images)
    img = np.repeat(np.arange(1, n_images + 1), n_gt)
    xy = rng.uniform(0, size * 0.6, size=(len(img), 2))
    wh = rng.uniform(4, size * 0.4, size=(len(img), 2))
    cat = rng.integers(1, 4, size=len(img))
    gt = make_gt(range(1, n_images + 1), [(int(i), int(c), [*p, *s]) for i, c, p, s in zip(img, cat, xy, wh, strict=True)],
                 cats=(1, 2, 3))
    src = rng.integers(0, len(img), size=n_dets)
    jit = rng.random(n_dets) < 0.6
    d_img = np.where(jit, img[src], rng.integers(1, n_images + 1, size=n_dets))
    d_cat = np.where(jit, cat[src], rng.integers(1, 4, size=n_dets))
    d_xy = np.where(jit[:, None], xy[src] + rng.normal(0, 3, (n_dets, 2)), rng.uniform(0, size * 0.7, (n_dets, 2)))
    d_wh = np.where(jit[:, None], wh[src] * rng.uniform(0.4, 1.3, (n_dets, 2)), rng.uniform(2, size * 0.4, (n_dets, 2)))
    score = np.round(rng.random(n_dets), 1)
    dets = make_dets([(int(i), int(c), [*p, *s], float(sc)) for i, c, p, s, sc in zip(d_img, d_cat, d_xy, d_wh, score, strict=True)])
    return gt, dets


def assert_same_as_reference(gt, dets, **kw) -> None:
    """Ours == pycocotools' COCOeval (IoBB-patched for overlap="iobb") within 1e-9, arrays and summaries."""
    ours = evaluate(gt, dets, **kw)
    ref = reference_evaluate(gt, dets, **kw)
    np.testing.assert_allclose(ours.precision, ref["precision"], rtol=0, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(ours.recall, ref["recall"], rtol=0, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose([ours.ap, ours.ar], [ref["ap"], ref["ar"]], rtol=0, atol=1e-9, equal_nan=True)
    for key in ("tp", "fp", "fn"):
        np.testing.assert_array_equal(getattr(ours, key), ref[key], err_msg=key)
    for cid, name in zip(ours.category_ids, ours.class_names, strict=True):
        mine, theirs = ours.per_class[name], ref["per_class"][cid]
        for key in ("ap", "ar"):
            expected = theirs[key]
            if np.isnan(expected):
                assert mine[key] is None, (name, key)
            else:
                assert mine[key] == pytest.approx(expected, abs=1e-9), (name, key)


# ------------------------------------------------------------------------------ randomised pycocotools equality
coord = st.integers(0, 12).map(lambda v: v / 2)  # a coarse grid: exact overlap ties and duplicate boxes happen
extent = st.integers(0, 10).map(lambda v: v / 2)  # zero widths/heights included
box = st.tuples(coord, coord, extent, extent).map(list)
# crowded: everything within a few pixels, so boxes nest in several ground truths (IoBB ties at 1)
crowded_box = st.tuples(*[st.integers(0, 4).map(lambda v: v / 2)] * 2, *[st.integers(1, 12).map(lambda v: v / 2)] * 2)
# few distinct scores: ties; 0.01 and 0.04 sit below the default score threshold
score = st.one_of(st.sampled_from([0.01, 0.04, 0.05, 0.3, 0.5, 0.9, 1.0]), st.floats(0.0, 1.0))


@st.composite
def coco_cases(draw, crowded: bool = False):
    """Random COCO cases; ``crowded``: one image and class, 2-6 ground truths piled up, nested detections (the
    greedy matching's tie rule and order then decide the counts)."""
    if crowded:
        images, cats = [draw(st.integers(1, 40))], [draw(st.integers(1, 6))]
        boxes = crowded_box.map(list)
        anns = draw(st.lists(st.tuples(st.just(images[0]), st.just(cats[0]), boxes), min_size=2, max_size=6))
    else:
        images = draw(st.lists(st.integers(1, 40), min_size=1, max_size=5, unique=True))  # unsorted, gappy ids
        cats = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3, unique=True))  # some get no ground truth
        boxes = crowded_box.map(list) if draw(st.booleans()) else box
        anns = draw(st.lists(st.tuples(st.sampled_from(images), st.sampled_from(cats), boxes), max_size=10))
    shift = st.integers(-3, 3).map(lambda v: v / 2)
    dets = []
    for _ in range(draw(st.integers(0, 24))):
        kind = draw(st.sampled_from(["gt", "gt", "nested", "random", "random"])) if anns else "random"
        if kind == "nested":  # inside the intersection of two ground truths: their IoBBs tie (at 1)
            i, c, p = anns[draw(st.integers(0, len(anns) - 1))]
            q = draw(st.sampled_from([a[2] for a in anns if a[:2] == (i, c)]))
            x0, y0 = max(p[0], q[0]), max(p[1], q[1])
            x1, y1 = max(min(p[0] + p[2], q[0] + q[2]), x0), max(min(p[1] + p[3], q[1] + q[3]), y0)
            b = [x0, y0, (x1 - x0) * draw(st.sampled_from([0.5, 1.0])), (y1 - y0) * draw(st.sampled_from([0.5, 1.0]))]
        elif kind == "gt":  # a perturbed ground truth (same image, maybe same class): shifted,
            i, c, b = anns[draw(st.integers(0, len(anns) - 1))]  # grown or shrunk (boxes nested in several gts)
            w, h = max(b[2] + draw(shift), 0.0), max(b[3] + draw(shift), 0.0)
            b = [b[0] + draw(shift), b[1] + draw(shift), w, h]
            c = c if draw(st.booleans()) else draw(st.sampled_from(cats))
        else:
            i, c, b = draw(st.sampled_from(images)), draw(st.sampled_from(cats)), draw(boxes)
        dets.append((i, c, b, draw(score)))
    kw = dict(
        thresholds=tuple(draw(st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]), min_size=1,
                                       max_size=3, unique=True))),
        max_dets=draw(st.integers(1, 4)) if not crowded else 10,  # often fewer than the dets of an (image, class)
        score_threshold=draw(st.sampled_from([0.0, 0.05, 0.5])),
    )
    return make_gt(images, anns, cats=cats), make_dets(dets), kw


_hyp = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@_hyp
@given(coco_cases())
def test_iou_equals_pycocotools_randomised(case):
    gt, dets, kw = case
    assert_same_as_reference(gt, dets, overlap="iou", **kw)


@_hyp
@given(coco_cases())
def test_iobb_equals_patched_pycocotools_randomised(case):
    gt, dets, kw = case
    assert_same_as_reference(gt, dets, overlap="iobb", **kw)


@_hyp
@given(coco_cases(crowded=True), st.sampled_from(["iou", "iobb"]))
def test_equals_pycocotools_on_crowded_randomised(case, overlap):
    gt, dets, kw = case
    assert_same_as_reference(gt, dets, overlap=overlap, **kw)


@pytest.mark.parametrize("overlap", ["iou", "iobb"])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_pycocotools_on_larger_random_cases(overlap, seed):
    """30 images, 300 detections, tied scores, empty images, maxDets cutting, several thresholds."""
    gt, dets = random_case(seed)
    assert_same_as_reference(gt, dets, overlap=overlap, thresholds=(0.3, 0.5, 0.75), max_dets=5)
    assert_same_as_reference(gt, dets, overlap=overlap, thresholds=(0.5,), max_dets=10, score_threshold=0.05)


# ------------------------------------------------------------------------------------------- hand-computed
def test_overlap_functions_hand_computed():
    big = np.array([0.0, 0.0, 10.0, 10.0])
    det = np.array([[2.0, 2.0, 2.0, 2.0],  # inside: IoBB 1, IoU 4/100
                    [5.0, 0.0, 10.0, 10.0],  # half inside: IoBB 0.5, IoU 50/150
                    [10.0, 0.0, 5.0, 5.0],  # touching the edge: 0
                    [3.0, 3.0, 0.0, 4.0]])  # zero width: 0
    np.testing.assert_allclose(box_iobb(det, big), [1.0, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(box_iou(det, big), [0.04, 50 / 150, 0.0, 0.0])
    # IoBB is not symmetric: the large box is only 4% inside the small one
    assert box_iobb(big, det[0]) == pytest.approx(0.04)


def test_small_box_inside_large_gt_is_a_hit_for_iobb_only():
    gt = make_gt([1], [(1, 1, [0, 0, 100, 100])])
    dets = make_dets([(1, 1, [40, 40, 10, 10], 0.9)])
    iobb = evaluate(gt, dets, overlap="iobb")
    # precision is tp / (tp + fp + eps) as in COCO, so "1" is 1 - 2.2e-16
    assert (iobb.ap, iobb.ar) == (pytest.approx(1.0, abs=1e-12), 1.0)
    assert iobb.per_class["a"] == {"ap": pytest.approx(1.0, abs=1e-12), "ar": 1.0, "tp": 1, "fp": 0, "fn": 0,
                                   "num_gt": 1, "num_dets": 1}
    iou = evaluate(gt, dets, overlap="iou")  # IoU = 0.01
    assert (iou.ap, iou.ar) == (0.0, 0.0)
    assert (iou.per_class["a"]["tp"], iou.per_class["a"]["fp"], iou.per_class["a"]["fn"]) == (0, 1, 1)
    assert iou.per_class["b"]["ap"] is None  # class b has no ground truth: left out of the mean


def test_known_ap_with_101_point_interpolation():
    """TP, FP, TP over two gts: recall .5, .5, 1; precision 1, .5, 2/3 → 51 points at 1 and 50 at 2/3."""
    gt = make_gt([1, 2], [(1, 1, [0, 0, 10, 10]), (2, 1, [0, 0, 10, 10])], cats=(1,))
    dets = make_dets([(1, 1, [0, 0, 10, 10], 0.9), (1, 1, [50, 50, 5, 5], 0.8), (2, 1, [1, 1, 8, 8], 0.7)])
    r = evaluate(gt, dets)
    assert r.ap == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101, abs=1e-12)
    assert r.ar == 1.0
    assert (int(r.tp[0, 0]), int(r.fp[0, 0]), int(r.fn[0, 0])) == (2, 1, 0)
    np.testing.assert_allclose(r.precision[0, :, 0], np.where(REC_THRS <= 0.5, 1.0, 2 / 3), atol=1e-12)


def test_score_ties_rank_by_image_id_then_file_order():
    """Equal scores: COCO ranks image 1's FP before image 2's TP (whatever the file order) → AP 0.5, not 1."""
    gt = make_gt([2, 1], [(2, 1, [0, 0, 10, 10])], cats=(1,))
    dets = make_dets([(2, 1, [0, 0, 10, 10], 0.5), (1, 1, [0, 0, 10, 10], 0.5)])
    assert evaluate(gt, dets).ap == pytest.approx(0.5, abs=1e-12)
    assert_same_as_reference(gt, dets, overlap="iobb")


def test_greedy_matching_takes_the_last_of_equal_overlaps():
    """det1 has IoBB 1 with both gts; COCO gives it the later one, so det2 (inside only that one) misses."""
    gt = make_gt([1], [(1, 1, [0, 0, 10, 10]), (1, 1, [0, 0, 20, 20])], cats=(1,))
    dets = make_dets([(1, 1, [0, 0, 10, 10], 0.9), (1, 1, [10, 10, 10, 10], 0.8)])
    r = evaluate(gt, dets)
    assert (int(r.tp[0, 0]), int(r.fp[0, 0]), int(r.fn[0, 0])) == (1, 1, 1)
    assert_same_as_reference(gt, dets, overlap="iobb")


def test_max_dets_is_per_image_and_class_after_sorting_by_score():
    gt = make_gt([1, 2], [(1, 1, [0, 0, 10, 10])], cats=(1,))
    rows = [(1, 1, [50, 50, 5, 5], 0.9), (1, 1, [0, 0, 10, 10], 0.7), (1, 1, [60, 60, 5, 5], 0.8),
            (2, 1, [0, 0, 5, 5], 0.95), (2, 1, [0, 0, 5, 5], 0.94)]  # image 2's count does not eat image 1's
    dets = make_dets(rows)
    cut = evaluate(gt, dets, max_dets=2)  # image 1 keeps 0.9 and 0.8: the hit (0.7) is cut
    assert (cut.ap, cut.ar, int(cut.num_dets[0])) == (0.0, 0.0, 4)
    full = evaluate(gt, dets, max_dets=3)  # ranked .95 .94 .9 .8 .7(TP): precision 1/5 at recall 1
    assert full.ap == pytest.approx(0.2, abs=1e-12)
    assert full.ar == 1.0


def test_score_threshold_drops_detections_before_everything():
    gt = make_gt([1], [(1, 1, [0, 0, 10, 10])], cats=(1,))
    dets = make_dets([(1, 1, [0, 0, 10, 10], 0.04), (1, 1, [30, 30, 5, 5], 0.9)])
    default = evaluate(gt, dets)
    assert (default.ap, int(default.num_dets[0]), int(default.fp[0, 0])) == (0.0, 1, 1)
    kept = evaluate(gt, dets, score_threshold=0.0)
    assert kept.ap == pytest.approx(0.5, abs=1e-12)  # FP then TP: precision 0.5 at recall 1
    assert evaluate(gt, dets, score_threshold=0.04).ap == kept.ap  # the threshold is inclusive


def test_several_thresholds_average_and_empty_ground_truth():
    gt = make_gt([1], [(1, 1, [0, 0, 10, 10])], cats=(1,))
    dets = make_dets([(1, 1, [0, 0, 10, 6], 0.9)])  # IoU 0.6, IoBB 1
    r = evaluate(gt, dets, overlap="iou", thresholds=(0.5, 0.75))
    np.testing.assert_allclose(r.ap_per_threshold, [1.0, 0.0], atol=1e-12)
    assert r.ap == pytest.approx(0.5, abs=1e-12) and r.ar == 0.5
    assert [p["tp"] for p in r.to_dict()["per_threshold"]] == [1, 0]
    empty = evaluate(make_gt([1, 2], [], cats=(1, 2)), dets)  # nothing to find: AP undefined, not 0
    assert np.isnan(empty.ap) and empty.to_dict()["ap"] is None
    assert empty.per_class["a"]["fp"] == 1


def test_bad_parameters_raise_value_errors():
    gt = make_gt([1], [(1, 1, [0, 0, 10, 10])], cats=(1,))
    with pytest.raises(ValueError, match="unknown overlap 'giou'"):
        evaluate(gt, [], overlap="giou")
    with pytest.raises(ValueError, match="thresholds"):
        evaluate(gt, [], thresholds=(1.5,))
    with pytest.raises(ValueError, match="max_dets"):
        evaluate(gt, [], max_dets=0)


# ------------------------------------------------------------------------------------------ sweep, bootstrap
def test_sweep_table_columns_and_monotone_counts():
    gt, dets = random_case(3)
    thresholds = np.round(np.linspace(0, 1, 21), 10)
    table = sweep(gt, dets, overlap="iobb", thresholds=thresholds)
    assert list(table.columns[:6]) == ["threshold", "ap", "ar", "tp", "fp", "fn"]
    assert {f"{s}:{n}" for s in ("ap", "ar", "tp", "fp", "fn") for n in "abc"} <= set(table.columns)
    np.testing.assert_array_equal(table["threshold"], thresholds)
    n_gt = len(gt["annotations"])
    assert (table["tp"] + table["fn"] == n_gt).all()
    assert (table["tp"] + table["fp"]).nunique() == 1  # the same kept detections at every threshold
    assert (np.diff(table["tp"]) <= 0).all() and (np.diff(table["ar"]) <= 1e-12).all()
    assert table["tp"].iloc[0] > table["tp"].iloc[-1]
    row = table[table["threshold"] == 0.5].iloc[0]
    single = evaluate(gt, dets, overlap="iobb", thresholds=(0.5,))
    assert row["ap"] == pytest.approx(single.ap, abs=1e-12) and row["ar"] == pytest.approx(single.ar, abs=1e-12)
    assert row["tp:b"] == single.per_class["b"]["tp"]


def test_bootstrap_contains_estimate_and_is_deterministic():
    gt, dets = random_case(4, n_images=40)
    point = evaluate(gt, dets)
    b1 = bootstrap(gt, dets, n=200, seed=7)
    b2 = bootstrap(gt, dets, n=200, seed=7)
    b3 = bootstrap(gt, dets, n=200, seed=8)
    assert b1.ap[0] < point.ap < b1.ap[1] and b1.ar[0] < point.ar < b1.ar[1]
    for name in "abc":
        lo, hi = b1.per_class[name]["ap"]
        assert lo <= point.per_class[name]["ap"] <= hi
    assert b1.to_dict() == b2.to_dict()
    np.testing.assert_array_equal(b1.samples_ap, b2.samples_ap)
    assert not np.array_equal(b1.samples_ap, b3.samples_ap)
    perfect = make_dets([(a["image_id"], a["category_id"], a["bbox"], 0.9) for a in gt["annotations"]])
    assert bootstrap(gt, perfect, n=50).ap == pytest.approx((1.0, 1.0), abs=1e-12)


def test_bootstrap_replicate_equals_evaluating_the_resampled_images():
    """A replicate (weights) equals evaluate() on the drawn images duplicated under new ids (distinct scores)."""
    gt, dets = random_case(5, n_images=12, n_dets=80)
    rng = np.random.default_rng(0)
    for d in dets:
        d["score"] = float(rng.random())
    counts = resample_images(12, 3, seed=11)
    boot = bootstrap(gt, dets, n=3, seed=11)
    for r in range(3):
        images, anns, rows = [], [], []
        for img in range(1, 13):
            for copy in range(int(counts[r, img - 1])):
                new = img * 100 + copy
                images.append(new)
                anns += [(new, a["category_id"], a["bbox"]) for a in gt["annotations"] if a["image_id"] == img]
                rows += [(new, d["category_id"], d["bbox"], d["score"]) for d in dets if d["image_id"] == img]
        direct = evaluate(make_gt(images, anns, cats=(1, 2, 3)), make_dets(rows))
        assert boot.samples_ap[r] == pytest.approx(direct.ap, abs=1e-9)
        assert boot.samples_ar[r] == pytest.approx(direct.ar, abs=1e-9)
