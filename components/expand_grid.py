"""expand_grid: grid name × seeds → loop items; opens (or, with KFP's MLflow plugin, finds) the pipeline run."""

from kfp.dsl import Dataset, Input


def expand_grid(
    data: Input[Dataset],
    grids: dict,
    grid: str,
    seeds: list,
    overrides: list,
    experiment: str,
    run_name: str,
    run_id: str,
    images: dict,
) -> list:
    """One item per cell × seed carrying its resolved config, labels and the parent MLflow run (mdfnet.pipeline.steps)."""
    from mdfnet.pipeline import steps

    return steps.expand_grid(grids, grid, [int(s) for s in seeds], [str(o) for o in overrides], data.path,
                             experiment, run_name, kfp_run_id=run_id, image_tags=images)
