"""Every run of the paper's tables (``benchmarks/paper_tables.sh``) as committed rows: one per cell and seed.

    python benchmarks/paper_tables_runs.py [WORKDIR] [--out benchmarks/results/paper_tables]

Reads the ``paper-<table>-d<data seed>`` experiments of ``WORKDIR``'s MLflow store (``WORKDIR/mlflow.db`` unless
``MLFLOW_TRACKING_URI`` says otherwise) and the tables' wall times (``WORKDIR/<table>-d<seed>.time``, written by
the script), and writes ``OUT.json`` (a list of rows: table, data_seed, cell, the cell's labels, seed, val/test
AP, test look-alike bAcc and pair boxes missed, the run's wall time) and ``OUT.md`` (the same per table). The
paired Δ of each row against its table's reference are in the reports (``mdfnet report``; ``docs/report/``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
from pathlib import Path

from mdfnet.report.collect import ReportError, find_runs
from mdfnet.tracking_names import LABEL_KEYS, PARAM_CELL, PARAM_SEED

METRICS = {"val_ap": "final/val/ap", "test_ap": "final/test/ap", "test_lookalike_bacc": "final/test/lookalike_bacc",
           "test_lookalike_missed": "final/test/lookalike_missed"}
log = logging.getLogger("paper_tables_runs")
EXPERIMENT = re.compile(r"^paper-(?P<table>[a-z0-9]+)-d(?P<data_seed>\d+)$")


def rows(client, experiment: str) -> list[dict]:
    """One row per finished, evaluated cell run of ``experiment`` (named ``paper-<table>-d<seed>``)."""
    m = EXPERIMENT.match(experiment)
    if m is None:
        raise ValueError(f"experiment {experiment!r}: expected a name like paper-fusion-d0")
    out = []
    for r in find_runs(client, experiment).runs:
        p, metrics = r.data.params, r.data.metrics
        wall = (r.info.end_time - r.info.start_time) / 1000 if r.info.end_time else math.nan
        out.append({"table": m["table"], "data_seed": int(m["data_seed"]), "cell": p.get(PARAM_CELL, ""),
                    **{k: p.get(k, "") for k in LABEL_KEYS}, "seed": int(float(p.get(PARAM_SEED, 0))),
                    **{k: metrics.get(v, math.nan) for k, v in METRICS.items()}, "run_wall_s": round(wall, 1)})
    return sorted(out, key=lambda x: (x["table"], x["data_seed"], x["cell"], x["seed"]))


def markdown(all_rows: list[dict], times: dict[str, int]) -> str:
    lines = ["# The paper's tables on synthetic data: every run", "",
             "Written by `benchmarks/paper_tables_runs.py` from the MLflow store of `benchmarks/paper_tables.sh`.",
             "Paired Δ against each table's reference: the reports in `docs/report/paper-*`."]
    for key in sorted({(r["table"], r["data_seed"]) for r in all_rows}):
        name = f"{key[0]}-d{key[1]}"
        t = times.get(name)
        lines += ["", f"## {name}" + (f" (wall time {t // 60} min {t % 60} s)" if t is not None else ""), "",
                  "| cell | seed | val AP % | test AP % | test look-alike bAcc % | pair boxes missed | run wall s |",
                  "|---|---|---|---|---|---|---|"]
        for r in (r for r in all_rows if (r["table"], r["data_seed"]) == key):
            lines.append(f"| {r['cell']} | {r['seed']} | {100 * r['val_ap']:.2f} | {100 * r['test_ap']:.2f} | "
                         f"{100 * r['test_lookalike_bacc']:.1f} | {r['test_lookalike_missed']:.0f} | "
                         f"{r['run_wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    from mlflow import MlflowClient

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", nargs="?", default="data/paper-tables", type=Path)
    ap.add_argument("--out", default="benchmarks/results/paper_tables", help="path without suffix")
    args = ap.parse_args(argv)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{args.workdir.resolve()}/mlflow.db"
    client = MlflowClient(uri)
    names = sorted(e.name for e in client.search_experiments() if EXPERIMENT.match(e.name))
    if not names:
        raise SystemExit(f"no paper-<table>-d<seed> experiment in {uri}: run benchmarks/paper_tables.sh first")
    all_rows = []
    for n in names:
        try:
            all_rows += rows(client, n)
        except ReportError as e:  # a table still running (or failed) has no finished run yet: say so, go on
            log.warning("%s: left out", e)
    times = {p.stem: int(p.read_text()) for p in args.workdir.glob("*.time")}
    Path(f"{args.out}.json").write_text(json.dumps({"table_wall_s": times, "runs": all_rows}, indent=1) + "\n")
    Path(f"{args.out}.md").write_text(markdown(all_rows, times))
    return all_rows


if __name__ == "__main__":
    main()
