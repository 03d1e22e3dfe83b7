"""Data: source schema, synthetic sources, join, cleaning, patient-level splits, cached dataset.

Heavy modules (torch) are imported lazily so that ``mdfnet.data.schema`` stays cheap.
"""

from __future__ import annotations

__all__ = ["MDFDataset", "SplitSubset", "collate_detection", "select_features"]


def __getattr__(name: str):
    if name in __all__:
        from mdfnet.data import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'mdfnet.data' has no attribute {name!r}")
