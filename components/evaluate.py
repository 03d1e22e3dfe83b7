"""evaluate: Model → val/test AP/AR (IoBB 0.5), plots, COCO predictions; summary for compare."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components._images import image


@dsl.component(base_image=image("evaluate"), install_kfp_package=False)
def evaluate(
    model: Input[Model],
    data: Input[Dataset],
    metrics: Output[Metrics],
    predictions: Output[Dataset],
    plots: Output[HTML],
) -> dict:
    """Score the model on val and test and log into its cell run (mdfnet.steps.evaluate_step)."""
    from mdfnet import steps

    res = steps.evaluate_step(model.path, data.path, predictions.path)
    for key, value in sorted(res["metrics"].items()):
        metrics.log_metric(key.replace("/", "."), value)
    steps.copy_file(f"{predictions.path}/plots.html", plots.path)
    return res
