"""compare: all evaluated runs → Markdown + HTML table (KFP UI) and the best run by validation AP."""

from kfp.dsl import HTML, Markdown, Output


def compare(
    results: list,
    table: Output[Markdown],
    page: Output[HTML],
) -> dict:
    """Rank cells by mean validation AP over seeds; return the best run's summary (mdfnet.pipeline.steps.compare)."""
    from mdfnet.pipeline import reports, steps

    res = steps.compare(results)
    reports.write_text(table.path, res["markdown"])
    reports.write_text(page.path, res["html"])
    return res["best"]
