"""The run folder: every file name a training run writes, each spelled once, here (torch-free).

Layout::

    RUN_DIR/config.yaml              the resolved TrainConfig
    RUN_DIR/metrics.jsonl            (CLI) JSON-lines metrics, one object per epoch
    RUN_DIR/checkpoints/last.pt      state after the latest epoch end / stop (resume point)
    RUN_DIR/checkpoints/best.pt      copy of the checkpoint with the highest val AP (ties keep the earlier)

A checkpoint's content: :mod:`mdfnet.training.checkpoint`. The durable copies of a train task
(:mod:`mdfnet.pipeline.durable`) keep the same names (``checkpoints/`` in the cell run's MLflow artefacts, or an
S3 prefix), each followed by its digest file ``<name>.sha256`` (:meth:`RunFolder.digest`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
"""The checkpoint folder; also the MLflow artefact folder of the durable copies."""
LAST = "last.pt"
BEST = "best.pt"
DIGEST_SUFFIX = ".sha256"


@dataclass(frozen=True)
class RunFolder:
    """The paths of a run folder rooted at ``root`` (module docstring); nothing is created or read here."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.checkpoints / LAST

    @property
    def best(self) -> Path:
        return self.checkpoints / BEST

    @staticmethod
    def digest(path: str | Path) -> Path:
        """The digest file beside ``path`` (``<name>.sha256``)."""
        path = Path(path)
        return path.with_name(path.name + DIGEST_SUFFIX)
