"""evaluate: Model → val/test AP/AR (IoBB 0.5), plots, COCO predictions; summary for compare."""

from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output


def evaluate(
    model: Input[Model],
    data: Input[Dataset],
    metrics: Output[Metrics],
    predictions: Output[Dataset],
    plots: Output[HTML],
) -> dict:
    """Score the model on val and test and log into its cell run (mdfnet.pipeline.steps.evaluate_step).

    Args:
        model: The train task's model folder (checkpoint and ``run.json``).
        data: The preprocessed dataset.

    Returns:
        Output: The run's summary for compare: the grid item's fields, ``run_id``, ``model_uri`` and the headline
            ``metrics`` (AP, AR, look-alike bAcc on val and test; every metric is in MLflow and ``predictions``).
        metrics: The headline metrics (``final.val.ap``, ``final.test.ap``…; ``/`` written as ``.``).
        predictions: ``metrics.json``, COCO ground truth and predictions per split.
        plots: PR curves, counts and the score sweep on test (HTML).
    """
    from mdfnet.pipeline import outputs, steps

    res = steps.evaluate_step(model.path, data.path, predictions.path)
    for key, value in sorted(res["metrics"].items()):
        metrics.log_metric(key.replace("/", "."), value)
    outputs.copy_file(f"{predictions.path}/plots.html", plots.path)
    return res
