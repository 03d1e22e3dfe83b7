"""train (GPU): one grid item → Model (best checkpoint + run.json) and its training metrics."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output


def train(
    item: dict,
    data: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    max_steps: int = 0,
):
    """Train the item's config into its MLflow cell run (mdfnet.pipeline.steps.train_step).

    A retried task resumes from the checkpoints its earlier attempt copied to durable storage.

    Args:
        item: One grid item of the expand_grid task: the cell's resolved ``TrainConfig``, its labels, seed and
            the parent MLflow run.
        data: The preprocessed dataset.
        max_steps: Stop after this many optimiser steps; 0 trains the configured epochs.

    Returns:
        model: The best checkpoint (the last one without validation) and ``run.json`` (metadata: ``run_id``,
            ``model_uri``, ``cell``, ``seed``).
        metrics: ``steps``, and ``best_val_ap`` and ``best_epoch`` when the run was validated.
    """
    from mdfnet.pipeline import steps

    info = steps.train_step(item, data.path, model.path, max_steps=max_steps or None)
    model.metadata.update({k: info[k] for k in ("run_id", "model_uri", "cell", "seed")})
    metrics.log_metric("steps", info["steps"])
    if info["best_val_ap"] is not None:
        metrics.log_metric("best_val_ap", info["best_val_ap"])
        metrics.log_metric("best_epoch", info["best_epoch"])
