"""Metric logger interface used by training; tracking back ends plug in by implementing :class:`MetricLogger`.

The library never imports a tracking package: training takes any object with these four methods.

- :class:`NullLogger`: does nothing;
- :class:`JsonlLogger`: appends one JSON object per line to a file (``RUN_DIR/metrics.jsonl``):
  ``{"kind": "params", "params": {...}}``, ``{"kind": "metrics", "step": 12, "metrics": {"train/loss_total": 1.2}}``
  ``{"kind": "tags", "tags": {"mdfnet.device": "cpu"}}`` or ``{"kind": "artifact", "path": "...",
  "artifact_path": null}`` (artifacts are recorded, not copied);
- the MLflow logger (``mdfnet.tracking``) implements the same interface; its metrics go through a
  :class:`Backlog`, so a tracking server that is away does not stop training and loses nothing.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricLogger:
    """Interface: parameters once, tags, metrics per step, artifacts by path, then ``close()``."""

    def log_params(self, params: dict[str, Any]) -> None:
        raise NotImplementedError

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        raise NotImplementedError

    def set_tags(self, tags: dict[str, str]) -> None:
        """Facts about the run that may change when it resumes elsewhere (device, GPU, driver): tags, not params."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> MetricLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullLogger(MetricLogger):
    """Discards everything."""

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def close(self) -> None:
        pass


def _json_value(v: Any) -> Any:
    """Floats that JSON cannot hold (nan, ±inf) become strings; other values pass through."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class JsonlLogger(MetricLogger):
    """Appends JSON lines to ``path`` (created with its parent folder; appending keeps resumed runs' history)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")

    def _write(self, record: dict[str, Any]) -> None:
        if self._fh.closed:
            raise ValueError(f"JsonlLogger for {self.path} is closed")
        record["time"] = time.time()
        self._fh.write(json.dumps(record, default=str) + "\n")
        self._fh.flush()

    def log_params(self, params: dict[str, Any]) -> None:
        self._write({"kind": "params", "params": {k: _json_value(v) for k, v in params.items()}})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._write({"kind": "metrics", "step": int(step),
                     "metrics": {k: _json_value(float(v)) for k, v in metrics.items()}})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._write({"kind": "artifact", "path": str(path), "artifact_path": artifact_path})

    def set_tags(self, tags: dict[str, str]) -> None:
        self._write({"kind": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines metrics file, in order."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def flatten_params(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"fusion": "sum"}}`` → ``{"model.fusion": "sum"}`` (lists become comma-joined strings)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_params(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = ",".join(str(x) for x in v)
        else:
            out[key] = v
    return out


class Backlog:
    """Items a back end could not take yet, kept in order and sent again before newer ones: nothing is dropped
    while the server is away, and history stays in step order once it is back."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.items: list[Any] = []

    def send(self, items: Sequence[Any], sender: Callable[[list[Any]], None]) -> bool:
        """Queue ``items`` and try to send everything pending; True when nothing is pending afterwards."""
        self.items.extend(items)
        if not self.items:
            return True
        try:
            sender(self.items)
        except Exception as e:  # noqa: BLE001 - any transport or server error: keep the items, try again later
            log.warning("%s: %d item(s) kept to send later (%s: %s)", self.what, len(self.items), type(e).__name__, e)
            return False
        self.items = []
        return True

    def drain(self, sender: Callable[[list[Any]], None], attempts: int = 5, backoff_s: float = 2.0) -> None:
        """Send what is pending, retrying with exponential backoff; raises ``RuntimeError`` naming what is left."""
        for k in range(attempts):
            if self.send((), sender):
                return
            if k + 1 < attempts:
                time.sleep(backoff_s * 2**k)
        raise RuntimeError(f"{self.what}: {len(self.items)} item(s) could not be sent after {attempts} attempts")
