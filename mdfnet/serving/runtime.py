"""How the served model uses its CPUs: torch threads per server worker, and one inference thread per worker that
scores the requests waiting for it together.

Why (issue 25): MLflow's scoring server runs every request's ``predict`` in a thread of its own
(``asyncio.to_thread``: up to CPUs + 4 at once), each using all of torch's intra-op threads. On 2 cores, 8
concurrent clients got less throughput than one (18 vs 27 requests/s) and a p99 of 680 ms. Here:

- :data:`THREADS_ENV` (``MDFNET_SERVING_THREADS``): torch intra-op threads of one server worker
  (:func:`configure_threads`). Unset: torch's count capped at the CPUs this process may use (its CPU affinity
  and cgroup CPU quota, i.e. a pod's CPU limit; torch's own default counts the node's cores), right for one
  worker; with ``--workers N`` set it to CPUs / N (the Helm chart does).
- :data:`MAX_BATCH_ENV` (``MDFNET_SERVING_MAX_BATCH``): the most studies scored in one pass (default
  :data:`DEFAULT_MAX_BATCH`); a request with more rows is scored alone.
- :class:`InferenceRunner`: requests are queued to one thread that owns the model; whatever is queued when it is
  free is scored in one pass (:meth:`~mdfnet.serving.predictor.Predictor.predict_many`: the clinical values
  cleaned once, the images through the model in shared batches). A lone request waits for nothing; under load
  the work per request shrinks instead of threads fighting over the cores. After a pass of k requests the next
  one waits up to half that pass's time (at most :data:`MAX_LINGER_S`) until k are there: the clients just
  answered are about to send again, and without the wait 8 clients got passes of 5 and 1 in turn (MLflow's
  executor runs 6 requests at once on 2 cores) instead of 6 (45-48 vs 58-63 requests/s, measured under shared
  load). A bad request gets its own error, the others of its pass are scored. The thread ends after :data:`IDLE_S` without work (and starts again with the
  next request), so a model that is no longer used can be freed.
- :func:`freeze_loaded_objects`: the objects of the loaded model and its libraries are left out of Python's
  cyclic garbage collector, whose full passes over them were the slowest requests.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mdfnet.serving.predictor import Predictor

log = logging.getLogger(__name__)

THREADS_ENV = "MDFNET_SERVING_THREADS"
"""torch intra-op threads per server worker (module docstring)."""
MAX_BATCH_ENV = "MDFNET_SERVING_MAX_BATCH"
"""The most studies one pass of the inference thread scores (module docstring)."""
DEFAULT_MAX_BATCH = 8
IDLE_S = 30.0
"""Seconds without a request after which the inference thread ends (the next request starts it again)."""
MAX_LINGER_S = 0.05
"""The longest a pass waits for the requests its predecessor had (module docstring)."""
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}={raw!r}: expected a whole number >= 1")
    return value


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (cgroup v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us``), or ``None`` when there is none. A pod's ``resources.limits.cpu`` is this quota."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: its affinity, capped by the cgroup quota (rounded down, at least 1)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit(root)
    return max(1, min(n, math.floor(limit))) if limit else n


def configure_threads() -> int:
    """Set torch's intra-op threads for serving, process-wide, and return the count: ``$MDFNET_SERVING_THREADS``;
    unset, torch's count (its default, or ``OMP_NUM_THREADS``, or what the process set) capped at
    :func:`available_cpus`. Called once when the model loads, before any inference: threads that set different
    counts make torch/OpenMP slow (one request took 890 ms instead of 110 ms when the caller's thread had set 1
    and the inference thread 2)."""
    import torch

    current = torch.get_num_threads()
    want = _positive_int(THREADS_ENV, 0) or min(current, available_cpus())
    if want != current:
        torch.set_num_threads(want)
    return want


def max_batch() -> int:
    """``$MDFNET_SERVING_MAX_BATCH``, else :data:`DEFAULT_MAX_BATCH`."""
    return _positive_int(MAX_BATCH_ENV, DEFAULT_MAX_BATCH)


def freeze_loaded_objects() -> int:
    """Collect garbage once, then leave every object alive now (the loaded model, torch, pandas, MLflow: ~580,000
    objects in a served model's process) out of Python's cyclic garbage collector; returns how many. A full
    collection over them took ~270 ms of CPU on 2 cores and landed, every few hundred requests, inside one
    request's pass: the p99 of 8 concurrent clients was that pause (2026-12-05). Objects made by requests are
    collected as before; the frozen ones are still freed when their reference count drops."""
    import gc

    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@dataclass
class _Score:
    frame: pd.DataFrame
    threshold: float
    done: Future = field(default_factory=Future)


@dataclass
class _Call:
    fn: Callable[[], Any]
    done: Future = field(default_factory=Future)


class InferenceRunner:
    """The model's one inference thread (module docstring). :meth:`predict` from any number of threads; counts
    of passes and requests scored in :attr:`passes` / :attr:`scored`."""

    def __init__(self, predictor: Predictor, batch: int | None = None, idle_s: float = IDLE_S,
                 linger_s: float = MAX_LINGER_S) -> None:
        self.predictor = predictor
        self.max_batch = batch or max_batch()
        self.idle_s = idle_s
        self.linger_s = linger_s
        self.passes = 0
        self.scored = 0
        self._last = (1, 0.0)  # the last pass: requests, seconds
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def predict(self, frame: pd.DataFrame, score_threshold: float = 0.0) -> pd.DataFrame:
        """What :meth:`Predictor.predict <mdfnet.serving.predictor.Predictor.predict>` returns (or raises) for
        ``frame``, scored on the inference thread together with whatever else is waiting."""
        return self._submit(_Score(frame, float(score_threshold)))

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on the inference thread, alone (other model work, e.g. explanations, that must
        not compete with scoring for the cores)."""
        return self._submit(_Call(lambda: fn(*args, **kwargs)))

    @property
    def running(self) -> bool:
        return self._thread is not None

    def _submit(self, job: _Score | _Call) -> Any:
        with self._lock:  # put and start under one lock: the idle thread cannot leave a job behind
            self._queue.put(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="mdfnet-inference", daemon=True)
                self._thread.start()
        return job.done.result()

    def _next(self, carry: _Score | _Call | None) -> _Score | _Call | None:
        """The carried-over job, else the next one; ``None`` (and the thread marked gone) after ``idle_s``."""
        if carry is not None:
            return carry
        while True:
            try:
                return self._queue.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return None

    def _loop(self) -> None:
        carry = None
        while (job := self._next(carry)) is not None:
            carry = None
            if isinstance(job, _Call):
                _settle(job.done, job.fn)
                continue
            batch, carry = self._gather(job)
            self._score(batch)
            del batch, job

    def _gather(self, job: _Score) -> tuple[list[_Score], _Score | _Call | None]:
        """``job`` and the requests queued behind it, up to ``max_batch`` rows; while fewer requests than the last
        pass had are here, wait for them up to half that pass's time (at most ``linger_s``): under steady
        concurrent load the clients of the last pass are about to send again, and one pass for all of them costs
        less than a pass for the early one and another for the rest. After a one-request pass nothing waits."""
        batch, rows = [job], len(job.frame)
        want, seconds = self._last
        deadline = time.monotonic() + min(self.linger_s, seconds / 2)
        while rows < self.max_batch:
            wait = deadline - time.monotonic() if len(batch) < want else 0.0
            try:
                nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(nxt, _Call) or rows + len(nxt.frame) > self.max_batch:
                return batch, nxt
            batch.append(nxt)
            rows += len(nxt.frame)
        return batch, None

    def _score(self, batch: list[_Score]) -> None:
        start = time.monotonic()
        try:
            results = self.predictor.predict_many([j.frame for j in batch], [j.threshold for j in batch],
                                                  batch_size=self.max_batch)
        except Exception as e:  # a fault of the pass (not of a request): every request of it gets it
            log.exception("scoring %d request(s) failed", len(batch))
            results = [e] * len(batch)
        self.passes += 1
        self.scored += len(batch)
        self._last = (len(batch), time.monotonic() - start)
        for job, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                job.done.set_exception(result)
            else:
                job.done.set_result(result)


def _settle(done: Future, fn: Callable[[], Any]) -> None:
    try:
        done.set_result(fn())
    except Exception as e:
        done.set_exception(e)
