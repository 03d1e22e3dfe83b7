"""MDF-Net: Multimodal Dual-Fusion Mask R-CNN for chest X-rays + ED triage data.

Pure Python library (never imports kfp). Sub-packages: ``data`` (synthetic sources, join, cleaning,
splits, cached dataset), ``model`` (catalog of names, backbones, fusion ops, variants), ``training`` (config,
loop, the run folder, checkpoints), ``evaluation`` (IoBB/IoU AP/AR, the look-alike pair), ``pipeline`` (what the
KFP steps call), ``tracking``, ``tracking_names`` (every name written into MLflow) and ``champion`` (MLflow),
``demo`` and ``cli``. "Registry" means only the container image registry; MLflow's is called the MLflow Model
Registry.
"""

__version__ = "0.1.0"
