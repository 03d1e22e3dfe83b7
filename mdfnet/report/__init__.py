"""``mdfnet report``: the paper's tables and figures regenerated from tracked runs, with seeds and intervals.

- :mod:`~mdfnet.report.tables` (pure): runs → cells (mean ± sd over seeds, bootstrap intervals), sections,
  verdicts that never call overlapping intervals different;
- :mod:`~mdfnet.report.collect`: an MLflow experiment's cell runs, histories and artefacts;
- :mod:`~mdfnet.report.figures`: sweep, generalisation, correlation and attribution PNGs;
- :mod:`~mdfnet.report.paper`: the published numbers shown beside ours;
- :mod:`~mdfnet.report.build`: ``build_report`` → ``report.md`` + PNGs and a self-contained ``report.html``.
"""

from mdfnet.report.build import Report, build_report
from mdfnet.report.collect import ReportError

__all__ = ["Report", "ReportError", "build_report"]
