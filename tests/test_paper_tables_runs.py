"""``benchmarks/paper_tables_runs.py``: the committed per-run rows of the paper tables, read from a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mdfnet.tracking_names import TAG_ROLE


def test_rows_per_cell_and_seed_with_wall_times(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import paper_tables_runs

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("paper-fusion-d1")
    client.create_experiment("unrelated")
    client.create_experiment("paper-features-d1")  # a table still running: no finished run yet, left out

    def cell_run(cell: str, seed: int, test_ap: float | None) -> None:
        run = client.create_run(exp, tags={TAG_ROLE: "cell"})
        for k, v in {"cell": cell, "seed": seed, "variant": "mdf", "fusion": cell.split("-")[1],
                     "backbone": "mobilenet_v3_small", "feature_set": "all"}.items():
            client.log_param(run.info.run_id, k, v)
        if test_ap is not None:  # an unfinished run has no final metrics and is left out
            for k, v in {"final/val/ap": 0.5, "final/test/ap": test_ap, "final/test/lookalike_bacc": 0.75,
                         "final/test/lookalike_missed": 3}.items():
                client.log_metric(run.info.run_id, k, v)
            client.set_terminated(run.info.run_id)

    cell_run("fusion-sum", 1, 0.625)
    cell_run("fusion-sum", 0, 0.5)
    cell_run("fusion-hadamard", 0, None)
    (tmp_path / "fusion-d1.time").write_text("754\n")
    rows = paper_tables_runs.main([str(tmp_path), "--out", str(tmp_path / "out")])
    assert [(r["table"], r["data_seed"], r["cell"], r["seed"], r["fusion"], r["test_ap"]) for r in rows] == [
        ("fusion", 1, "fusion-sum", 0, "sum", 0.5), ("fusion", 1, "fusion-sum", 1, "sum", 0.625)]
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["table_wall_s"] == {"fusion-d1": 754} and saved["runs"] == rows
    md = (tmp_path / "out.md").read_text()
    assert "## fusion-d1 (wall time 12 min 34 s)" in md
    assert "| fusion-sum | 1 | 50.00 | 62.50 | 75.0 | 3 |" in md


def test_an_experiment_name_outside_the_scheme_is_refused(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import paper_tables_runs

    with pytest.raises(ValueError, match="expected a name like paper-fusion-d0"):
        paper_tables_runs.rows(None, "fusion")
