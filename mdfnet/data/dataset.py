"""``MDFDataset``: a preprocessed split as a torch Dataset for torchvision-style detection."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mdfnet.data import schema
from mdfnet.data.preprocess import SPLITS, PreprocessError, load_transform

log = logging.getLogger(__name__)

SHUFFLE_SEED = 20_111
"""Fixed seed of the shuffled-clinical control's permutation (``data.shuffle_clinical``), mixed with the split."""


def select_features(features: Sequence[str] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Validate a feature subset; return (numeric, categorical) names in :data:`schema.ALL_FEATURES` order.

    ``None`` means all 10 features; ``[]`` means none (the image-only baseline).
    """
    if features is None:
        return schema.NUMERIC_FEATURES, schema.CATEGORICAL_FEATURES
    unknown = [f for f in features if f not in schema.ALL_FEATURES]
    if unknown:
        raise ValueError(f"unknown clinical feature(s) {unknown}; expected a subset of {list(schema.ALL_FEATURES)}")
    chosen = set(features)
    return (tuple(f for f in schema.NUMERIC_FEATURES if f in chosen),
            tuple(f for f in schema.CATEGORICAL_FEATURES if f in chosen))


class MDFDataset(Dataset):
    """One split of a preprocessed folder.

    Item ``i`` is ``(image, clinical, target)``:

    - ``image``: uint8 ``[1, S, S]``, the cached grayscale CXR as it is (``S·S`` bytes); the model's transform
      (:class:`mdfnet.model.detector.FixedSizeTransform`) scales, normalises and expands it to 3 channels on
      the model's device, so DataLoader workers pass 1 byte per pixel through shared memory, not 12;
    - ``clinical``: ``{"numeric": float32 [k], "categorical": int64 [m]}`` for the selected features
      (numeric imputed + standardised with the train-only transform; gender 0 = missing, 1 = F, 2 = M);
    - ``target``: ``{"boxes": float32 [N, 4] xyxy in cached pixels, "labels": int64 [N] in 1..5,
      "masks": uint8 [N, S, S] (filled boxes)}``; ``N = 0`` gives ``[0, 4]``/``[0]``/``[0, S, S]``.

    ``ids[i]`` is the reading's ``reflacx_id``.

    ``shuffle_clinical``: the shuffled-clinical control. Every study (image) of the split receives the clinical
    values of another study of the same split (:func:`shuffled_clinical_rows`: a fixed permutation, the same
    in training and evaluation), so the clinical input keeps its distribution but loses its link to the image.
    """

    def __init__(self, preprocessed_dir: str | Path, split: str, features: Sequence[str] | None = None,
                 with_masks: bool = True, shuffle_clinical: bool = False) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(preprocessed_dir)
        self.transform, meta = load_transform(self.root)
        self.image_size: int = int(meta["image_size"])
        self.classes: tuple[str, ...] = tuple(meta["classes"])
        self.split = split
        self.with_masks = with_masks
        self.numeric_features, self.categorical_features = select_features(features)
        self.features: tuple[str, ...] = self.numeric_features + self.categorical_features

        inst = pd.read_parquet(self.root / "instances.parquet")
        inst = inst[inst["split"] == split].reset_index(drop=True)
        self.instances = inst
        self.ids: list[str] = inst["reflacx_id"].astype(str).tolist()
        numeric, categorical = self.transform.transform(inst)
        num_idx = [schema.NUMERIC_FEATURES.index(f) for f in self.numeric_features]
        cat_idx = [schema.CATEGORICAL_FEATURES.index(f) for f in self.categorical_features]
        self.shuffle_clinical = shuffle_clinical
        if shuffle_clinical:
            rows = shuffled_clinical_rows(inst["dicom_id"].astype(str).to_numpy(), split)
            numeric, categorical = numeric[rows], categorical[rows]
        self._numeric = torch.from_numpy(np.ascontiguousarray(numeric[:, num_idx]))
        self._categorical = torch.from_numpy(np.ascontiguousarray(categorical[:, cat_idx]))
        self._cache_index = inst["cache_index"].to_numpy(dtype=np.int64)

        boxes = pd.read_parquet(self.root / "boxes.parquet")
        boxes = boxes[boxes["reflacx_id"].isin(self.ids)]
        groups = {rid: g for rid, g in boxes.groupby("reflacx_id", sort=False)}
        self._boxes: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        for rid in self.ids:
            g = groups.get(rid)
            if g is None:
                self._boxes.append(torch.zeros((0, 4), dtype=torch.float32))
                self._labels.append(torch.zeros((0,), dtype=torch.int64))
            else:
                self._boxes.append(torch.tensor(g[["xmin", "ymin", "xmax", "ymax"]].to_numpy(), dtype=torch.float32))
                self._labels.append(torch.tensor(g["label_id"].to_numpy(), dtype=torch.int64))
        self._images: np.ndarray | None = None  # opened lazily (per DataLoader worker)
        if not (self.root / "images.npy").is_file():
            raise PreprocessError(f"{self.root / 'images.npy'} not found: run `mdfnet preprocess` first")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.root / "images.npy", mmap_mode="r")
        return self._images

    def clinical(self, i: int) -> dict[str, torch.Tensor]:
        return {"numeric": self._numeric[i].clone(), "categorical": self._categorical[i].clone()}

    def target(self, i: int) -> dict[str, torch.Tensor]:
        """``boxes`` float32 [N,4] and ``labels`` int64 [N] of item ``i``, without reading the image."""
        return {"boxes": self._boxes[i].clone(), "labels": self._labels[i].clone()}

    def image(self, i: int) -> torch.Tensor:
        """The cached grayscale image of item ``i``: uint8 ``[1, S, S]`` (a copy out of the memory map)."""
        return torch.from_numpy(np.array(self.images[self._cache_index[i]], dtype=np.uint8)).unsqueeze(0)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for split {self.split!r} of size {len(self)}")
        target = self.target(i)
        if self.with_masks:
            target["masks"] = boxes_to_masks(target["boxes"], self.image_size)
        return self.image(i), self.clinical(i), target


class SplitSubset(Dataset):
    """The first ``n`` items of a split with the split's cheap API (``ids``, ``target``, ``image_size``,
    ``classes``), so it can be predicted and scored like the split itself (the train-AP subset). Items are
    ``(image uint8 [1,S,S], clinical, target without masks)``."""

    def __init__(self, ds: MDFDataset, n: int) -> None:
        self.ds, self.n = ds, min(int(n), len(ds))
        self.ids, self.image_size, self.classes, self.split = ds.ids[: self.n], ds.image_size, ds.classes, ds.split

    def __len__(self) -> int:
        return self.n

    def target(self, i: int) -> dict[str, torch.Tensor]:
        return self.ds.target(i)

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for a subset of size {self.n}")
        return self.ds.image(i), self.ds.clinical(i), self.ds.target(i)


def shuffled_clinical_rows(images: np.ndarray, split: str) -> np.ndarray:
    """Row whose clinical values row ``i`` receives in the shuffled-clinical control: ``Int64[n]``.

    ``images``: the image (study) key of each row, ``[n]``. The distinct images, sorted, are put in a random order
    fixed by :data:`SHUFFLE_SEED` and ``split``; each image takes the values of the next one in that order (a
    cyclic shift, so no image keeps its own values when there are at least 2), read from that image's first row.
    Rows of one image (several readings) all receive the same values.
    """
    keys, first_row, codes = np.unique(images, return_index=True, return_inverse=True)  # first row of each image
    n = len(keys)
    if n < 2:
        log.warning("shuffle_clinical: split %r has %d image(s); nothing to shuffle", split, n)
        return np.arange(len(images), dtype=np.int64)
    rng = np.random.default_rng([SHUFFLE_SEED, zlib.crc32(split.encode())])
    order = rng.permutation(n)
    donor = np.empty(n, dtype=np.int64)
    donor[order] = np.roll(order, -1)  # image order[k] takes the values of image order[k + 1]
    return first_row[donor[codes]].astype(np.int64)


def boxes_to_masks(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Filled-box masks: uint8 ``[N, size, size]`` with 1 inside each box (pixel centres inside)."""
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros((0, size, size), dtype=torch.uint8)
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    x_in = (centres[None, :] >= boxes[:, 0:1]) & (centres[None, :] <= boxes[:, 2:3])  # [N, W]
    y_in = (centres[None, :] >= boxes[:, 1:2]) & (centres[None, :] <= boxes[:, 3:4])  # [N, H]
    return (y_in[:, :, None] & x_in[:, None, :]).to(torch.uint8)


def collate_detection(batch):
    """List of dataset items → ``(images: list[uint8 [1,S,S]], clinical: {"numeric": [B,k], "categorical": [B,m]},
    targets: list[dict])`` as :class:`mdfnet.model.detector.MDFNet` takes them (its transform converts the
    images on the model's device)."""
    images, clinical, targets = zip(*batch, strict=True)
    return (
        list(images),
        {
            "numeric": torch.stack([c["numeric"] for c in clinical]),
            "categorical": torch.stack([c["categorical"] for c in clinical]),
        },
        list(targets),
    )
