"""Durable checkpoints of a train task: where a preempted pod's ``last.pt`` / ``best.pt`` survive, so the retried
task (same pipeline run, cell and seed) resumes from them.

Two stores, chosen by ``$MDFNET_CHECKPOINT_URI``:

- unset (default): the cell run's MLflow artefacts, ``checkpoints/{last,best}.pt`` (on a cluster they land in
  the S3 artefact store behind the tracking server);
- ``s3://bucket/prefix``: ``s3://bucket/prefix/<pipeline run id>/<cell>-s<seed>/{last,best}.pt``, written with
  boto3 (one PUT per file: an object is there whole or not at all), retried with backoff
  (``$MDFNET_S3_MAX_ATTEMPTS``), endpoint ``AWS_ENDPOINT_URL`` / ``MLFLOW_S3_ENDPOINT_URL``.

An upload that fails warns and returns False: training goes on, and the file is uploaded again at the next
checkpoint, once the store is back. ``best.pt`` is always stored before ``last.pt``, so a durable ``last.pt``
has its ``best.pt`` beside it even after an outage. A fetch that finds nothing means a first attempt.

Each checkpoint is followed by ``<name>.sha256`` (digest and size). The names are the run folder's
(:mod:`mdfnet.training.run_folder`). A file store copies in place, so a pod killed
in the middle of an upload can leave half a ``last.pt`` behind: a fetched file that does not match its digest is
ignored, and the retry resumes from ``best.pt`` (a full training state too) instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mdfnet.pipeline.errors import StepError
from mdfnet.pipeline.sources import s3_client
from mdfnet.training.run_folder import BEST, CHECKPOINTS, LAST, RunFolder

log = logging.getLogger(__name__)

CHECKPOINT_URI_ENV = "MDFNET_CHECKPOINT_URI"
UPLOAD_ORDER: tuple[str, ...] = (BEST, LAST)
"""Every checkpoint a task resumes from, in the order they are stored: a durable last.pt has its best.pt."""


class DurableStore:
    """What both stores share: uploads that survive an outage, in ``UPLOAD_ORDER``, each with its digest file, and
    fetches that check it. Subclasses put one file (``_put_file``) and get one (``_get_file``)."""

    where = ""

    def __init__(self) -> None:
        self._pending: dict[str, Path] = {}

    def upload(self, path: Path) -> bool:
        """Store ``path`` (``last.pt`` or ``best.pt``), after any checkpoint that comes before it in
        ``UPLOAD_ORDER`` and is not stored yet (its upload failed at an earlier checkpoint). True when everything up
        to ``path`` is stored; False (warned) when something is not: it is tried again at the next call."""
        if path.name not in UPLOAD_ORDER:
            raise ValueError(f"{path}: not a checkpoint a task resumes from; expected one of {UPLOAD_ORDER}")
        self._pending[path.name] = path
        return self._send(UPLOAD_ORDER[:UPLOAD_ORDER.index(path.name) + 1])

    def flush(self) -> bool:
        """Store what earlier uploads left behind (the store was away); True when nothing is left."""
        return self._send(UPLOAD_ORDER)

    def _send(self, names: tuple[str, ...]) -> bool:
        for name in [n for n in names if n in self._pending]:
            if not self._put(self._pending[name]):
                return False
            del self._pending[name]
        return True

    def _put(self, path: Path) -> bool:
        """``path``, then its digest file."""
        with tempfile.TemporaryDirectory(prefix="mdfnet-ckpt-") as tmp:
            digest = RunFolder.digest(Path(tmp) / path.name)
            digest.write_text(_digest(path))
            return self._put_file(path) and self._put_file(digest)

    def _fetch_one(self, name: str, dest: Path) -> bool:
        """``name`` into ``dest`` if the store has it whole (it matches its digest file)."""
        with tempfile.TemporaryDirectory(prefix="mdfnet-ckpt-") as tmp:
            digest = RunFolder.digest(Path(tmp) / name)
            if not (self._get_file(name, dest) and self._get_file(digest.name, digest)):
                dest.unlink(missing_ok=True)
                return False
            if digest.read_text() != _digest(dest):
                log.warning("%s%s does not match its digest (cut off by a kill in the middle of its upload?): "
                            "ignored", self.where, name)
                dest.unlink()
                return False
        return True

    def _put_file(self, path: Path) -> bool:
        raise NotImplementedError

    def _get_file(self, name: str, dest: Path) -> bool:
        raise NotImplementedError


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{h.hexdigest()} {path.stat().st_size}\n"


class MlflowCheckpoints(DurableStore):
    """Checkpoints as artefacts of the cell run (``checkpoints/<name>``: :data:`~mdfnet.training.run_folder.CHECKPOINTS`)."""

    def __init__(self, client: Any, run_id: str, logger: Any) -> None:
        super().__init__()
        self.client, self.run_id, self.logger = client, run_id, logger
        self.where = f"MLflow run {run_id} artefacts {CHECKPOINTS}/"

    def _put_file(self, path: Path) -> bool:
        return self.logger.try_log_artifact(path, CHECKPOINTS)

    def _get_file(self, name: str, dest: Path) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            with tempfile.TemporaryDirectory(prefix="mdfnet-ckpt-") as tmp:
                shutil.copyfile(self.client.download_artifacts(self.run_id, f"{CHECKPOINTS}/{name}", tmp), dest)
        except (MlflowException, OSError) as e:
            log.debug("no durable %s in run %s: %s", name, self.run_id, e)
            return False
        return True


class S3Checkpoints(DurableStore):
    """Checkpoints as objects under ``s3://bucket/prefix/<pipeline run>/<run name>/``."""

    def __init__(self, uri: str, pipeline_run_id: str, run_name: str) -> None:
        super().__init__()
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StepError(f"{CHECKPOINT_URI_ENV}={uri!r}: expected s3://bucket/prefix")
        self.bucket = parsed.netloc
        self.prefix = "/".join(p for p in (parsed.path.strip("/"), pipeline_run_id, run_name) if p)
        self.where = f"s3://{self.bucket}/{self.prefix}/"
        self.s3 = s3_client()

    def _put_file(self, path: Path) -> bool:
        try:
            self.s3.upload_file(str(path), self.bucket, f"{self.prefix}/{path.name}")
        except Exception as e:  # noqa: BLE001 - any transport/server error: warn, training goes on
            log.warning("%s not uploaded to %s yet (%s: %s)", path.name, self.where, type(e).__name__, e)
            return False
        return True

    def _get_file(self, name: str, dest: Path) -> bool:
        try:
            self.s3.download_file(self.bucket, f"{self.prefix}/{name}", str(dest))
        except Exception as e:  # noqa: BLE001 - absent (a first attempt) or unreachable: nothing to resume from
            log.debug("no durable %s at %s: %s", name, self.where, e)
            dest.unlink(missing_ok=True)
            return False
        return True


def durable_checkpoints(client: Any, run_id: str, logger: Any, pipeline_run_id: str, run_name: str):
    """The store ``$MDFNET_CHECKPOINT_URI`` asks for (see the module docstring)."""
    uri = os.environ.get(CHECKPOINT_URI_ENV)
    return S3Checkpoints(uri, pipeline_run_id, run_name) if uri else MlflowCheckpoints(client, run_id, logger)


def resume_point(store: DurableStore, out_dir: Path) -> bool:
    """A retried train task: fetch ``last.pt`` (and ``best.pt``) from ``store`` into ``out_dir/checkpoints`` unless
    ``last.pt`` is there already; True when there is one to resume from. With ``best.pt`` only (``last.pt`` was
    cut off in the middle of its upload), the task resumes from ``best.pt``: the epochs after it run again."""
    run = RunFolder(out_dir)
    if run.last.is_file():
        return True
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    got = [name for name in UPLOAD_ORDER if store._fetch_one(name, run.checkpoints / name)]
    if got == [BEST]:
        log.warning("no whole %s at %s: resuming from %s; the epochs after it run again", LAST, store.where, BEST)
        shutil.copyfile(run.best, run.last)
    elif not got:
        return False
    log.info("the task was interrupted before: resuming from %s (%s)", store.where, ", ".join(got))
    return True
