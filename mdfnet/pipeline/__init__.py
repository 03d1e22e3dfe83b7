"""What the KFP components call, by concern: :mod:`~mdfnet.pipeline.sources` (local or S3),
:mod:`~mdfnet.pipeline.grids` (grids → planned cells → typed loop items), :mod:`~mdfnet.pipeline.ranking` (pure),
:mod:`~mdfnet.pipeline.reports` (Markdown/HTML) and :mod:`~mdfnet.pipeline.steps` (the step functions).
Torch-free at import: only ``train_step`` / ``evaluate_step`` import torch, when they run."""
