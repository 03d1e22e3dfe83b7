"""compare: all evaluated runs → Markdown table, the pipeline run's report as HTML (KFP UI), best run; links to the
MLflow runs and the best run's metrics for KFP's run comparison."""

from kfp.dsl import HTML, Markdown, Metrics, Output


def compare(
    results: list[dict],
    mlflow_ui: str,
    table: Output[Markdown],
    page: Output[HTML],
    metrics: Output[Metrics],
) -> dict:
    """Rank cells by mean validation AP over seeds and write the report (mdfnet.pipeline.steps.compare_step).

    Args:
        results: The summaries of every evaluate task (collected over the ParallelFor).
        mlflow_ui: MLflow UI address the outputs link to; empty: the tracking URI when it is http(s).

    Returns:
        Output: The best run's summary (the best seed of the best cell), for register.
        table: The comparison of all cells with links to the MLflow pipeline run and cell runs (Markdown).
        page: The pipeline run's report, or the comparison table's page when the report failed (HTML).
        metrics: The best run's final AP, AR and look-alike balanced accuracy on val and test (KFP run comparison).
    """
    from mdfnet import tracking
    from mdfnet.pipeline import links, outputs, steps

    base = links.ui_base(tracking.resolve_tracking_uri(), mlflow_ui)  # a bad address fails before anything is logged
    res = links.with_links(steps.compare_step(results), results, base)
    outputs.write_text(table.path, res["markdown"])
    outputs.write_text(page.path, res["html"])
    for name, value in links.best_metrics(res["best"]).items():
        metrics.log_metric(name, value)
    return res["best"]
