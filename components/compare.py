"""compare: all evaluated runs → Markdown table, the pipeline run's report as HTML (KFP UI), best run."""

from kfp.dsl import HTML, Markdown, Output


def compare(
    results: list,
    table: Output[Markdown],
    page: Output[HTML],
) -> dict:
    """Rank cells by mean validation AP over seeds, write the report (page); return the best run's summary
    (mdfnet.pipeline.steps.compare_step)."""
    from mdfnet.pipeline import reports, steps

    res = steps.compare_step(results)
    reports.write_text(table.path, res["markdown"])
    reports.write_text(page.path, res["html"])
    return res["best"]
