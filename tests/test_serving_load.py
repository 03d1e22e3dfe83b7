"""Serving under load, in process (issue 25): the inference thread of :mod:`mdfnet.serving.runtime` scores the
requests waiting for it in one pass and gives each its own answer or error; no per-request leak; the served copy
without the mask branch gives the same boxes; torch threads and CPUs as the chart and the pod set them; several
requests cleaned in one pass as each alone. A random-init MDF-Net at 64 px (the plumbing is under test, not the
weights); the benchmark against a real server is in ``test_serving_server.py``."""

from __future__ import annotations

import base64
import gc
import io
import threading
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from mdfnet.data import schema
from mdfnet.data.preprocess import ClinicalTransform
from mdfnet.serving import runtime
from mdfnet.serving.inputs import FIELDS, RequestError, clean_request, clean_requests
from mdfnet.serving.predictor import ModelSourceError, Predictor
from mdfnet.serving.runtime import InferenceRunner

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["model.backbone=mobilenet_v3_small", "model.backbone_stride=8", "model.mask_head_channels=16",
        "model.box_score_thresh=0.0", "model.anchor_sizes=[8,16,32,64]", "model.rpn_pre_nms_top_n_test=50",
        "model.rpn_post_nms_top_n_test=20", "model.box_detections_per_img=5"]
"""Score threshold 0: every image keeps its 5 detections."""
BOX = ["score", "xmin", "ymin", "xmax", "ymax"]
MEDIAN = {"age": 60.0, "temperature": 98.2, "heartrate": 85.0, "resprate": 18.0, "o2sat": 97.0, "sbp": 130.0,
          "dbp": 75.0, "pain": 3.0, "acuity": 3.0}


def tiny_predictor(use_mask: bool = False, seed: int = 0) -> Predictor:
    from mdfnet.model import build_model
    from mdfnet.training import config_from_sources

    cfg = config_from_sources(None, [*TINY, f"model.use_mask={str(use_mask).lower()}"])
    torch.manual_seed(seed)
    model = build_model(cfg.model, len(schema.NUMERIC_FEATURES), len(schema.CATEGORICAL_FEATURES), 64)
    transform = ClinicalTransform(MEDIAN, MEDIAN, {f: 10.0 for f in MEDIAN})
    meta = {"image_size": 64, "classes": list(schema.CLASSES), "numeric_features": list(schema.NUMERIC_FEATURES),
            "categorical_features": list(schema.CATEGORICAL_FEATURES), "transform": transform.to_dict()}
    return Predictor(model.eval(), cfg, meta)


def request(i: int, rows: int = 1, **values) -> pd.DataFrame:
    """``rows`` studies, each a different 80x72 PNG and different triage values; ``values`` override them."""
    from PIL import Image

    rng = np.random.default_rng(i)
    records = []
    for r in range(rows):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (72, 80), dtype=np.uint8)).save(buf, "PNG")
        records.append({"study": f"s{i}-{r}", "image": base64.b64encode(buf.getvalue()).decode(), "age": 40 + i,
                        "gender": "F" if i % 2 else "male", "temperature": 97.0 + 0.3 * i, "heartrate": 70 + i,
                        "resprate": 14 + i % 5, "o2sat": 99 - i % 4, "sbp": 120 + i, "dbp": 70, "pain": "8-10",
                        "acuity": 1 + i % 5, **values})
    return pd.DataFrame(records)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return tiny_predictor()


def _same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert len(got) == len(want) > 0
    assert got["study"].tolist() == want["study"].tolist() and got["label"].tolist() == want["label"].tolist()
    np.testing.assert_allclose(got[BOX].to_numpy(), want[BOX].to_numpy(), atol=1e-3)  # px of an 80 px image


def _concurrently(runner: InferenceRunner, frames: list[pd.DataFrame]) -> list[pd.DataFrame | Exception]:
    """Every frame submitted from its own thread while the inference thread is held busy, so that all of them
    are waiting when it is free again."""
    gate = threading.Event()
    busy = threading.Thread(target=runner.call, args=(gate.wait,))
    busy.start()
    while not runner.running:
        time.sleep(0.01)
    results: list = [None] * len(frames)

    def submit(k: int) -> None:
        try:
            results[k] = runner.predict(frames[k], 0.0)
        except Exception as e:
            results[k] = e

    threads = [threading.Thread(target=submit, args=(k,)) for k in range(len(frames))]
    for t in threads:
        t.start()
    while runner._queue.qsize() < len(frames):
        time.sleep(0.01)
    gate.set()
    for t in [busy, *threads]:
        t.join(60)
    return results


def test_waiting_requests_are_scored_in_one_pass_each_with_its_own_answer_or_error(predictor):
    frames = [request(k) for k in range(5)] + [request(5, o2sat=250), request(6, rows=2)]
    solo = [predictor.predict(f) for f in frames[:5]] + [None, predictor.predict(frames[6])]
    runner = InferenceRunner(predictor, batch=8)
    results = _concurrently(runner, frames)
    assert (runner.passes, runner.scored) == (1, 7)  # 5 + 1 + 2 rows; the bad one is refused before the model
    for k in (0, 1, 2, 3, 4, 6):
        _same(results[k], solo[k])
    assert set(results[6]["study"]) == {"s6-0", "s6-1"}
    assert isinstance(results[5], RequestError)
    assert str(results[5]) == "row 0: o2sat=250.0 is outside the plausible range 50-100"


def test_a_pass_takes_at_most_max_batch_rows(predictor):
    runner = InferenceRunner(predictor, batch=2)
    frames = [request(k) for k in range(3)] + [request(3, rows=3), request(4)]
    results = _concurrently(runner, frames)
    # [0, 1], [2] (the 3-row request would exceed 2), [3] alone (larger than a pass), [4]
    assert (runner.passes, runner.scored) == (4, 5)
    assert [len(r) for r in results] == [5, 5, 5, 15, 5]


def test_a_fault_of_the_pass_reaches_every_request_of_it_and_the_thread_goes_on(predictor, monkeypatch):
    runner = InferenceRunner(predictor, batch=8)
    with monkeypatch.context() as m:
        m.setattr(predictor, "predict_many", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("out of memory")))
        results = _concurrently(runner, [request(0), request(1)])
    assert [str(r) for r in results] == ["out of memory"] * 2
    assert len(runner.predict(request(2))) == 5


def test_a_pass_waits_a_little_for_as_many_requests_as_the_last_one_had(predictor):
    """After a pass of 3, a lone request waits (up to half that pass's time, at most ``linger_s``) for two more
    and all three share one pass; after a one-request pass a lone request waits for nothing; a window that
    closes with fewer requests scores those it has."""
    runner = InferenceRunner(predictor, batch=8, linger_s=5.0)
    runner.predict(request(0))  # the thread runs, warm
    runner._last = (3, 10.0)  # as after a pass of 3 that took 10 s: a 5 s window
    results: list = []
    threads = [threading.Thread(target=lambda k=k: results.append(runner.predict(request(k)))) for k in (1, 2, 3)]
    passes = runner.passes
    threads[0].start()
    time.sleep(0.3)  # well inside the window, well after the first request is queued
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(30)
    assert (runner.passes - passes, len(results)) == (1, 3)

    runner._last = (1, 10.0)
    t0 = time.monotonic()
    runner.predict(request(4))
    assert time.monotonic() - t0 < 2.0  # no window after a one-request pass

    runner._last = (3, 0.6)  # a 0.3 s window that closes with one request
    t0 = time.monotonic()
    runner.predict(request(5))
    assert 0.3 <= time.monotonic() - t0 and runner._last[0] == 1


def test_the_inference_thread_ends_when_idle_and_starts_again(predictor):
    runner = InferenceRunner(predictor, idle_s=0.05)
    assert not runner.running
    assert len(runner.predict(request(0))) == 5 and runner.running
    deadline = time.monotonic() + 5
    while runner.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not runner.running
    assert len(runner.predict(request(1))) == 5 and runner.passes == 2


UNCOUNTED = ("weakref.ReferenceType", "builtin_function_or_method")
"""pandas keeps weak references to the blocks that share a long-lived array's values and prunes the dead ones
only when 500 have piled up (copy-on-write bookkeeping): bounded, so not counted as kept."""


def _kept_per_request(score, n: int = 40, warmup: int = 8) -> dict[str, float]:
    """Objects (by type) still alive per request after ``n`` requests, each a new frame as the server parses one;
    torch tensors and DataFrames are among them (gc tracks them), numpy buffers behind them are not. The objects
    alive before are frozen, so only the requests' survivors are counted (and quickly)."""
    frames = [request(k) for k in range(4)]
    for k in range(warmup):
        score(frames[k % 4].copy())
    gc.collect()
    gc.freeze()
    try:
        for k in range(n):
            score(frames[k % 4].copy())
        gc.collect()
        grown = Counter(f"{type(o).__module__}.{type(o).__qualname__}".removeprefix("builtins.")
                        for o in gc.get_objects())
    finally:
        gc.unfreeze()
    return {t: c / n for t, c in grown.items() if t not in UNCOUNTED and c / n >= 0.1}


def test_nothing_is_kept_per_request_and_a_kept_request_would_be_caught(predictor):
    """The served path (the inference thread, one pass per request) keeps nothing per request; the same measure
    flags a scorer that keeps each request and its answer."""
    runner = InferenceRunner(predictor)
    threads = threading.active_count()
    assert _kept_per_request(lambda f: runner.predict(f, 0.0)) == {}
    assert threading.active_count() <= threads + 1  # the one inference thread

    kept = []

    def leaky(frame):
        out = runner.predict(frame, 0.0)
        kept.append((frame, out))
        return out

    leaked = _kept_per_request(leaky)
    assert leaked.get("pandas.DataFrame", 0) >= 2 and leaked.get("tuple", 0) >= 1, leaked


def test_the_served_copy_without_the_mask_branch_gives_the_same_boxes(tmp_path):
    with_mask = tiny_predictor(use_mask=True, seed=1)
    frame = request(0, rows=2)
    want = with_mask.predict(frame)
    blank = ([torch.zeros(1, 64, 64, dtype=torch.uint8)],
             {"numeric": torch.zeros(1, len(schema.NUMERIC_FEATURES)), "categorical": torch.ones(1, 1, dtype=torch.int64)})
    with torch.no_grad():
        assert "masks" in with_mask.model(*blank)[0]
    served = with_mask.without_masks()
    assert served is with_mask and not served.model.roi_heads.has_mask()
    _same(served.predict(frame), want)
    with torch.no_grad():
        assert "masks" not in served.model(*blank)[0]
    with pytest.raises(ModelSourceError, match="mask branch was dropped"):
        served.write_bundle(tmp_path / "bundle")
    tiny_predictor().without_masks().write_bundle(tmp_path / "no-mask-model")  # nothing dropped: fine


def test_configure_threads_takes_the_env_and_never_raises_torch_above_the_cpus(monkeypatch):
    n = torch.get_num_threads()
    try:
        monkeypatch.setenv(runtime.THREADS_ENV, "2")
        assert runtime.configure_threads() == 2 == torch.get_num_threads()
        monkeypatch.delenv(runtime.THREADS_ENV)
        torch.set_num_threads(1)
        assert runtime.configure_threads() == 1 == torch.get_num_threads()  # a process that set 1 keeps 1
        monkeypatch.setattr(runtime, "available_cpus", lambda: 1)
        torch.set_num_threads(2)
        assert runtime.configure_threads() == 1 == torch.get_num_threads()  # capped at the pod's CPUs
        for bad in ("0", "two", "-1"):
            monkeypatch.setenv(runtime.THREADS_ENV, bad)
            with pytest.raises(ValueError, match=f"MDFNET_SERVING_THREADS='{bad}': expected a whole number >= 1"):
                runtime.configure_threads()
    finally:
        torch.set_num_threads(n)


@pytest.mark.parametrize(("files", "limit"), [
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_the_cgroup_cpu_limit_caps_the_cpus(tmp_path, monkeypatch, files, limit):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(8)))
    assert runtime.cgroup_cpu_limit(tmp_path) == limit
    assert runtime.available_cpus(tmp_path) == (max(1, int(limit)) if limit else 8)


def test_max_batch_env(monkeypatch):
    assert runtime.max_batch() == runtime.DEFAULT_MAX_BATCH == 8
    monkeypatch.setenv(runtime.MAX_BATCH_ENV, "3")
    assert runtime.max_batch() == 3 == InferenceRunner(None).max_batch  # type: ignore[arg-type]
    monkeypatch.setenv(runtime.MAX_BATCH_ENV, "0")
    with pytest.raises(ValueError, match="MDFNET_SERVING_MAX_BATCH='0'"):
        runtime.max_batch()


def test_requests_cleaned_together_are_cleaned_as_each_alone():
    frames = [request(0, rows=2), request(1, heartrate="900"), request(2, pain="unable", gender=None),
              request(3).drop(columns=["acuity"]), request(4, rows=3, temperature="37.5")]
    together = clean_requests(frames)
    for frame, got in zip(frames, together, strict=True):
        try:
            want = clean_request(frame)
        except RequestError as e:
            assert isinstance(got, RequestError) and str(got) == str(e)
            continue
        pd.testing.assert_frame_equal(got, want)
    assert str(together[1]) == "row 0: heartrate=900.0 is outside the plausible range 20-300"
    assert "missing field(s) ['acuity']" in str(together[3])
    assert together[4]["temperature"].tolist() == [99.5] * 3 and list(together[4].columns) == list(FIELDS)
    assert np.isnan(together[2].loc[0, "pain"]) and together[2].loc[0, "gender"] is None
    assert together[0]["pain"].tolist() == [9.0, 9.0] and together[0]["gender"].tolist() == ["M", "M"]


def test_freezing_the_loaded_objects_takes_them_out_of_full_collections():
    """What :func:`runtime.freeze_loaded_objects` does when a model loads: every object alive now (this test
    process's modules, torch, pandas) is frozen, so a full collection no longer walks them; undone afterwards."""
    try:
        frozen = runtime.freeze_loaded_objects()
        # Frozen objects are still freed when their reference count drops (a thread left by an earlier test may drop
        # a few between these lines: CI saw 2), so the count can only shrink, and by little.
        assert frozen > 10_000 and frozen - 1_000 <= gc.get_freeze_count() <= frozen
        t0 = time.process_time()
        gc.collect()
        assert time.process_time() - t0 < 0.05  # ~0.27 s over a served model's ~580,000 objects unfrozen
    finally:
        gc.unfreeze()
