"""Training loop: exact resume, checkpoints, selection on validation AP only, NaN guard, seeds, config, CLI.

All runs use the ``tiny_preprocessed`` fixture (64 px, 8 train / 4 val / 4 test readings, some without boxes),
batch 2 (4 steps per epoch), MobileNetV3-small, no data-loader workers, CPU.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import mdfnet.data
import mdfnet.training.loop as loop_mod
from mdfnet.config import ConfigError, load_config
from mdfnet.metrics_log import read_jsonl
from mdfnet.model import build_model
from mdfnet.training import (
    EpochSampler,
    NonFiniteLossError,
    TrainConfig,
    TrainError,
    config_from_sources,
    load_model,
    predict,
    train,
)
from mdfnet.training.loop import finite_or_raise

TINY = [
    "model.backbone=mobilenet_v3_small", "model.mask_head_channels=16", "train.batch_size=2", "train.epochs=2",
    "train.num_workers=0", "train.device=cpu", "train.progress=false", "train.lr=0.01",
]
CHECKPOINT_KEYS = {
    "format", "model", "loss_weighting", "optimizer", "scheduler", "scaler", "rng", "step", "epoch",
    "batch_in_epoch", "best_val_ap", "best_epoch", "best_step", "epoch_sums", "epoch_steps", "epoch_time",
    "history", "config", "meta",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")

def tiny_cfg(*overrides: str) -> TrainConfig:
    return config_from_sources(None, TINY + list(overrides))


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def straight_run(tiny_preprocessed, tmp_path_factory):
    """6 optimiser steps in one go (epoch 1 = steps 1-4, epoch 2 stopped at step 6)."""
    out = tmp_path_factory.mktemp("straight")
    return train(tiny_cfg(), tiny_preprocessed, out, max_steps=6)


def test_fixture_split_sizes(tiny_preprocessed):
    sizes = {s: len(mdfnet.data.MDFDataset(tiny_preprocessed, s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 8, "val": 4, "test": 4}


def test_resume_mid_epoch_is_bit_identical(straight_run, tiny_preprocessed, tmp_path):
    """3 steps, stop (mid-epoch 1), resume to 6 (across the epoch boundary) == 6 straight steps, bit for bit."""
    first = train(tiny_cfg(), tiny_preprocessed, tmp_path, max_steps=3)
    assert first.steps == 3 and first.epochs_completed == 0
    ck3 = load(first.last_checkpoint)
    assert (ck3["step"], ck3["epoch"], ck3["batch_in_epoch"]) == (3, 0, 3)
    with pytest.raises(TrainError, match="already holds a run"):
        train(tiny_cfg(), tiny_preprocessed, tmp_path, max_steps=6)
    resumed = train(tiny_cfg(), tiny_preprocessed, tmp_path, max_steps=6, resume=True)
    assert resumed.steps == straight_run.steps == 6
    a, b = load(straight_run.last_checkpoint), load(resumed.last_checkpoint)
    assert_same_state(a["model"], b["model"])
    assert_same_state(a["loss_weighting"], b["loss_weighting"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    # the resumed epoch logs whole-epoch means: epoch 1's mean loss agrees with the straight run's
    full_a = [h for h in a["history"] if h["epoch"] == 1.0]
    full_b = [h for h in b["history"] if h["epoch"] == 1.0]
    assert full_a[0]["train/loss_total"] == pytest.approx(full_b[0]["train/loss_total"], rel=1e-6)
    # and it trained: weights moved away from their initialisation
    torch.manual_seed(0)
    init = build_model(tiny_cfg().model, 9, 1, 64).state_dict()
    moved = [k for k, v in init.items() if v.is_floating_point() and not torch.equal(v, b["model"][k])]
    assert "roi_heads.box_head.fc6.weight" in moved and "features.spatialiser.blocks.0.0.weight" in moved


def test_resume_refuses_changed_model(straight_run, tiny_preprocessed, tmp_path):
    import shutil

    shutil.copytree(straight_run.out_dir / "checkpoints", tmp_path / "checkpoints")
    with pytest.raises(TrainError, match=r"model\.fusion \('sum' in the checkpoint, 'hadamard' now\)"):
        train(tiny_cfg("model.fusion=hadamard"), tiny_preprocessed, tmp_path, max_steps=8, resume=True)
    with pytest.raises(TrainError, match="does not exist"):
        train(tiny_cfg(), tiny_preprocessed, tmp_path / "empty", resume=True)


def test_checkpoints_load_weights_only_with_documented_keys(straight_run, tiny_preprocessed):
    for path in (straight_run.last_checkpoint, straight_run.best_checkpoint):
        ck = load(path)
        assert set(ck) == CHECKPOINT_KEYS
        assert ck["format"] == "mdfnet-checkpoint-v1"
        assert ck["meta"]["image_size"] == 64 and ck["meta"]["numeric_features"] == list(mdfnet.data.schema.NUMERIC_FEATURES)
        assert ck["config"]["model"]["variant"] == "mdf" and ck["config"]["train"]["batch_size"] == 2
        assert set(ck["loss_weighting"]) == {f"log_vars.{n}" for n in ck["meta"]["loss_names"]}
        assert len(ck["meta"]["loss_names"]) == 5
    last = load(straight_run.last_checkpoint)
    assert (last["step"], last["epoch"], last["batch_in_epoch"]) == (6, 1, 2)
    # the run folder: resolved config saved, no temporary files left behind
    assert load_config(TrainConfig, straight_run.out_dir / "config.yaml") == tiny_cfg()
    assert sorted(p.name for p in (straight_run.out_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    # load_model rebuilds the same network in eval mode and predicts from images + clinical data only
    model, cfg = load_model(straight_run.last_checkpoint)
    assert not model.training and cfg == tiny_cfg()
    assert_same_state(model.state_dict(), last["model"])
    val = mdfnet.data.MDFDataset(tiny_preprocessed, "val")
    out = predict(model, val, batch_size=2)
    assert len(out) == len(val) and all(set(o) == {"boxes", "labels", "scores"} for o in out)
    assert all(o["boxes"].shape[0] <= 10 for o in out)


def test_history_and_metrics(straight_run):
    h = straight_run.history
    assert [e["epoch"] for e in h] == [1.0, 1.5]  # epoch 1 end, then the stop at step 6 (half of epoch 2)
    for e in h:
        assert 0.0 <= e["val/ap"] <= 1.0 and 0.0 <= e["val/ar"] <= 1.0
        assert math.isfinite(e["train/loss_total"]) and e["lr"] == pytest.approx(0.01)
        assert {"train/loss_mask", "train/log_var/loss_mask", "train/images_per_s"} <= set(e)
    aps = [e["val/ap"] for e in h]
    assert straight_run.best_epoch == int(np.argmax(aps)) + 1  # ties keep the earlier epoch
    assert straight_run.best_val_ap == pytest.approx(max(aps))


def test_best_checkpoint_selected_on_val_ap_and_test_split_never_opened(tiny_preprocessed, tmp_path, monkeypatch):
    """Scripted val APs 0.1, 0.5, 0.3 over 3 epochs: best.pt is epoch 2's state; only train/val are opened."""
    opened: list[str] = []
    real_dataset = loop_mod.MDFDataset

    class Recording(real_dataset):
        def __init__(self, root, split, *args, **kwargs):
            opened.append(split)
            super().__init__(root, split, *args, **kwargs)

    scripted = iter([0.1, 0.5, 0.3])
    scored: list[str] = []

    class FakeResult:
        def __init__(self, ap):
            self.ap, self.ar = ap, ap / 2

    def fake_evaluate(model, dataset, *args, **kwargs):
        scored.append(f"{dataset.split}:{len(dataset)}")
        return FakeResult(0.9 if dataset.split == "train" else next(scripted))

    monkeypatch.setattr(loop_mod, "MDFDataset", Recording)
    monkeypatch.setattr(loop_mod, "evaluate_split", fake_evaluate)
    res = train(tiny_cfg("train.batch_size=4", "train.epochs=3"), tiny_preprocessed, tmp_path)
    assert sorted(set(opened)) == ["train", "val"] and "test" not in opened
    n_val = len(real_dataset(tiny_preprocessed, "val"))
    n_train = min(128, len(real_dataset(tiny_preprocessed, "train")))  # eval.train_ap_images (default 128)
    assert scored == [f"val:{n_val}", f"train:{n_train}"] * 3  # train AP on a fixed subset, for the report
    assert [e["val/ap"] for e in res.history] == [0.1, 0.5, 0.3]
    assert [e["train/ap"] for e in res.history] == [0.9] * 3
    assert (res.best_epoch, res.best_val_ap, res.steps, res.epochs_completed) == (2, 0.5, 6, 3)
    best, last = load(res.best_checkpoint), load(res.last_checkpoint)
    assert (best["step"], best["epoch"], best["best_epoch"], best["best_val_ap"]) == (4, 2, 2, 0.5)
    assert (last["step"], last["best_epoch"], last["best_step"]) == (6, 2, 4)
    assert not torch.equal(best["model"]["roi_heads.box_head.fc6.weight"], last["model"]["roi_heads.box_head.fc6.weight"])


def test_nan_loss_stops_naming_step_and_term_and_keeps_last_good_state(tiny_preprocessed, tmp_path, monkeypatch):
    """A NaN ``loss_box_reg`` at step 6: clear error; last.pt still holds the state after step 4 (epoch 1 end)."""
    snapshots: list[dict] = []
    real_build = loop_mod.build_model

    def build_with_nan(*args, **kwargs):
        model = real_build(*args, **kwargs)
        forward = model.forward

        def poisoned(images, clinical=None, targets=None):
            if not model.training:
                return forward(images, clinical, targets)
            snapshots.append(copy.deepcopy(model.state_dict()))
            losses = forward(images, clinical, targets)
            if len(snapshots) == 6:
                losses["loss_box_reg"] = losses["loss_box_reg"] * float("nan")
            return losses

        model.forward = poisoned
        return model

    monkeypatch.setattr(loop_mod, "build_model", build_with_nan)
    with pytest.raises(NonFiniteLossError, match=r"step 6: loss term 'loss_box_reg' is nan.*last\.pt"):
        train(tiny_cfg(), tiny_preprocessed, tmp_path)
    last = load(tmp_path / "checkpoints" / "last.pt")
    assert last["step"] == 4 and last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert_same_state(last["model"], snapshots[4])  # the weights the 5th step started from


def test_finite_check_names_every_bad_term():
    ok = {"a": torch.tensor(1.0), "b": torch.tensor(2.0)}
    finite_or_raise(ok, torch.tensor(3.0), step=1)
    with pytest.raises(NonFiniteLossError, match=r"step 9: loss term 'b' is inf \(also total \(weighted\)\)"):
        finite_or_raise({"a": torch.tensor(1.0), "b": torch.tensor(math.inf)}, torch.tensor(math.inf), step=9)
    with pytest.raises(NonFiniteLossError, match=r"step 2: loss term 'total \(weighted\)' is nan"):
        finite_or_raise(ok, torch.tensor(math.nan), step=2)


def test_seeds_give_independent_runs_and_repeats_are_identical(tiny_preprocessed, tmp_path):
    runs = {name: load(train(tiny_cfg(f"seed={seed}"), tiny_preprocessed, tmp_path / name, max_steps=1).last_checkpoint)
            for name, seed in (("s0", 0), ("s0again", 0), ("s1", 1))}
    assert_same_state(runs["s0"]["model"], runs["s0again"]["model"])
    differing = [k for k, v in runs["s0"]["model"].items()
                 if v.is_floating_point() and not torch.equal(v, runs["s1"]["model"][k])]
    assert len(differing) > 0.5 * len(runs["s0"]["model"])


def test_epoch_sampler_depends_only_on_seed_and_epoch():
    a, b = EpochSampler(8, seed=0), EpochSampler(8, seed=0)
    assert a.permutation(0) == b.permutation(0) and sorted(a.permutation(0)) == list(range(8))
    assert a.permutation(0) != a.permutation(1)
    assert a.permutation(0) != EpochSampler(8, seed=1).permutation(0)
    a.set_epoch(3, start=6)
    assert list(a) == a.permutation(3)[6:] and len(a) == 2


def test_yaml_defaults_are_the_paper_settings():
    cfg = load_config(TrainConfig, "configs/train.yaml")
    assert cfg == TrainConfig()
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.epochs, cfg.train.weight_decay) == (1e-3, 4, 100, 0.0)
    assert (cfg.model.variant, cfg.model.fusion, cfg.model.backbone) == ("mdf", "sum", "mobilenet_v3_small")
    assert (cfg.model.out_channels, cfg.model.gender_embedding_dim, cfg.train.loss_weighting) == (64, 55, "uncertainty")
    assert len(cfg.data.features) == 10 and cfg.data.image_size is None


def test_config_overrides_and_errors():
    cfg = config_from_sources(None, [
        "model.variant=msf1d", "model.fusion=concat_conv", "model.backbone=resnet18", "model.use_mask=false",
        "train.batch_size=8", "train.epochs=3", "train.lr=0.02", "seed=7", "data.features=[gender,age]",
    ])
    # msf1d has no 3D fusion: the resolved config records fusion "none", whatever was asked
    assert (cfg.model.variant, cfg.model.fusion, cfg.model.backbone, cfg.model.use_mask) == ("msf1d", "none", "resnet18", False)
    assert config_from_sources(None, ["model.variant=msf3d", "model.fusion=concat_conv"]).model.fusion == "concat_conv"
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.train.lr, cfg.seed) == (8, 3, 0.02, 7)
    assert cfg.data.features == ["gender", "age"]
    bad = {
        "model.fusoin=sum": r"unknown config key\(s\) \['model.fusoin'\]",
        "model.fusion=max": r"model.fusion: value 'max' is not one of",
        "model.variant=fancy": r"model.variant: value 'fancy' is not one of",
        "model.fusion=none": r"model.fusion: value 'none' is not one of .* \(for model.variant='mdf'\)",
        "train.loss_weighting=max": r"train.loss_weighting: value 'max' is not one of \['uncertainty', 'sum'\]",
        "model.backbone=vgg16": r"unknown backbone 'vgg16'",
        "train.batch_size=two": r"train.batch_size: expected an integer, got 'two'",
        "train.batch_size=0": r"train.batch_size: expected an integer >= 1, got 0",
        "train.lr=-1": r"train.lr: expected a positive number, got -1",
        "train.device=tpu": r"train.device: expected 'auto', 'cpu' or 'cuda\[:N\]', got 'tpu'",
        "data.features=[age,shoe_size]": r"unknown feature\(s\) \['shoe_size'\]",
        "model.use_mask=maybe": r"model.use_mask: expected a boolean",
        "seed": r"not of the form key=value",
    }
    for text, pattern in bad.items():
        with pytest.raises(ConfigError, match=pattern):
            config_from_sources(None, [text])


def test_image_size_mismatch_and_bad_max_steps(tiny_preprocessed, tmp_path):
    with pytest.raises(TrainError, match="data.image_size=512 but .* holds 64 px images"):
        train(tiny_cfg("data.image_size=512"), tiny_preprocessed, tmp_path / "a")
    with pytest.raises(TrainError, match="max_steps must be >= 1, got 0"):
        train(tiny_cfg(), tiny_preprocessed, tmp_path / "b", max_steps=0)


def test_cli_train_then_resume(tiny_preprocessed, tmp_path):
    from mdfnet.cli import app

    out = tmp_path / "run"
    sets = [a for s in TINY + ["model.use_mask=false", "model.fusion=concat_conv"] for a in ("--set", s)]
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--data", str(tiny_preprocessed), "--out", str(out), *sets, "--max-steps", "2"])
    assert r.exit_code == 0, r.output
    assert "steps: 2 (0 epochs completed)" in r.output
    saved = load_config(TrainConfig, out / "config.yaml")
    assert (saved.model.fusion, saved.model.use_mask, saved.train.batch_size) == ("concat_conv", False, 2)
    assert load(out / "checkpoints" / "last.pt")["step"] == 2
    # --resume alone continues the same run from its saved config
    r = runner.invoke(app, ["train", "--data", str(tiny_preprocessed), "--out", str(out), "--resume", "--max-steps", "3"])
    assert r.exit_code == 0, r.output
    ck = load(out / "checkpoints" / "last.pt")
    assert ck["step"] == 3 and len(ck["meta"]["loss_names"]) == 4
    records = read_jsonl(out / "metrics.jsonl")
    assert [rec["kind"] for rec in records] == ["params", "tags", "metrics", "params", "tags", "metrics"]
    assert records[1]["tags"]["mdfnet.device"] == "cpu" and records[1]["tags"]["mdfnet.amp_dtype"] == "off"
    assert records[0]["params"]["model.fusion"] == "concat_conv"
    assert [rec["step"] for rec in records if rec["kind"] == "metrics"] == [2, 3]
    assert all("val/ap" in rec["metrics"] for rec in records if rec["kind"] == "metrics")
    # bad override and an existing run without --resume fail with a clear message and exit code 2
    r = runner.invoke(app, ["train", "--data", str(tiny_preprocessed), "--out", str(tmp_path / "x"),
                            "--set", "model.fusion=max"])
    assert r.exit_code == 2 and "model.fusion: value 'max' is not one of" in r.output
    r = runner.invoke(app, ["train", "--data", str(tiny_preprocessed), "--out", str(out), *sets])
    assert r.exit_code == 2 and "already holds a run" in r.output


def test_jsonl_logger_round_trip(tmp_path):
    from mdfnet.metrics_log import JsonlLogger

    path = tmp_path / "sub" / "metrics.jsonl"
    with JsonlLogger(path) as lg:
        lg.log_params({"model.fusion": "sum", "train.lr": 0.001})
        lg.log_metrics({"val/ap": 0.25, "train/loss_total": math.inf, "x": math.nan}, step=7)
        lg.log_artifact(tmp_path / "best.pt", artifact_path="checkpoints")
    with pytest.raises(ValueError, match="closed"):
        lg.log_metrics({"a": 1.0}, step=8)
    recs = read_jsonl(path)
    assert [r["kind"] for r in recs] == ["params", "metrics", "artifact"]
    assert recs[0]["params"] == {"model.fusion": "sum", "train.lr": 0.001}
    assert recs[1]["step"] == 7 and recs[1]["metrics"] == {"val/ap": 0.25, "train/loss_total": "inf", "x": "nan"}
    assert recs[2]["artifact_path"] == "checkpoints" and recs[2]["path"].endswith("best.pt")
    with JsonlLogger(path) as lg:  # appending keeps earlier records (resumed runs)
        lg.log_metrics({"a": 1.0}, step=8)
    assert len(read_jsonl(path)) == 4


@pytest.mark.parametrize(("variant", "features", "dim"), [("baseline", "[]", 0), ("msf1d", "[gender]", 55),
                                                          ("msf3d", "[heartrate,age]", 2)])
def test_feature_subsets_train_and_reload(tiny_preprocessed, tmp_path, variant, features, dim):
    cfg = tiny_cfg(f"model.variant={variant}", f"data.features={features}", "model.use_mask=false")
    res = train(cfg, tiny_preprocessed, tmp_path, max_steps=1)
    ck = load(res.last_checkpoint)
    assert ck["meta"]["features"] == [f for f in mdfnet.data.schema.ALL_FEATURES if f in cfg.data.features]
    model, _ = load_model(res.last_checkpoint)
    assert model.clinical_encoder.out_dim == dim
    val = mdfnet.data.MDFDataset(tiny_preprocessed, "val", features=cfg.data.features)
    assert len(predict(model, val, batch_size=4)) == 4


def test_fusion_variant_without_features_is_refused(tiny_preprocessed, tmp_path):
    with pytest.raises(ValueError, match="no clinical feature was selected"):
        train(tiny_cfg("model.variant=mdf", "data.features=[]"), tiny_preprocessed, tmp_path)


def test_amp_and_device_resolution_on_cpu():
    from mdfnet.training import resolve_amp, resolve_device

    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None and resolve_amp("off", cpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16
    with pytest.raises(TrainError, match="fp16 needs a CUDA device"):
        resolve_amp("fp16", cpu)
    assert resolve_device("cpu") == cpu
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(TrainError, match="CUDA is unusable"):
            resolve_device("cuda")


@pytest.mark.parametrize(("schedule", "lrs"), [
    ("constant", [0.1, 0.1, 0.1, 0.1, 0.1]),
    ("step", [0.1, 0.1, 0.01, 0.01, 0.001]),
    ("cosine", [0.1, 0.1 * (1 + math.cos(math.pi / 4)) / 2, 0.05, 0.1 * (1 + math.cos(3 * math.pi / 4)) / 2, 0.0]),
])
def test_lr_schedules_per_epoch(schedule, lrs):
    from mdfnet.training import SCHEDULES

    section = tiny_cfg(f"train.schedule={schedule}", "train.step_epochs=2", "train.epochs=4").train
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = SCHEDULES[schedule](opt, section)
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx(lrs, abs=1e-9)


def test_schedules_are_the_ones_the_config_accepts():
    """Every ``train.schedule`` the ``Literal`` accepts has a builder and every builder a name there; the loop
    checks it at import as the model's tables of parts check theirs against the catalog."""
    import typing

    from mdfnet.model.catalog import check_table
    from mdfnet.training import SCHEDULES, TrainSection
    from mdfnet.training.config import SCHEDULE_NAMES

    assert set(SCHEDULES) == set(SCHEDULE_NAMES) == set(typing.get_args(typing.get_type_hints(TrainSection)["schedule"]))
    with pytest.raises(RuntimeError, match=r"schedule table \['constant', 'linear'\] does not match TrainSection"):
        check_table("schedule", ["constant", "linear"], SCHEDULE_NAMES, "TrainSection.schedule's Literal")


def test_loader_workers_do_not_change_training(tiny_preprocessed, tmp_path):
    """Two persistent loader worker processes feed the same batches in the same order as the main process."""
    runs = [load(train(tiny_cfg(f"train.num_workers={n}"), tiny_preprocessed, tmp_path / str(n), max_steps=2)
                 .last_checkpoint)["model"] for n in (0, 2)]
    assert_same_state(*runs)
