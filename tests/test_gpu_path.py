"""The GPU training path, exercised on the CPU with stand-ins: config values YAML reads as booleans, the device and
AMP choice (never a silent CPU fallback, never emulated bf16), validation in fp32, resume across AMP modes, one host
sync per step, the cuDNN autotuner rule, and the device facts and system metrics a run records.

Runs use ``tiny_preprocessed`` (64 px, 8 train / 4 val readings), batch 2, MobileNetV3-small, CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import typing

import pytest
import torch

import mdfnet.training.device as device_mod
import mdfnet.training.loop as loop_mod
from mdfnet.config import load_config
from mdfnet.data import MDFDataset
from mdfnet.data.preprocess import PreprocessConfig
from mdfnet.metrics_log import JsonlLogger, read_jsonl
from mdfnet.training import TrainConfig, TrainError, config_from_sources, load_model, train
from mdfnet.training.checkpoint import TrainState, load_checkpoint, restore
from mdfnet.training.device import cudnn_benchmark, device_tags, resolve_amp, resolve_device
from mdfnet.training.inference import score_split

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = [
    "model.backbone=mobilenet_v3_small", "model.mask_head_channels=16", "train.batch_size=2", "train.epochs=2",
    "train.num_workers=0", "train.device=cpu", "train.progress=false", "train.lr=0.01", "eval.train_ap_images=0",
]


def tiny_cfg(*overrides: str) -> TrainConfig:
    return config_from_sources(None, TINY + list(overrides))


# ------------------------------------------------------------------------------------------ config values
def _literal_keys(cls: type, prefix: str = "") -> list[tuple[str, tuple]]:
    """Every ``Literal`` key of a config dataclass tree: ``[("train.amp", ("auto", "off", ...)), ...]``."""
    out = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out += _literal_keys(tp, f"{prefix}{f.name}.")
        elif typing.get_origin(tp) is typing.Literal:
            out.append((f"{prefix}{f.name}", typing.get_args(tp)))
    return out


@pytest.mark.parametrize("cls", [TrainConfig, PreprocessConfig])
def test_every_documented_value_loads_from_yaml_and_from_set(cls, tmp_path):
    """``train.amp: off`` (YAML reads ``off`` as false) and every other value of every choice key load as written."""
    keys = _literal_keys(cls)
    assert keys, f"{cls.__name__} has no choice keys"
    if cls is TrainConfig:
        assert ("train.amp", ("auto", "off", "bf16", "fp16")) in keys
    for key, values in keys:
        for value in values:
            *sections, name = key.split(".")
            text = "".join(f"{'  ' * i}{s}:\n" for i, s in enumerate(sections)) + f"{'  ' * len(sections)}{name}: {value}\n"
            path = tmp_path / "c.yaml"
            path.write_text(text)
            for cfg in (load_config(cls, path), load_config(cls, overrides=[f"{key}={value}"])):
                node = cfg
                for part in key.split("."):
                    node = getattr(node, part)
                assert node == value, (key, value, text)


def test_a_boolean_is_still_refused_where_no_word_fits():
    from mdfnet.config import ConfigError

    with pytest.raises(ConfigError, match=r"train.schedule: value False is not one of"):
        load_config(TrainConfig, overrides=["train.schedule=off"])


# ------------------------------------------------------------------------------------------ device and AMP
def test_auto_on_a_machine_without_cuda_says_it_trains_on_the_cpu(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="mdfnet.train"):
        assert resolve_device("auto") == torch.device("cpu")
    assert "training on the CPU" in caplog.text and "train.device=cuda" in caplog.text


def test_cuda_asked_for_fails_at_once_naming_the_build_and_the_driver(monkeypatch):
    """A CUDA torch build whose driver is too old: torch warns and says no; the error carries both versions."""
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(device_mod, "driver_version", lambda: "470.57")

    def unavailable():
        import warnings

        warnings.warn("CUDA initialization: The NVIDIA driver on your system is too old (found version 11040)",
                      UserWarning, stacklevel=1)
        return False

    monkeypatch.setattr(torch.cuda, "is_available", unavailable)
    with pytest.raises(TrainError) as err:
        resolve_device("cuda")
    msg = str(err.value)
    assert "train.device='cuda' but CUDA is unusable" in msg and "driver on your system is too old" in msg
    assert "built for CUDA 12.8" in msg and "driver 470.57" in msg and "Not falling back to the CPU" in msg


def test_cuda_on_a_cpu_only_torch_build_names_the_build(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(TrainError, match="CPU-only build"):
        resolve_device("cuda:0")


def test_cuda_index_out_of_range_is_named(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(TrainError, match=r"cuda:3 asked for but 1 CUDA device\(s\) are visible"):
        resolve_device("cuda:3")


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_amp_auto_never_picks_emulated_bf16(monkeypatch, native, expected):
    """A GPU without native bf16 (e.g. a T4 or V100: torch reports bf16 "supported" through emulation) → fp16."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)
    assert resolve_amp("auto", torch.device("cuda")) is expected
    assert resolve_amp("off", torch.device("cuda")) is None and resolve_amp("fp16", torch.device("cuda")) is torch.float16


def test_cudnn_autotuner_only_without_the_mask_head():
    assert cudnn_benchmark(use_mask=False) is True and cudnn_benchmark(use_mask=True) is False


def test_device_tags_on_cpu_and_on_a_stand_in_gpu(monkeypatch):
    tags = device_tags(torch.device("cpu"), None)
    assert tags["mdfnet.device"] == "cpu" and tags["mdfnet.amp_dtype"] == "off" and "mdfnet.gpu_name" not in tags
    assert tags["mdfnet.torch_version"] == torch.__version__ and int(tags["mdfnet.cpu_count"]) >= 1
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)
    monkeypatch.setattr(device_mod, "driver_version", lambda: "570.124.06")
    gpu = device_tags(torch.device("cuda:0"), torch.bfloat16)
    assert gpu["mdfnet.gpu_name"] == "NVIDIA H100 80GB HBM3" and gpu["mdfnet.gpu_capability"] == "9.0"
    assert gpu["mdfnet.driver_version"] == "570.124.06" and gpu["mdfnet.amp_dtype"] == "bf16"
    assert gpu["mdfnet.cudnn_version"] == "91002"


def test_train_records_the_device_it_resolved(tiny_preprocessed, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="mdfnet.train"), JsonlLogger(tmp_path / "m.jsonl") as logger:
        train(tiny_cfg("train.amp=bf16"), tiny_preprocessed, tmp_path / "run", logger=logger, max_steps=1)
    tags = [r["tags"] for r in read_jsonl(tmp_path / "m.jsonl") if r["kind"] == "tags"]
    assert tags and tags[0]["mdfnet.device"] == "cpu" and tags[0]["mdfnet.amp_dtype"] == "bf16"
    assert "training on cpu (" in caplog.text and "AMP bf16" in caplog.text


# ------------------------------------------------------------------------------------------ validation in fp32
def test_validation_under_bf16_training_scores_in_fp32_as_the_evaluate_step_does(tiny_preprocessed, tmp_path,
                                                                                 monkeypatch):
    """The per-epoch val AP that picked best.pt equals the evaluate step's val AP of that checkpoint (fp32)."""
    dtypes = []
    real = loop_mod.evaluate_split

    def spy(*args, **kwargs):
        dtypes.append(args[6] if len(args) > 6 else kwargs.get("autocast_dtype"))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_mod, "evaluate_split", spy)
    cfg = tiny_cfg("train.amp=bf16", "train.epochs=3")
    res = train(cfg, tiny_preprocessed, tmp_path)
    assert dtypes == [None, None, None]
    model, saved = load_model(res.best_checkpoint)
    evaluated = score_split(model, saved, tiny_preprocessed, "val", batch_size=cfg.train.batch_size)
    assert float(evaluated.result.ap) == res.best_val_ap
    assert res.history[res.best_epoch - 1]["val/ap"] == res.best_val_ap


# ------------------------------------------------------------------------------------------ resume across AMP modes
def test_resume_in_fp16_from_a_checkpoint_saved_without_a_scaler(tiny_preprocessed, tmp_path, caplog):
    """``amp`` off → fp16 (or ``auto`` on another GPU): a fresh GradScaler and a warning, not "state dict is empty"."""
    cfg = tiny_cfg()
    res = train(cfg, tiny_preprocessed, tmp_path, max_steps=1)
    ckpt = load_checkpoint(res.last_checkpoint)
    assert ckpt["scaler"] == {}
    parts = loop_mod.build_parts(cfg, MDFDataset(tiny_preprocessed, "train", features=cfg.data.features))
    parts.scaler = torch.amp.GradScaler("cpu", enabled=True)  # stand-in for fp16 on a GPU
    with caplog.at_level(logging.WARNING):
        state = restore(parts, ckpt)
    assert isinstance(state, TrainState) and state.step == 1
    assert "GradScaler starts fresh" in caplog.text and parts.scaler.get_scale() == 65536.0
    parts.scaler = torch.amp.GradScaler("cpu", enabled=False)  # and back: a saved scaler state is ignored
    ckpt["scaler"] = torch.amp.GradScaler("cpu", enabled=True).state_dict() | {"scale": 1024.0}
    restore(parts, ckpt)


# ------------------------------------------------------------------------------------------ one host sync per step
def test_a_train_step_reads_the_device_once(tiny_preprocessed, monkeypatch):
    """Every device→host read made by the training loop's own code in one step (``.cpu()``, ``.item()``,
    ``.tolist()``, ``float()``, ``bool()`` of a tensor): exactly one, the loss values before backward."""
    cfg = tiny_cfg()
    ds = MDFDataset(tiny_preprocessed, "train", features=cfg.data.features, with_masks=cfg.model.use_mask)
    parts = loop_mod.build_parts(cfg, ds)
    batch = next(iter(loop_mod._loader(ds, cfg, torch.device("cpu"))))
    reads = []
    for name in ("cpu", "item", "tolist", "__float__", "__bool__", "numpy"):
        real = getattr(torch.Tensor, name)

        def counting(self, *a, _real=real, _name=name, **k):
            import sys

            if sys._getframe(1).f_code.co_filename == loop_mod.__file__:
                reads.append(_name)
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counting)
    losses, total = loop_mod.optimiser_step(parts, batch, grad_clip_norm=1.0, step=1)
    monkeypatch.undo()
    assert reads == ["tolist"]
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
    assert all(isinstance(v, float) for v in losses.values()) and isinstance(total, float)


def test_a_checkpoint_from_a_node_with_more_gpus_restores_the_rng_of_the_visible_ones(monkeypatch):
    """Saved with 2 visible GPUs, resumed in a pod that sees 1: the first GPU's generator is restored, no error."""
    from mdfnet.training.determinism import get_rng_state, set_rng_state

    state = get_rng_state()
    state["cuda"] = [torch.full((16,), 1, dtype=torch.uint8), torch.full((16,), 2, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device: restored.append((int(s[0]), device)))
    set_rng_state(state)
    assert restored == [(1, 0)]
