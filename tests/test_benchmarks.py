"""Smoke tests of the training benchmark (benchmarks/bench_train.py, benchmarks/bench_loader.py) at 64 px.

The main path runs in-process at the smallest settings (batch 2, 1 step, 1 round, rows baseline, mdf and
torchvision, the loader with 2 workers on the tiny preprocessed folder) and its JSON is checked: every row and
the loader present, every figure positive and finite, the stock torchvision model trained on its own loss dict.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mdfnet.model import loss_names

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def bench(monkeypatch):
    """``bench_train`` imported as the script imports its sibling ``bench_loader`` (benchmarks/ on sys.path)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_train

    return bench_train


def positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_main_path_writes_every_row_loader_and_target(bench, tiny_preprocessed, tmp_path):
    out = tmp_path / "bench.json"
    bench.main(["--size", "64", "--batch", "2", "--steps", "1", "--warmup", "1", "--rounds", "1", "--device", "cpu",
                "--variants", "baseline,mdf,torchvision", "--data", str(tiny_preprocessed), "--loader-workers", "2",
                "--loader-batches", "2", "--json", str(out)])
    data = json.loads(out.read_text())
    rows = {r["variant"]: r for r in data["results"]}
    assert list(rows) == ["baseline", "mdf", "torchvision"]
    for r in rows.values():
        for key in ("params", "train_images_per_s", "train_ratio", "infer_images_per_s", "infer_ratio", "loader_ratio"):
            assert positive(r[key]), (r["variant"], key, r[key])
    assert rows["baseline"]["train_ratio"] == 1.0
    assert rows["torchvision"]["input"] == "float32 [3,S,S]" and rows["mdf"]["input"] == "uint8 [1,S,S]"
    expected = sorted(loss_names(True))  # masks on by default: 5 losses, the stock model's own
    assert rows["torchvision"]["loss_keys"] == expected and rows["mdf"]["loss_keys"] == expected
    loader = data["loader"]
    assert positive(loader["images_per_s"]) and loader["startup_s"] >= 0 and loader["workers"] == 2
    assert loader["batches_per_round"] == 2 and loader["with_masks"] and loader["image_size"] == 64
    assert set(data["targets"]) == {"baseline_vs_torchvision", "mdf_vs_baseline", "loader_vs_train"}
    assert all(positive(t["value"]) and isinstance(t["met"], bool) for t in data["targets"].values())
    assert math.isclose(data["targets"]["mdf_vs_baseline"]["value"], rows["mdf"]["train_ratio"])
    assert len(data["loadavg"]["start"]) == 3


def test_synthetic_batch_is_what_the_loader_yields(bench, tiny_preprocessed):
    from mdfnet.data import MDFDataset

    images, clinical, targets = bench.synthetic_batch(2, 64, use_mask=True)
    image, item_clinical, target = MDFDataset(tiny_preprocessed, "train")[0]
    assert images[0].dtype == image.dtype == torch.uint8 and images[0].shape == image.shape == (1, 64, 64)
    assert clinical["numeric"].shape == (2, item_clinical["numeric"].shape[0])
    assert set(targets[0]) == set(target) and targets[0]["masks"].dtype == target["masks"].dtype
    stock_images, _, _ = bench.stock_input((images, clinical, targets))
    assert stock_images[0].shape == (3, 64, 64) and stock_images[0].dtype == torch.float32
    assert torch.equal(stock_images[0][2], images[0][0].float() / 255)


def test_stock_faster_rcnn_trains_on_its_four_losses(bench):
    from mdfnet.model import ModelConfig
    from mdfnet.training.config import TrainConfig, TrainSection
    from mdfnet.training.loop import optimiser_step

    cfg = TrainConfig(model=ModelConfig(variant="baseline", use_mask=False, anchor_sizes=(8, 16, 32)),
                      train=TrainSection(device="cpu", amp="off"))
    parts = bench.stock_parts(cfg, 64)
    assert type(parts.model.net).__name__ == "FasterRCNN"
    before = [p.detach().clone() for p in parts.model.parameters()]
    batch = bench.stock_input(bench.synthetic_batch(2, 64, use_mask=False))
    parts.model.train()
    losses, total = optimiser_step(parts, batch, 0.0, 1)
    assert sorted(losses) == sorted(loss_names(False)) and math.isfinite(total)
    assert any(not torch.equal(b, p) for b, p in zip(before, parts.model.parameters(), strict=True))
    parts.model.eval()
    with torch.no_grad():
        detections = parts.model(batch[0])
    assert len(detections) == 2 and detections[0]["boxes"].shape[-1] == 4


def test_loader_folder_is_made_once_and_measured(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_loader

    folder = bench_loader.prepare_folder(tmp_path / "cache", 32, studies=16)
    assert (folder / ".complete").is_file() and (folder / "images.npy").is_file()
    stamp = (folder / "images.npy").stat().st_mtime_ns
    assert bench_loader.prepare_folder(tmp_path / "cache", 32, studies=16) == folder
    assert (folder / "images.npy").stat().st_mtime_ns == stamp
    summary = bench_loader.main(["--size", "32", "--batch", "2", "--rounds", "2", "--loader-workers", "0",
                                 "--loader-batches", "100", "--data-cache", str(tmp_path / "cache"), "--studies", "16",
                                 "--device", "cpu"])
    assert positive(summary["images_per_s"]) and len(summary["rounds"]) == 2
    assert 1 <= summary["batches_per_round"] <= summary["split_images"] // 2 - 1
