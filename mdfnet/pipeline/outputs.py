"""KFP output files: the components write the steps' Markdown and HTML (rendered by
:mod:`mdfnet.report.render`) and copy their pages to their outputs with these."""

from __future__ import annotations

import shutil
from pathlib import Path


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` (parents created): KFP Markdown/HTML artefacts are single files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def copy_file(src: str | Path, dst: str | Path) -> None:
    """Copy one file (parents of ``dst`` created)."""
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
