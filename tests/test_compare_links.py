"""From the KFP UI to MLflow (:mod:`mdfnet.pipeline.links`): the MLflow UI address (never with credentials), the
links to the pipeline run and every cell run in the compare step's Markdown and HTML, the best run's metrics for
its KFP ``Metrics`` artefact; and the compare component run by ``kfp.local`` writing them."""

from __future__ import annotations

import html
import math

import pytest

from mdfnet.pipeline import links


def summary(cell: str, seed: int, ap: float, run_id: str, parent: str = "p1", experiment: str = "7") -> dict:
    """An evaluate-step summary (what compare collects)."""
    return {"cell": cell, "seed": seed, "grid": "tiny", "run_name": f"{cell}-s{seed}", "labels": {"variant": cell},
            "parent_run_id": parent, "experiment_id": experiment, "run_id": run_id, "model_uri": f"runs:/{run_id}/m",
            "best_epoch": 1, "steps": 3, "metrics": {"final/val/ap": ap, "final/test/ap": ap / 2}}


@pytest.mark.parametrize(("tracking_uri", "mlflow_ui", "base"), [
    ("http://mdfnet-mlflow.kubeflow.svc.cluster.local:5000", "", "http://mdfnet-mlflow.kubeflow.svc.cluster.local:5000"),
    ("https://mlflow.example.com/", "", "https://mlflow.example.com"),
    ("https://user:s3cret@mlflow.example.com:8443/mlflow/", "", "https://mlflow.example.com:8443/mlflow"),
    ("http://in-cluster:5000", "http://localhost:5000/", "http://localhost:5000"),
    ("sqlite:////tmp/mlflow.db", "", None),
    ("file:///tmp/mlruns", "", None),
    ("databricks", "", None),
    ("http://admin:pw@[::1]:5000", "", "http://[::1]:5000"),
    ("sqlite:////tmp/mlflow.db", "https://u:p@mlflow.example.com", "https://mlflow.example.com"),
])
def test_the_ui_address_is_the_parameter_else_an_http_tracking_uri_without_credentials(tracking_uri, mlflow_ui, base):
    assert links.ui_base(tracking_uri, mlflow_ui) == base


@pytest.mark.parametrize("bad", ["localhost:5000", "ftp://mlflow.example.com", "http://", "sqlite:///x.db"])
def test_a_bad_ui_address_is_refused_naming_it(bad):
    with pytest.raises(ValueError, match=f"mlflow_ui: expected .*http.*got {bad!r}"):
        links.ui_base("http://fine:5000", bad)


def test_links_name_the_pipeline_run_then_every_cell_run():
    runs = [summary("mdf", 1, 0.6, "r3"), summary("baseline", 0, 0.5, "r1"), summary("mdf", 0, 0.7, "r2")]
    got = links.run_links("http://mlflow:5000", runs)
    assert got == [("pipeline run p1", "http://mlflow:5000/#/experiments/7/runs/p1"),
                   ("baseline-s0", "http://mlflow:5000/#/experiments/7/runs/r1"),
                   ("mdf-s0", "http://mlflow:5000/#/experiments/7/runs/r2"),
                   ("mdf-s1", "http://mlflow:5000/#/experiments/7/runs/r3")]
    # kfp.local (no pipeline run) and summaries without an experiment: only what can be linked
    assert links.run_links("http://m", [summary("a", 0, 0.1, "r1", parent="")]) == [
        ("a-s0", "http://m/#/experiments/7/runs/r1")]
    assert links.run_links("http://m", [summary("a", 0, 0.1, "r1", experiment="")]) == []


def test_markdown_and_html_carry_the_links_escaped():
    runs = [summary("a_[x]", 0, 0.5, "r1")]
    compared = {"best": runs[0], "markdown": "# Comparison\n\n| t |\n", "ranking": [],
                "html": "<html><head></head><body class='x'><h1>Report</h1></body></html>"}
    out = links.with_links(compared, runs, "http://mlflow:5000")
    assert out["markdown"].startswith("# Comparison\n\n| t |\n\n## MLflow runs\n")
    assert "- [pipeline run p1](http://mlflow:5000/#/experiments/7/runs/p1)" in out["markdown"]
    assert r"- [a\_\[x\]-s0](http://mlflow:5000/#/experiments/7/runs/r1)" in out["markdown"]
    nav = out["html"].split("<body class='x'>")[1].split("<h1>")[0]  # first thing in the body
    assert nav.startswith('<nav class="mlflow-links">') and nav.count("<li>") == 2
    assert f'<a href="http://mlflow:5000/#/experiments/7/runs/r1" target="_blank" rel="noopener">' \
           f'{html.escape("a_[x]-s0")}</a>' in nav
    hostile = [summary("<script>", 0, 0.5, "r1")]
    assert "<script>" not in links.with_links(compared, hostile, "http://m")["html"].split("<body")[1]
    # a page without <body> gets the links first; no address: nothing changes
    assert links.with_links({**compared, "html": "<p>t</p>"}, runs, "http://m")["html"].startswith("<nav")
    assert links.with_links(compared, runs, None) == compared


def test_best_metrics_are_the_finite_headline_numbers_only():
    best = {"metrics": {"final/val/ap": 0.5, "final/test/ap": math.nan, "final/test/ar": math.inf, "final/val/ar": 1,
                        "final/test/lookalike_bacc": True, "final/val/lookalike_bacc": "x", "final/test/froc/fp1": 0.3,
                        "final/val/ap/atelectasis": 0.1}}
    assert links.best_metrics(best) == {"final/val/ap": 0.5, "final/val/ar": 1.0}
    full = {f"final/{k}": 0.25 for k in ("test/ap", "test/ar", "val/ap", "val/ar", "test/lookalike_bacc",
                                         "val/lookalike_bacc")}
    assert links.best_metrics({"metrics": full}) == full
    assert links.best_metrics({}) == {}


def test_the_compare_component_writes_links_and_metrics_in_a_local_run(tmp_path, monkeypatch):
    """The component as KFP runs it (``kfp.local``, this Python): no pipeline run (nothing is tracked), the tracking
    URI a local store, so the links come from the run's ``mlflow_ui``."""
    import kfp.local

    from components import build_components

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"),
                   raise_on_error=True)
    runs = [summary("baseline", 0, 0.5, "r1", parent=""), summary("mdf", 0, 0.7, "r2", parent="")]
    task = build_components()["compare"](results=runs, mlflow_ui="http://localhost:5000/")
    table = open(task.outputs["table"].path, encoding="utf-8").read()
    assert "Best: **mdf**" in table
    assert table.endswith("## MLflow runs\n\n- [baseline-s0](http://localhost:5000/#/experiments/7/runs/r1)\n"
                          "- [mdf-s0](http://localhost:5000/#/experiments/7/runs/r2)\n")
    page = open(task.outputs["page"].path, encoding="utf-8").read()
    assert page.count('href="http://localhost:5000/#/experiments/7/runs/') == 2
    assert task.outputs["metrics"].metadata == {"final/test/ap": 0.35, "final/val/ap": 0.7}
    assert task.outputs["Output"]["run_id"] == "r2"
    assert not (tmp_path / "mlflow.db").exists()  # nothing tracked without a pipeline run
