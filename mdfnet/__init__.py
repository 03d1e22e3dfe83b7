"""MDF-Net: Multimodal Dual-Fusion Mask R-CNN for chest X-rays + ED triage data.

Pure Python library (never imports kfp). Sub-packages: ``data`` (synthetic sources, join, cleaning,
splits, cached dataset), ``model`` (backbones, fusion ops, variants), ``evaluation`` (IoBB/IoU AP/AR),
``train``, ``tracking`` and ``cli``.
"""

__version__ = "0.1.0"
