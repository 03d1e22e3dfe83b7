"""Shared fixtures: tiny hand-built sources → joined → preprocessed folders (64 px)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

from handbuilt import build_sources, patient, stay, triage_row  # noqa: E402

CLASSES5 = ["Enlarged cardiac silhouette", "Atelectasis", "Pleural effusion", "Consolidation", "Pulmonary edema"]
"""The 5 classes as phase-1 REFLACX names them (phases 2-3 say "Pleural abnormality": :func:`label_in_phase`)."""


def label_in_phase(label: str, phase: int) -> str:
    """``label`` as REFLACX phase ``phase`` names it (phase 1's pleural labels are "Pleural abnormality" in 2-3)."""
    from mdfnet.data import schema

    return label if label in schema.reflacx_labels(phase) else schema.LABEL_SYNONYMS[label]


def tiny_sources(root: Path, n: int = 16, seed: int = 0) -> Path:
    """``n`` subjects with one reading each (every 4th without lesions), images 96×80, 1–2 boxes each."""
    rng = np.random.default_rng(seed)
    readings, patients, stays, triage = [], [], [], []
    for k in range(n):
        sid, study = 10000100 + k, 50000100 + k
        ell, phase = [], 3 if k % 5 == 0 else 1
        if k % 4 != 3:
            for _ in range(1 + k % 2):
                x0, y0 = rng.uniform(2, 40), rng.uniform(2, 30)
                w, h = rng.uniform(15, 45), rng.uniform(15, 40)
                ell.append((round(x0, 1), round(y0, 1), round(min(x0 + w, 95), 1), round(min(y0 + h, 79), 1),
                            int(rng.integers(1, 6)), [label_in_phase(CLASSES5[int(rng.integers(0, 5))], phase)]))
        readings.append(dict(reflacx_id=f"P1R{k:03d}", subject_id=sid, study_id=study, dicom_id=f"dcm-{k:03d}",
                             date=21500312, time=float(80000 + 100 * k), width=96, height=80, ellipses=ell,
                             phase=phase))
        patients.append(patient(sid, "F" if k % 2 else "M", age=40 + k, year=2150))
        stays.append(stay(sid, 1000 + k, "2150-03-12 07:00:00", "2150-03-12 23:00:00"))
        triage.append(triage_row(sid, 1000 + k, temperature=97.0 + 0.3 * k, heartrate=70 + k,
                                 pain=["3", "UA", "8-10", ""][k % 4]))
    return build_sources(root, readings, patients, stays, triage)


@pytest.fixture(scope="session")
def tiny_joined(tmp_path_factory) -> Path:
    from mdfnet.data.join import join

    src = tiny_sources(tmp_path_factory.mktemp("tiny_src"))
    out = tmp_path_factory.mktemp("tiny_joined")
    join(src, out)
    return out


@pytest.fixture(scope="session")
def tiny_preprocessed(tiny_joined, tmp_path_factory) -> Path:
    """A preprocessed folder at 64 px: 16 readings, split 8 train / 4 val / 4 test by patient."""
    from mdfnet.data.preprocess import PreprocessConfig, preprocess

    out = tmp_path_factory.mktemp("tiny_pre")
    preprocess(tiny_joined, out, PreprocessConfig(image_size=64, fractions=(0.5, 0.25, 0.25), seed=0, workers=1))
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's torch work on one intra-op thread: tiny tensors gain nothing from more, and on a shared
    2-core machine OpenMP's busy-waiting threads make such tests several times slower. Restored afterwards.
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


N_BIG = 600


@pytest.fixture(scope="session")
def big(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """One 600-study synthetic tree at ~32 px (seed 11), shared by the generator's tests."""
    from mdfnet.data import synthetic as S

    root = tmp_path_factory.mktemp("synth_big")
    return root, S.generate(root, N_BIG, seed=11, image_size=32)


@pytest.fixture(scope="session")
def big_joined(big, tmp_path_factory):
    from mdfnet.data.join import join

    root, _ = big
    out = tmp_path_factory.mktemp("synth_big_joined")
    result = join(root, out)
    return out, result


@pytest.fixture(scope="session")
def presence(big_joined) :
    """Cleaned joined readings and a bool [readings, 5] lesion-presence frame (from the joined boxes)."""
    import pandas as pd

    from mdfnet.data import schema
    from mdfnet.data.clean import clean_clinical

    out, _ = big_joined
    inst, _ = clean_clinical(pd.read_parquet(out / "instances.parquet"))
    boxes = pd.read_parquet(out / "boxes.parquet")
    pres = pd.DataFrame({c: inst["reflacx_id"].isin(boxes.loc[boxes["label"] == c, "reflacx_id"]).to_numpy()
                         for c in schema.CLASSES})
    return inst.reset_index(drop=True), pres


@pytest.fixture()
def fake_aws(monkeypatch):
    """Credentials for moto's in-process S3 (``mock_aws``) and no endpoint override, so boto3 talks to moto."""
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """A real S3 store on loopback (SeaweedFS) whose endpoint can be stopped and restarted with its objects kept
    (``servers.SeaweedS3``); one per test session."""
    from servers import SeaweedS3, no_proxy_for_loopback

    with no_proxy_for_loopback(), SeaweedS3(tmp_path_factory.mktemp("seaweed")) as store:
        yield store


@pytest.fixture()
def seaweed_env(seaweed, monkeypatch):
    """The environment a step gets in the cluster, pointed at :func:`seaweed`: endpoint and credentials (and a
    fresh boto3 default session: the process-wide one keeps the credentials it first resolved)."""
    import boto3
    from servers import S3_CREDS

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    for k, v in {**S3_CREDS, "AWS_ENDPOINT_URL": seaweed.endpoint}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
    return seaweed
