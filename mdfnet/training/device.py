"""Where a run trains, said out loud: device and AMP choice, backend settings, and what the run records about them.

- :func:`resolve_device`: ``train.device`` → ``torch.device``. ``auto`` takes the GPU when CUDA is usable and
  otherwise the CPU *with a warning*; ``cuda``/``cuda:N`` never falls back: it fails at once with
  :class:`~mdfnet.training.errors.TrainError` saying why CUDA is unusable (a CPU-only torch build, the torch
  build's CUDA version against the driver, no visible device, an index out of range), so a GPU pod whose GPU is
  unusable stops in seconds instead of training for hours on its CPU.
- :func:`resolve_amp`: ``train.amp`` → autocast dtype. ``auto`` = bf16 on GPUs with *native* bf16 (Ampere and
  newer), fp16 with a ``GradScaler`` on older GPUs (bf16 emulated there is slower than fp32), off on the CPU.
- :func:`cudnn_benchmark`: cuDNN's autotuner pays off only for convolution shapes that repeat; the mask head's
  batch is the number of positive RoIs, new every step, so the autotuner is on only when masks are off.
- :func:`device_tags`: the resolved device, GPU name and capability, CUDA/cuDNN/driver versions, AMP dtype and
  ``/dev/shm`` size as MLflow run tags (tags, not params: a retried task may land on another node).
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings

import torch

from mdfnet.tracking_names import (
    TAG_AMP,
    TAG_CAPABILITY,
    TAG_CPUS,
    TAG_CUDA,
    TAG_CUDNN,
    TAG_DEVICE,
    TAG_DRIVER,
    TAG_GPU,
    TAG_SHM,
    TAG_TORCH,
)
from mdfnet.training.errors import TrainError

log = logging.getLogger("mdfnet.train")

AMP_NAMES = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}
"""Autocast dtype → the name ``train.amp`` gives it (and the ``mdfnet.amp_dtype`` tag records)."""


def driver_version() -> str | None:
    """The NVIDIA driver's version from NVIDIA's management library (PyPI ``nvidia-ml-py``), or None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no library, no driver, no GPU: all mean "unknown"
        return None
    return version.decode() if isinstance(version, bytes) else str(version)


def cuda_problem(device: torch.device) -> str | None:
    """Why ``device`` (a CUDA device) cannot be used, in words, or None when it can (a tensor was made on it)."""
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build; install the CUDA wheels of torch"
    build = f"torch {torch.__version__} is built for CUDA {torch.version.cuda}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if not available:
        said = "; ".join(str(w.message).strip() for w in caught) or "torch.cuda.is_available() is False"
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return (f"{said} ({build}, NVIDIA driver {driver_version() or 'not found'}"
                + (f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "") + ")")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        return f"{device} asked for but {count} CUDA device(s) are visible"
    try:
        torch.zeros(1, device=device).add_(1).cpu()
    except RuntimeError as e:
        driver = driver_version() or "unknown"
        return f"a tensor could not be made on {device}: {e} ({build}, NVIDIA driver {driver})"
    return None


def resolve_device(name: str) -> torch.device:
    """``train.device`` → device (module docstring: ``auto`` warns when it takes the CPU; ``cuda`` never does)."""
    if name == "auto":
        problem = cuda_problem(torch.device("cuda"))
        if problem is None:
            return torch.device("cuda")
        log.warning("train.device=auto: training on the CPU (CUDA unusable: %s); set train.device=cuda to make "
                    "this an error", problem)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        problem = cuda_problem(device)
        if problem is not None:
            raise TrainError(f"train.device={name!r} but CUDA is unusable: {problem}. Not falling back to the CPU; "
                             "check the node's GPU and driver, or set train.device=cpu explicitly")
    return device


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype (None: fp32) for ``train.amp`` on ``device`` (module docstring)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16" and device.type != "cuda":
        raise TrainError("train.amp=fp16 needs a CUDA device (use bf16 or off on CPU)")
    if device.type == "cuda" and amp in ("auto", "bf16"):
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        if amp == "auto":
            return torch.bfloat16 if native else torch.float16
        if not native:
            log.warning("train.amp=bf16 on %s, which has no native bf16: emulated, slower than fp16 "
                        "(train.amp=auto picks fp16 there)", torch.cuda.get_device_name(device))
    return torch.bfloat16 if amp == "bf16" else torch.float16


def cudnn_benchmark(use_mask: bool) -> bool:
    """cuDNN autotuner on: only when every convolution's shape repeats, i.e. without the mask head (whose batch
    is the step's number of positive RoIs, so each step would be tuned anew)."""
    return not use_mask


def shm_mib() -> float | None:
    """Size of ``/dev/shm`` in MiB (DataLoader workers pass batches through it; Kubernetes' default is 64)."""
    try:
        return shutil.disk_usage("/dev/shm").total / 2**20
    except OSError:
        return None


def device_tags(device: torch.device, amp_dtype: torch.dtype | None) -> dict[str, str]:
    """The run's hardware and precision as MLflow tags (``mdfnet.device`` …; module docstring)."""
    shm = shm_mib()
    tags = {TAG_DEVICE: str(device), TAG_AMP: AMP_NAMES[amp_dtype], TAG_TORCH: str(torch.__version__),
            TAG_CUDA: str(torch.version.cuda or "none"), TAG_CPUS: str(len(os.sched_getaffinity(0))),
            TAG_SHM: f"{shm:.0f}" if shm is not None else "unknown"}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        tags.update({TAG_GPU: torch.cuda.get_device_name(index), TAG_CAPABILITY: f"{major}.{minor}",
                     TAG_CUDNN: str(torch.backends.cudnn.version()), TAG_DRIVER: driver_version() or "unknown"})
    return tags


def describe(tags: dict[str, str]) -> str:
    """One log line from :func:`device_tags`: ``cuda:0 (NVIDIA H100 …, capability 9.0, CUDA 12.8, driver …), AMP
    bf16`` or ``cpu (8 cores), AMP off``."""
    if TAG_GPU in tags:
        where = (f"{tags[TAG_DEVICE]} ({tags[TAG_GPU]}, capability {tags[TAG_CAPABILITY]}, CUDA {tags[TAG_CUDA]}, "
                 f"driver {tags[TAG_DRIVER]})")
    else:
        where = f"{tags[TAG_DEVICE]} ({tags[TAG_CPUS]} cores)"
    return f"{where}, AMP {tags[TAG_AMP]}, /dev/shm {tags[TAG_SHM]} MiB"
