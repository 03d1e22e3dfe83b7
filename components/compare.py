"""compare: all evaluated runs → Markdown + HTML table (KFP UI) and the best run by validation AP."""

from kfp import dsl
from kfp.dsl import HTML, Markdown, Output

from components._images import image


@dsl.component(base_image=image("compare"), install_kfp_package=False)
def compare(
    results: list,
    table: Output[Markdown],
    page: Output[HTML],
) -> dict:
    """Rank cells by mean validation AP over seeds; return the best run's summary (mdfnet.steps.compare)."""
    from mdfnet import steps

    res = steps.compare(results)
    steps.write_text(table.path, res["markdown"])
    steps.write_text(page.path, res["html"])
    return res["best"]
