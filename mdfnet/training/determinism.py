"""Determinism: a training order that depends only on ``(seed, epoch)``, seeding, and every RNG state as
``weights_only``-loadable values.

Exact resume: the training order is a permutation that depends only on ``(seed, epoch)`` (:class:`EpochSampler`),
a resumed epoch skips the batches already done, and all RNG states are restored, so on CPU ``2 steps + resume to
4`` gives bit-identical weights to 4 straight steps, given the same torch build and the same number of intra-op
threads (``torch.get_num_threads()``: another count changes the order of float sums). CUDA with
``cudnn.benchmark`` is fast, not bit-exact.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """A permutation of ``range(n)`` that depends only on ``(seed, epoch)``, minus its first ``start`` items.

    ``set_epoch(epoch, start)`` before each pass; resuming an epoch after ``k`` batches is ``start = k·batch``.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch, self.start = n, seed, 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def permutation(self, epoch: int) -> list[int]:
        (state,) = np.random.SeedSequence([self.seed, epoch]).generate_state(1)
        g = torch.Generator().manual_seed(int(state))
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        return iter(self.permutation(self.epoch)[self.start:])

    def __len__(self) -> int:
        return max(0, self.n - self.start)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: numpy and random follow the worker's torch seed."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def get_rng_state() -> dict[str, Any]:
    """All RNG states as weights_only-loadable values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, pystate, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(pystate, dtype=torch.int64), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():  # the GPUs visible now may be fewer than when it was saved
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss_next"]))
