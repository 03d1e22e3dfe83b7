"""expand_grid: grid name × seeds → loop items; opens (or, with KFP's MLflow plugin, finds) the pipeline run."""

from kfp.dsl import Dataset, Input


def expand_grid(
    data: Input[Dataset],
    grids: dict,
    grid: str,
    seeds: list[int],
    overrides: list[str],
    experiment: str,
    run_name: str,
    run_id: str,
    images: dict[str, str],
    train_device: str,
) -> list:  # not list[dict]: KFP would then type the ParallelFor's loop item STRUCT instead of STRING
    """One item per cell × seed carrying its resolved config, labels and the parent MLflow run
    (mdfnet.pipeline.steps.expand_grid_step).

    Each cell's ``train.device`` is ``train_device``, set after the grid's base and before ``overrides`` (which win).

    Args:
        data: The preprocessed dataset (its fingerprint and reports go to the pipeline's MLflow run).
        grids: Every grid of ``pipelines/grids``, embedded at compile time (grid name → spec).
        grid: Name of the grid to expand.
        seeds: Seeds; each cell is trained once per seed.
        overrides: ``TrainConfig`` overrides (``key=value``) of the run, applied to every cell.
        experiment: MLflow experiment of the pipeline run.
        run_name: Name of the pipeline's MLflow run (the KFP run name).
        run_id: KFP run id, tagged on the pipeline's MLflow run.
        images: Image name → reference of the step images, tagged on the pipeline's MLflow run.
        train_device: ``train.device`` of every cell (compile-time: where the pipeline runs; ``cuda`` on the cluster).

    Returns:
        Output: One ``GridItem`` dict per cell × seed (the ParallelFor items of the train and evaluate tasks).
    """
    from mdfnet.pipeline import steps

    # KFP passes list numbers as floats (a protobuf ListValue), typed list or not: the seeds become ints here
    return steps.expand_grid_step(grids, grid, [int(s) for s in seeds], [str(o) for o in overrides], data.path,
                                  experiment, run_name, kfp_run_id=run_id, image_tags=images,
                                  train_device=train_device)
