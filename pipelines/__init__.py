"""KFP pipeline definition (:mod:`pipelines.pipeline`), compiler CLI, local runner and ablation grids."""
