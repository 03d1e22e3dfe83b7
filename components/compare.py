"""compare: all evaluated runs → Markdown table, the pipeline run's report as HTML (KFP UI), best run."""

from kfp.dsl import HTML, Markdown, Output


def compare(
    results: list[dict],
    table: Output[Markdown],
    page: Output[HTML],
) -> dict:
    """Rank cells by mean validation AP over seeds and write the report (mdfnet.pipeline.steps.compare_step).

    Args:
        results: The summaries of every evaluate task (collected over the ParallelFor).

    Returns:
        Output: The best run's summary (the best seed of the best cell), for register.
        table: The comparison of all cells (Markdown).
        page: The pipeline run's report, or the comparison table's page when the report failed (HTML).
    """
    from mdfnet.pipeline import outputs, steps

    res = steps.compare_step(results)
    outputs.write_text(table.path, res["markdown"])
    outputs.write_text(page.path, res["html"])
    return res["best"]
