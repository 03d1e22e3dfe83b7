"""train (GPU): one grid item → Model (best checkpoint + run.json) and its training metrics."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output


def train(
    item: dict,
    data: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    max_steps: int = 0,
):
    """Train the item's config into its MLflow cell run (mdfnet.pipeline.steps.train_step); max_steps 0 = no limit."""
    from mdfnet.pipeline import steps

    info = steps.train_step(item, data.path, model.path, max_steps=max_steps or None)
    model.metadata.update({k: info[k] for k in ("run_id", "model_uri", "cell", "seed")})
    metrics.log_metric("steps", info["steps"])
    if info["best_val_ap"] is not None:
        metrics.log_metric("best_val_ap", info["best_val_ap"])
        metrics.log_metric("best_epoch", info["best_epoch"])
