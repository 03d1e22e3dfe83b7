"""What a cell run records about its data and its code, so that the MLflow UI answers a reviewer's first questions:
the train/val/test splits as MLflow **dataset inputs** (the runs table's *Dataset* column, the run page's
*Datasets*) and the **source tags** (*Source*, *Version*).

A split of a preprocessed folder becomes one dataset input (:func:`split_datasets`):

==============  =================================================================================================
field           value
==============  =================================================================================================
name            ``synthetic-<split>`` when the sources carry the synthetic generator's marker
                (:data:`mdfnet.data.schema.SYNTHETIC_MARKER`, copied by the join into ``join_meta.json``), else
                ``reflacx-<split>``
digest          the first 16 hex digits of :func:`split_sha256`: the split's rows of ``instances.parquet`` and
                ``boxes.parquet`` (as CSV), its cached images (bytes) and ``preprocessing.json`` (the train-fitted
                transform every split is scaled with); any change to what the model saw or was scored on changes it
source          where the sources were read (``join_meta.json``'s ``source_uri``: ``s3://…`` or ``file://…``); the
                preprocessed folder itself when there is none
schema          the split's instance columns (``mlflow.data.from_pandas``)
profile         ``num_rows`` (readings), ``num_elements``, ``subjects``, ``with_lesion``, ``boxes``, ``images``,
                the full ``sha256`` and ``synthetic`` (the generator's marker: seed, studies…; null for real data)
context tag     ``training``, ``validation``, ``test`` (:data:`~mdfnet.tracking_names.DATASET_CONTEXTS`)
==============  =================================================================================================

Everything is logged through :class:`mdfnet.tracking_logger.MlflowLogger` (:func:`log_data_and_source`), so a
tracking server that is away during training delays these records and loses none. Tag names:
:mod:`mdfnet.tracking_names`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdfnet.provenance import git_sha
from mdfnet.tracking_names import (
    DATASET_CONTEXTS,
    INPUT_CONTEXT,
    SOURCE_TYPE,
    TAG_DATA_SOURCE,
    TAG_GIT_COMMIT,
    TAG_SOURCE_NAME,
    TAG_SOURCE_TYPE,
    TAG_SYNTHETIC,
)

DIGEST_CHARS = 16
"""Hex digits of the SHA-256 kept as the dataset's digest (MLflow stores at most 36; its own digests have 8)."""
SPLITS: tuple[str, ...] = tuple(DATASET_CONTEXTS)


@dataclass(frozen=True)
class DataOrigin:
    """Where a preprocessed folder's data came from: the join's ``source_uri`` and the synthetic generator's marker
    (None: the sources had none, as real downloads have none)."""

    source_uri: str
    synthetic: dict[str, Any] | None

    @classmethod
    def of(cls, data_dir: str | Path) -> DataOrigin:
        """Read from ``join_meta.json`` (the preprocess step copies the join's); a folder without one is its own
        source and is not marked synthetic."""
        from mdfnet.data.join import join_meta

        meta = join_meta(data_dir)
        return cls(str(meta.get("source_uri") or Path(data_dir).resolve().as_uri()), meta.get("synthetic"))

    @property
    def kind(self) -> str:
        """``synthetic`` or ``reflacx``: the first part of the datasets' names."""
        return "synthetic" if self.synthetic is not None else "reflacx"

    def tags(self) -> dict[str, str]:
        """:data:`~mdfnet.tracking_names.TAG_SYNTHETIC` and :data:`~mdfnet.tracking_names.TAG_DATA_SOURCE`."""
        return {TAG_SYNTHETIC: str(self.synthetic is not None).lower(), TAG_DATA_SOURCE: self.source_uri}


def source_tags(step: str) -> dict[str, str]:
    """MLflow's source tags of a run written by pipeline step function ``step`` (e.g. ``train_step``): name
    ``mdfnet.pipeline.steps.<step>``, type :data:`~mdfnet.tracking_names.SOURCE_TYPE`, and the git commit when
    it is known (a checkout, or ``MDFNET_GIT_SHA`` baked into the image)."""
    tags = {TAG_SOURCE_NAME: f"mdfnet.pipeline.steps.{step}", TAG_SOURCE_TYPE: SOURCE_TYPE}
    sha = git_sha()
    if sha != "unknown":
        tags[TAG_GIT_COMMIT] = sha
    return tags


def split_sha256(data_dir: str | Path, split: str, instances: Any | None = None, boxes: Any | None = None) -> str:
    """SHA-256 (hex) of what split ``split`` of preprocessed folder ``data_dir`` holds: its rows of
    ``instances.parquet`` and ``boxes.parquet`` as CSV, the bytes of its cached images (``images.npy``, in
    ``cache_index`` order) and ``preprocessing.json``. ``instances``/``boxes``: those tables, already read."""
    import numpy as np
    import pandas as pd

    data_dir = Path(data_dir)
    inst = instances if instances is not None else pd.read_parquet(data_dir / "instances.parquet")
    boxes = boxes if boxes is not None else pd.read_parquet(data_dir / "boxes.parquet")
    rows = inst[inst["split"] == split]
    h = hashlib.sha256()
    h.update(rows.to_csv(index=False).encode())
    h.update(boxes[boxes["reflacx_id"].isin(rows["reflacx_id"])].to_csv(index=False).encode())
    images = data_dir / "images.npy"
    if images.is_file():
        cache = np.load(images, mmap_mode="r")
        for i in sorted(set(rows["cache_index"].astype(int))):
            h.update(np.ascontiguousarray(cache[i]).tobytes())
    meta = data_dir / "preprocessing.json"
    if meta.is_file():
        h.update(meta.read_bytes())
    return h.hexdigest()


def split_datasets(data_dir: str | Path, origin: DataOrigin | None = None) -> list[Any]:
    """The three splits of preprocessed folder ``data_dir`` as ``mlflow.entities.DatasetInput`` (see the module
    docstring), ready for :meth:`~mdfnet.tracking_logger.MlflowLogger.log_inputs`."""
    import mlflow.data
    import pandas as pd
    from mlflow.entities import Dataset, DatasetInput, InputTag

    data_dir = Path(data_dir)
    origin = origin or DataOrigin.of(data_dir)
    inst = pd.read_parquet(data_dir / "instances.parquet")
    boxes = pd.read_parquet(data_dir / "boxes.parquet")
    source = _source(origin.source_uri, data_dir)
    out = []
    for split in SPLITS:
        rows = inst[inst["split"] == split]
        sha = split_sha256(data_dir, split, inst, boxes)
        with warnings.catch_warnings():  # schema inference's hint about integer columns: these are stored tables
            warnings.simplefilter("ignore", UserWarning)
            entity = mlflow.data.from_pandas(rows, source=source, name=f"{origin.kind}-{split}",
                                             digest=sha[:DIGEST_CHARS])._to_mlflow_entity()
        profile = {**json.loads(entity.profile or "{}"), "subjects": int(rows["subject_id"].nunique()),
                   "with_lesion": int(rows["reflacx_id"].isin(boxes["reflacx_id"]).sum()),
                   "boxes": int(boxes["reflacx_id"].isin(rows["reflacx_id"]).sum()),
                   "images": int(rows["cache_index"].nunique()), "sha256": sha, "synthetic": origin.synthetic}
        entity = Dataset(entity.name, entity.digest, entity.source_type, entity.source, entity.schema,
                         json.dumps(profile))
        out.append(DatasetInput(entity, [InputTag(INPUT_CONTEXT, DATASET_CONTEXTS[split])]))
    return out


def _source(uri: str, data_dir: Path) -> Any:
    """MLflow's dataset source for ``uri`` (``s3://``, ``gs://``, a path or ``file://``…); the preprocessed folder
    for a scheme MLflow does not know (what it was read from is then lost from the dataset, not the run's tags)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.exceptions import MlflowException

    with warnings.catch_warnings():  # a local path matches two equivalent resolvers: MLflow warns, picks one
        warnings.simplefilter("ignore", UserWarning)
        try:
            return resolve_dataset_source(uri)
        except MlflowException:
            return resolve_dataset_source(data_dir.resolve().as_uri())


def log_data_and_source(logger: Any, data_dir: str | Path, step: str) -> DataOrigin:
    """Tag the logger's run with its source (:func:`source_tags`) and data origin, and log the three splits as its
    dataset inputs, all through ``logger`` (an :class:`~mdfnet.tracking_logger.MlflowLogger`: kept while the
    server is away). Returns the origin."""
    origin = DataOrigin.of(data_dir)
    logger.set_tags({**source_tags(step), **origin.tags()})
    logger.log_inputs(split_datasets(data_dir, origin))
    return origin
