"""Provenance of a run: which data (a content fingerprint of the dataset folder) and which code (the commit)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path


class ProvenanceError(ValueError):
    """A provenance value cannot be computed; the message names the path."""


def dataset_fingerprint(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 over every file of a dataset folder (sorted relative paths, sizes and bytes) → 64 hex chars.

    Independent of where the folder lives and of file times; any byte or file-name change changes it.
    """
    root = Path(path)
    if not root.is_dir():
        raise ProvenanceError(f"dataset folder {str(root)!r} does not exist")
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        h.update(f"{rel}\0{f.stat().st_size}\0".encode())
        with f.open("rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def git_sha(repo: str | Path | None = None) -> str:
    """``MDFNET_GIT_SHA`` (baked into images at build time) or ``git rev-parse HEAD`` of ``repo``; else ``unknown``."""
    env = os.environ.get("MDFNET_GIT_SHA")
    if env:
        return env
    repo = Path(repo) if repo else Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", sha) else "unknown"
