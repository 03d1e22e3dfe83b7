"""DataLoader throughput as training builds it, on a real preprocessed folder.

    python benchmarks/bench_loader.py [--size 512] [--batch 4] [--workers 2] [--batches 16] [--rounds 3]
                                      [--data DIR | --data-cache DIR [--studies 96]] [--no-mask] [--device auto]

What is measured: the train split of a preprocessed folder (:class:`mdfnet.data.MDFDataset`, masks as training
loads them: on unless ``--no-mask``) through :func:`mdfnet.training.loop._loader`, the DataLoader that training
builds (``train.batch_size`` = ``--batch``, ``train.num_workers`` = ``--workers``, ``EpochSampler``, persistent
workers, pinned memory when the device is CUDA). Each batch is uint8 ``[1,S,S]`` images, the clinical tensors
and the targets, as ``optimiser_step`` receives them. No model runs: this is the rate the input pipeline can feed.

How: the folder is ``--data`` or one made with the project's own pipeline (:func:`prepare_folder`: synthetic
sources with ``--studies`` studies, ``join``, ``preprocess`` at ``--size``), cached under ``--data-cache`` so
reruns skip it. The first ``iter()`` (worker start-up and the first batch) is timed once and reported apart as
``startup_s``. Each round then starts a new epoch of exactly ``--batches + 1`` full batches (the sampler's
``start`` cuts the rest, so the workers are idle once it ends and cannot steal CPU from what runs next), takes
one batch untimed (the workers refill their queues after the pause) and times the next ``--batches``. The figure
is the median images/s over the rounds. ``--batches`` is capped at what one epoch of the split holds.
:mod:`bench_train` interleaves these rounds with its training rounds and compares the two rates.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mdfnet.data import MDFDataset
from mdfnet.training.config import TrainConfig, TrainSection
from mdfnet.training.device import resolve_device
from mdfnet.training.loop import _loader

DEFAULT_CACHE = Path(tempfile.gettempdir()) / "mdfnet-bench-data"
DEFAULT_STUDIES = 96
"""96 synthetic studies give about 76 train readings: 19 batches of 4 per epoch."""


def prepare_folder(cache: Path, size: int, studies: int = DEFAULT_STUDIES, seed: int = 0) -> Path:
    """A preprocessed folder at ``size`` px from the project's synthetic generator (JPEGs of about ``size`` px),
    ``join`` and ``preprocess``; made once under ``cache`` (``pre-<studies>-<seed>-<size>``), then reused."""
    from mdfnet.config import load_config
    from mdfnet.data.join import join
    from mdfnet.data.preprocess import PreprocessConfig, preprocess
    from mdfnet.data.synthetic import generate

    pre = cache / f"pre-{studies}-{seed}-{size}"
    if (pre / ".complete").is_file():
        return pre
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        sources, joined = Path(tmp) / "sources", Path(tmp) / "joined"
        generate(sources, n_studies=studies, seed=seed, image_size=max(size, 32))
        join(sources, joined)
        preprocess(joined, pre, load_config(PreprocessConfig, None, [f"image_size={size}", "workers=2"]))
    (pre / ".complete").touch()
    return pre


class LoaderRunner:
    """The training DataLoader over ``data_dir``'s train split, with timed rounds (module docstring)."""

    def __init__(self, data_dir: Path, batch: int, workers: int, use_mask: bool, device: torch.device,
                 batches: int) -> None:
        self.ds = MDFDataset(data_dir, "train", with_masks=use_mask)
        cfg = TrainConfig(train=TrainSection(batch_size=batch, num_workers=workers))
        self.loader = _loader(self.ds, cfg, device)
        self.batch, self.workers, self.epoch = batch, workers, 0
        self.batches = min(batches, len(self.ds) // batch - 1)
        if self.batches < 1:
            raise ValueError(f"{data_dir}: the train split holds {len(self.ds)} images, fewer than the 2 full batches "
                             f"of {batch} a timed round needs")
        t0 = time.perf_counter()
        self._epoch(1)
        next(self._it)
        self.startup_s = time.perf_counter() - t0
        self.rounds: list[float] = []

    def _epoch(self, batches: int) -> None:
        """Start a new epoch of exactly ``batches`` full batches."""
        self.loader.sampler.set_epoch(self.epoch, start=len(self.ds) - batches * self.batch)
        self.epoch += 1
        self._it = iter(self.loader)

    def timed_round(self) -> float:
        """Images/s of ``self.batches`` batches after one untimed batch; appended to ``self.rounds``."""
        self._epoch(self.batches + 1)
        next(self._it)
        images = 0
        t0 = time.perf_counter()
        for _ in range(self.batches):
            images += len(next(self._it)[0])
        ips = images / (time.perf_counter() - t0)
        self.rounds.append(ips)
        return ips

    def close(self) -> None:
        """Shut the persistent workers down."""
        self._it = None
        self.loader._iterator = None  # the DataLoader keeps its persistent workers' iterator here

    def summary(self) -> dict[str, Any]:
        return {"images_per_s": statistics.median(self.rounds) if self.rounds else float("nan"),
                "startup_s": self.startup_s, "workers": self.workers, "batch": self.batch,
                "batches_per_round": self.batches, "rounds": list(self.rounds), "data_dir": str(self.ds.root),
                "split_images": len(self.ds), "image_size": self.ds.image_size, "with_masks": self.ds.with_masks,
                "pin_memory": bool(self.loader.pin_memory)}


def add_loader_args(ap: argparse.ArgumentParser) -> None:
    """The loader's options (shared with :mod:`bench_train`)."""
    ap.add_argument("--data", type=Path, default=None,
                    help="preprocessed folder to load (its image size must be --size); default: make one in --data-cache")
    ap.add_argument("--data-cache", type=Path, default=DEFAULT_CACHE, help="where generated folders are kept")
    ap.add_argument("--studies", type=int, default=DEFAULT_STUDIES, help="synthetic studies of a generated folder")
    ap.add_argument("--loader-workers", type=int, default=TrainSection().num_workers,
                    help="DataLoader workers (train.num_workers)")
    ap.add_argument("--loader-batches", type=int, default=16, help="timed batches per round")


def open_loader(args: argparse.Namespace, device: torch.device) -> LoaderRunner:
    """The :class:`LoaderRunner` for ``args`` (``--data`` or a cached generated folder at ``--size``)."""
    data = args.data if args.data is not None else prepare_folder(args.data_cache, args.size, args.studies)
    runner = LoaderRunner(data, args.batch, args.loader_workers, not args.no_mask, device, args.loader_batches)
    if runner.ds.image_size != args.size:
        runner.close()
        raise SystemExit(f"{data} holds {runner.ds.image_size} px images but --size is {args.size}")
    return runner


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-mask", action="store_true", help="load without masks (training with model.use_mask=false)")
    ap.add_argument("--device", default="auto", help="pins memory when CUDA (auto | cpu | cuda[:N])")
    add_loader_args(ap)
    args = ap.parse_args(argv)
    runner = open_loader(args, resolve_device(args.device))
    try:
        for _ in range(args.rounds):
            runner.timed_round()
    finally:
        runner.close()
    s = runner.summary()
    print(f"loader: {s['images_per_s']:.1f} img/s (median of {args.rounds} rounds x {s['batches_per_round']} batches "
          f"of {s['batch']}, {s['workers']} workers, {s['image_size']} px, masks {'on' if s['with_masks'] else 'off'}); "
          f"start-up {s['startup_s']:.2f} s; {s['data_dir']}")
    return s


if __name__ == "__main__":
    main()
