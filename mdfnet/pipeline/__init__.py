"""What the KFP components call, by concern: :mod:`~mdfnet.pipeline.sources` (local or S3),
:mod:`~mdfnet.pipeline.grids` (grids → planned cells → typed loop items), :mod:`~mdfnet.pipeline.outputs` (the
components' artefact files), :mod:`~mdfnet.pipeline.errors` (``StepError``) and :mod:`~mdfnet.pipeline.steps` (the
step functions). Cells are ranked in :mod:`mdfnet.cells` and rendered by :mod:`mdfnet.report` (below this package).
Torch-free at import: only ``train_step`` / ``evaluate_step`` import torch, when they run."""
