"""Preprocess a joined data set: clean, split by patient, fit the clinical transform on train, cache images.

Output folder (read by :class:`mdfnet.data.MDFDataset`):

- ``instances.parquet``: joined rows, cleaned clinical values (raw ones kept as ``raw_<name>``), ``split``
  (train/val/test) and ``cache_index`` (row of the image in ``images.npy``);
- ``boxes.parquet``: ``reflacx_id, label, label_id (1..5), xmin, ymin, xmax, ymax`` in cached-image pixels;
- ``images.npy``: uint8 ``[M, S, S]`` grayscale images, each decoded once and resized to ``S = image_size``
  (loaded with ``mmap_mode="r"``: no JPEG decoding during training);
- ``preprocessing.json``: image size, classes, features, and the **train-only** imputation medians and
  standardisation means/stds (:class:`ClinicalTransform`) so inference applies the same transform;
- ``cleaning.csv`` (column, rule, count) and ``splits.csv`` (split, readings, subjects, with_lesion);
- ``correlation.csv``: clinical features × lesion presence on the train split (:func:`feature_lesion_correlation`).
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from tqdm import tqdm

from mdfnet.config import ConfigError, save_config
from mdfnet.data import schema
from mdfnet.data.clean import clean_clinical
from mdfnet.data.images import ImageReadError, read_gray
from mdfnet.data.join import image_root

log = logging.getLogger(__name__)
SPLITS: tuple[str, ...] = ("train", "val", "test")
REFLACX_SPLIT_MAP = {"train": "train", "validate": "val", "val": "val", "validation": "val", "test": "test"}


class PreprocessError(ValueError):
    """The joined data cannot be preprocessed; the message names the value and what was expected."""


@dataclass
class PreprocessConfig:
    """Keys settable with ``--set key=value``.

    ``split``: ``patient`` = seeded patient-level split with ``fractions`` (stratified on lesion presence);
    ``reflacx`` = REFLACX's own ``split`` column (train/validate/test), patients kept together.
    """

    image_size: int = 512
    split: Literal["patient", "reflacx"] = "patient"
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0
    workers: int = 2

    def validate(self) -> None:
        s = self.image_size
        if s < 16 or s > 4096 or s & (s - 1):
            raise ConfigError(f"image_size must be a power of two in [16, 4096] (the spatialiser doubles 1→S), got {s}")
        if len(self.fractions) != 3 or any(f < 0 for f in self.fractions) or abs(sum(self.fractions) - 1) > 1e-6:
            raise ConfigError(f"fractions must be three non-negative numbers summing to 1, got {self.fractions}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")


@dataclass
class ClinicalTransform:
    """Median imputation + standardisation of the numeric features, fitted on the train split only.

    ``transform`` maps a frame of cleaned clinical values to ``numeric`` float32 ``[n, 9]`` (standardised,
    imputed, in :data:`schema.NUMERIC_FEATURES` order) and ``categorical`` int64 ``[n, 1]`` (gender code,
    0 = missing).
    """

    median: dict[str, float]
    mean: dict[str, float]
    std: dict[str, float]
    gender_codes: dict[str, int] = field(default_factory=lambda: dict(schema.GENDER_CODES))

    @classmethod
    def fit(cls, train: pd.DataFrame) -> ClinicalTransform:
        if len(train) == 0:
            raise PreprocessError("cannot fit the clinical transform: the train split is empty")
        median, mean, std = {}, {}, {}
        for c in schema.NUMERIC_FEATURES:
            v = pd.to_numeric(train[c], errors="coerce").astype("float64")
            med = float(v.median()) if v.notna().any() else 0.0
            imputed = v.fillna(med)
            sd = float(imputed.std(ddof=0))
            median[c], mean[c], std[c] = med, float(imputed.mean()), sd if sd > 1e-8 else 1.0
        return cls(median, mean, std)

    def transform(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        cols = []
        for c in schema.NUMERIC_FEATURES:
            v = pd.to_numeric(df[c], errors="coerce").astype("float64").fillna(self.median[c])
            cols.append(((v - self.mean[c]) / self.std[c]).to_numpy())
        numeric = np.stack(cols, axis=1).astype(np.float32) if len(df) else np.zeros((0, 9), np.float32)
        gender = df["gender"].map(lambda g: self.gender_codes.get(g, 0) if isinstance(g, str) else 0)
        categorical = gender.to_numpy(dtype=np.int64).reshape(-1, 1)
        return numeric, categorical

    def to_dict(self) -> dict:
        return {"median": self.median, "mean": self.mean, "std": self.std, "gender_codes": self.gender_codes}

    @classmethod
    def from_dict(cls, d: dict) -> ClinicalTransform:
        return cls(dict(d["median"]), dict(d["mean"]), dict(d["std"]), dict(d["gender_codes"]))


@dataclass
class PreprocessResult:
    out_dir: Path
    split_counts: pd.DataFrame
    cleaning: pd.DataFrame
    n_images: int

    def summary_table(self) -> str:
        changed = self.cleaning[self.cleaning["count"] > 0]
        lines = ["cleaning (column, rule, count):"]
        lines += [f"  {r.column:<12} {r.rule:<48} {r.count:>6}" for r in changed.itertuples()]
        lines.append("splits (by patient):")
        lines += [f"  {r.split:<6} readings={r.readings:<6} subjects={r.subjects:<6} with_lesion={r.with_lesion}"
                  for r in self.split_counts.itertuples()]
        lines.append(f"cached images: {self.n_images} in {self.out_dir / 'images.npy'}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- splitting
def patient_split(subjects: pd.Series, has_lesion: pd.Series, fractions: tuple[float, float, float],
                  seed: int) -> pd.Series:
    """Assign each reading a split so that no subject is in two splits.

    Subjects are ordered by stratum (has any lesion) and, within a stratum, by a seeded permutation; each
    subject then goes to the split with the largest deficit ``fraction·(k+1) − assigned``: exact proportions,
    stratified on lesion presence, deterministic for a seed. Returns a Series aligned with ``subjects``.
    """
    per_subject = pd.DataFrame({"subject": subjects.to_numpy(), "lesion": has_lesion.to_numpy()})
    per_subject = per_subject.groupby("subject", sort=True)["lesion"].any().reset_index()
    rng = np.random.default_rng(seed)
    per_subject["r"] = rng.permutation(len(per_subject))
    per_subject = per_subject.sort_values(["lesion", "r"]).reset_index(drop=True)
    frac = np.asarray(fractions, dtype=np.float64)
    assigned = np.zeros(3)
    choice = np.empty(len(per_subject), dtype=np.int64)
    for k in range(len(per_subject)):  # loop over subjects (hundreds), not rows of a large table
        deficit = frac * (k + 1) - assigned
        j = int(np.argmax(deficit))
        choice[k] = j
        assigned[j] += 1
    mapping = dict(zip(per_subject["subject"], np.asarray(SPLITS)[choice], strict=True))
    return subjects.map(mapping)


def reflacx_split(df: pd.DataFrame) -> tuple[pd.Series, int]:
    """REFLACX's split column mapped to train/val/test. A subject found in several REFLACX splits is moved
    entirely to the most held-out one (test > val > train) so no patient leaks; returns (split, moved)."""
    mapped = df["reflacx_split"].astype("string").str.strip().str.lower().map(REFLACX_SPLIT_MAP)
    bad = mapped.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise PreprocessError(
            f"reading {df['reflacx_id'].iloc[i]!r}: REFLACX split {df['reflacx_split'].iloc[i]!r} is not one of "
            f"{sorted(REFLACX_SPLIT_MAP)}"
        )
    rank = mapped.map({"train": 0, "val": 1, "test": 2})
    top = rank.groupby(df["subject_id"]).transform("max")
    moved = int((top != rank).sum())
    return top.map({0: "train", 1: "val", 2: "test"}), moved


# ----------------------------------------------------------------------------- images
def _load_resized(path: Path, size: int) -> np.ndarray:
    try:
        return read_gray(path, size)[0]
    except ImageReadError as e:
        raise PreprocessError(str(e)) from e


def cache_images(paths: list[Path], out_path: Path, size: int, workers: int = 2) -> None:
    """Decode each image once, resize to ``size×size`` and store them in a uint8 ``.npy`` ``[M, S, S]``."""
    arr = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.uint8, shape=(len(paths), size, size))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda p: _load_resized(p, size), paths)
        for i, img in enumerate(tqdm(results, total=len(paths), desc="cache images", unit="img", leave=False)):
            arr[i] = img
    arr.flush()
    del arr


def feature_lesion_correlation(inst: pd.DataFrame, boxes: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation (pairwise complete) between each cleaned clinical feature (gender: F = 1, M = 0) and
    the presence of each lesion class in a reading, over the rows of ``inst`` (the train split): ``[10, 5]``,
    index = features, columns = classes (the paper's Fig. 5b). NaN where a column is constant."""
    present = pd.DataFrame({c: inst["reflacx_id"].isin(boxes.loc[boxes["label"] == c, "reflacx_id"]).astype(float)
                            for c in schema.CLASSES}, index=inst.index)
    feats = inst[list(schema.NUMERIC_FEATURES)].astype("float64")
    feats["gender"] = inst["gender"].map({"F": 1.0, "M": 0.0})
    with np.errstate(divide="ignore", invalid="ignore"):
        both = pd.concat([feats, present], axis=1).corr(method="pearson", min_periods=3)
    return both.loc[list(schema.ALL_FEATURES), list(schema.CLASSES)]


# ----------------------------------------------------------------------------- main entry
def _split(inst: pd.DataFrame, has_lesion: pd.Series, cfg: PreprocessConfig,
           cleaning: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame]:
    """The split of every reading (by patient, or REFLACX's own) and the cleaning report (+ subjects moved)."""
    if cfg.split == "patient":
        split = patient_split(inst["subject_id"], has_lesion, cfg.fractions, cfg.seed)
    else:
        split, moved = reflacx_split(inst)
        cleaning = pd.concat([cleaning, pd.DataFrame(
            [("split", "subject in several REFLACX splits -> most held-out split", moved)],
            columns=cleaning.columns)], ignore_index=True)
    overlap = pd.Series(np.asarray(split), index=inst.index).groupby(inst["subject_id"]).nunique()
    if (overlap > 1).any():  # invariant, never expected
        raise AssertionError(f"subjects in several splits: {overlap[overlap > 1].index.tolist()[:5]}")
    return split, cleaning


def _scaled_boxes(boxes: pd.DataFrame, inst: pd.DataFrame, image_size: int) -> pd.DataFrame:
    """Boxes in cached-image pixels (``image_size`` square), with their class id."""
    size = inst.set_index("reflacx_id")[["image_width", "image_height"]]
    b = boxes.merge(size, left_on="reflacx_id", right_index=True, how="inner")
    sx = image_size / b["image_width"]
    sy = image_size / b["image_height"]
    return pd.DataFrame({
        "reflacx_id": b["reflacx_id"].to_numpy(),
        "label": b["label"].to_numpy(),
        "label_id": b["label"].map(schema.CLASS_TO_ID).astype("int64").to_numpy(),
        "xmin": (b["xmin"] * sx).to_numpy(), "ymin": (b["ymin"] * sy).to_numpy(),
        "xmax": (b["xmax"] * sx).to_numpy(), "ymax": (b["ymax"] * sy).to_numpy(),
    })


def preprocess(joined_dir: str | Path, out_dir: str | Path, cfg: PreprocessConfig | None = None) -> PreprocessResult:
    """Clean, split, fit the clinical transform on train only, cache images; see the module docstring."""
    cfg = cfg or PreprocessConfig()
    cfg.validate()
    joined_dir, out_dir = Path(joined_dir), Path(out_dir)
    inst_path = joined_dir / "instances.parquet"
    if not inst_path.is_file():
        raise PreprocessError(f"{inst_path} not found: run `mdfnet join` first")
    inst = pd.read_parquet(inst_path)
    boxes = pd.read_parquet(joined_dir / "boxes.parquet")
    if len(inst) == 0:
        raise PreprocessError(f"{inst_path} holds no readings: nothing to preprocess (see exclusions.csv)")

    raw = inst[[*schema.NUMERIC_FEATURES, "gender"]].add_prefix("raw_")
    inst, cleaning = clean_clinical(inst)
    inst = pd.concat([inst, raw.astype({"raw_pain": "string"})], axis=1)

    has_lesion = inst["reflacx_id"].isin(boxes["reflacx_id"])
    inst["split"], cleaning = _split(inst, has_lesion, cfg, cleaning)
    transform = ClinicalTransform.fit(inst[inst["split"] == "train"])

    out_dir.mkdir(parents=True, exist_ok=True)
    root = image_root(joined_dir)
    dicoms = inst.drop_duplicates("dicom_id")[["dicom_id", "image_path"]].reset_index(drop=True)
    inst["cache_index"] = inst["dicom_id"].map(dict(zip(dicoms["dicom_id"], dicoms.index, strict=True))).astype("int64")
    cache_images([root / p for p in dicoms["image_path"]], out_dir / "images.npy", cfg.image_size, cfg.workers)

    scaled = _scaled_boxes(boxes, inst, cfg.image_size)
    inst.to_parquet(out_dir / "instances.parquet", index=False)
    scaled.to_parquet(out_dir / "boxes.parquet", index=False)
    cleaning.to_csv(out_dir / "cleaning.csv", index=False)
    feature_lesion_correlation(inst[inst["split"] == "train"], boxes).to_csv(out_dir / "correlation.csv")

    counts = pd.DataFrame({
        "split": list(SPLITS),
        "readings": [int((inst["split"] == s).sum()) for s in SPLITS],
        "subjects": [int(inst.loc[inst["split"] == s, "subject_id"].nunique()) for s in SPLITS],
        "with_lesion": [int(has_lesion[inst["split"] == s].sum()) for s in SPLITS],
    })
    counts.to_csv(out_dir / "splits.csv", index=False)
    meta = {
        "image_size": cfg.image_size,
        "classes": list(schema.CLASSES),
        "numeric_features": list(schema.NUMERIC_FEATURES),
        "categorical_features": list(schema.CATEGORICAL_FEATURES),
        "transform": transform.to_dict(),
        "splits": counts.set_index("split")["readings"].to_dict(),
    }
    (out_dir / "preprocessing.json").write_text(json.dumps(meta, indent=2))
    save_config(cfg, out_dir / "preprocess_config.yaml")
    for name in ("exclusions.csv", "join_meta.json"):
        src = joined_dir / name
        if src.is_file():
            (out_dir / name).write_bytes(src.read_bytes())
    log.info("preprocess: %s", counts.to_dict("records"))
    return PreprocessResult(out_dir, counts, cleaning, len(dicoms))


def load_transform(preprocessed_dir: str | Path) -> tuple[ClinicalTransform, dict]:
    """The fitted :class:`ClinicalTransform` and the whole ``preprocessing.json`` of a preprocessed folder."""
    path = Path(preprocessed_dir) / "preprocessing.json"
    if not path.is_file():
        raise PreprocessError(f"{path} not found: is {preprocessed_dir} the output of `mdfnet preprocess`?")
    meta = json.loads(path.read_text())
    return ClinicalTransform.from_dict(meta["transform"]), meta
