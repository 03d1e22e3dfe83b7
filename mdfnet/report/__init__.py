"""``mdfnet report``: the paper's tables and figures regenerated from tracked runs, with seeds and intervals.

- :mod:`mdfnet.cells` (below this package; pure): runs → ranked cells (mean ± sd over seeds, bootstrap
  intervals); the compare step ranks there too;
- :mod:`~mdfnet.report.tables` (pure): sections, rows, the paired Δ test AP against the baseline and its verdict;
- :mod:`~mdfnet.report.deltas`: the paired bootstrap of Δ test AP from the runs' stored predictions (report and
  compare step);
- :mod:`~mdfnet.report.comparison` (pure): the compare step's table (Markdown, HTML page, ranking rows, Δ);
- :mod:`~mdfnet.report.render`: Markdown tables and self-contained HTML pages (the pipeline steps' too);
- :mod:`~mdfnet.report.collect`: an MLflow experiment's cell runs, histories and artefacts;
- :mod:`~mdfnet.report.figures`: sweep, FROC, generalisation, correlation and attribution PNGs;
- :mod:`~mdfnet.report.paper`: the published numbers shown beside ours;
- :mod:`~mdfnet.report.build`: ``build_report`` → ``report.md`` + PNGs and a self-contained ``report.html``.

``build_report`` (pandas, matplotlib) is imported when first used, so the pure modules stay cheap to import.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {"Report": "build", "build_report": "build", "ReportError": "collect"}

__all__ = ["Report", "ReportError", "build_report"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"mdfnet.report.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'mdfnet.report' has no attribute {name!r}")
