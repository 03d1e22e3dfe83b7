"""Cleaning, patient-level splits, train-only transform, image cache and MDFDataset on hand-built data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mdfnet.config import ConfigError, load_config
from mdfnet.data import MDFDataset, collate_detection, schema
from mdfnet.data.clean import clean_clinical, parse_pain
from mdfnet.data.dataset import boxes_to_masks
from mdfnet.data.preprocess import (
    ClinicalTransform,
    PreprocessConfig,
    PreprocessError,
    patient_split,
    preprocess,
    reflacx_split,
)


def _frame(**cols):
    n = len(next(iter(cols.values())))
    base = {c: [np.nan] * n for c in schema.NUMERIC_FEATURES}
    base["gender"] = ["F"] * n
    base.update(cols)
    return pd.DataFrame(base)


def test_pain_text_parsed():
    vals, counts = parse_pain(pd.Series(["8", "UA", "8-10", "", "unable", None, " 4 ", "7.5"]))
    assert vals.iloc[0] == 8 and vals.iloc[2] == 9 and vals.iloc[6] == 4 and vals.iloc[7] == 7.5
    assert vals.iloc[[1, 3, 4, 5]].isna().all()
    assert counts == {"text range a-b -> midpoint": 1, "non-numeric text -> missing": 2}


def test_clean_celsius_implausible_gender():
    df = _frame(temperature=[37.0, 98.6, 40.0, 150.0], dbp=[278, 80, 70, 60], o2sat=[98, 150, 97, 96],
                heartrate=[0, 80, 90, 400], pain=["3", "11", "UA", "8-10"], acuity=[1, 2.5, 5, 9],
                gender=["F", "male", "x", None])
    out, report = clean_clinical(df)
    assert out["temperature"].iloc[0] == pytest.approx(98.6)
    assert out["temperature"].iloc[2] == pytest.approx(104.0)
    assert np.isnan(out["temperature"].iloc[3])
    assert np.isnan(out["dbp"].iloc[0]) and np.isnan(out["o2sat"].iloc[1])
    assert np.isnan(out["heartrate"].iloc[0]) and np.isnan(out["heartrate"].iloc[3])
    assert np.isnan(out["pain"].iloc[1]) and out["pain"].iloc[3] == 9
    assert np.isnan(out["acuity"].iloc[1]) and np.isnan(out["acuity"].iloc[3])
    assert out["gender"].tolist() == ["F", "M", None, None]
    r = report.set_index(["column", "rule"])["count"]
    assert r[("temperature", "value in [25, 45] taken as °C -> °F")] == 2
    assert r[("dbp", "outside plausible range [20, 200] -> missing")] == 1
    assert r[("heartrate", "outside plausible range [20, 300] -> missing")] == 2
    assert r[("pain", "outside plausible range [0, 10] -> missing")] == 1
    assert r[("acuity", "not an integer -> missing")] == 1


def test_patient_split_no_leak_and_fractions():
    rng = np.random.default_rng(1)
    subjects = pd.Series(rng.integers(0, 200, size=600))
    lesion = pd.Series(rng.random(600) < 0.6)
    split = patient_split(subjects, lesion, (0.7, 0.15, 0.15), seed=3)
    assert (pd.DataFrame({"s": subjects, "p": split}).groupby("s")["p"].nunique() == 1).all()
    n_subj = subjects.nunique()
    per = pd.DataFrame({"s": subjects, "p": split}).drop_duplicates("s")["p"].value_counts()
    assert abs(per["train"] - 0.7 * n_subj) <= 1 and abs(per["test"] - 0.15 * n_subj) <= 1
    # stratified: lesion share per split within 5 points of the overall share of subjects
    subj_lesion = pd.DataFrame({"s": subjects, "l": lesion}).groupby("s")["l"].any()
    share = subj_lesion.mean()
    sp = pd.DataFrame({"s": subjects, "p": split}).drop_duplicates("s").set_index("s")["p"]
    for name in ("train", "val", "test"):
        assert abs(subj_lesion[sp[sp == name].index].mean() - share) < 0.05
    assert split.equals(patient_split(subjects, lesion, (0.7, 0.15, 0.15), seed=3))
    assert not split.equals(patient_split(subjects, lesion, (0.7, 0.15, 0.15), seed=4))


def test_reflacx_split_moves_leaking_subject_to_test():
    df = pd.DataFrame({"reflacx_id": ["a", "b", "c"], "subject_id": [1, 1, 2],
                       "reflacx_split": ["train", "test", "validate"]})
    split, moved = reflacx_split(df)
    assert split.tolist() == ["test", "test", "val"] and moved == 1
    with pytest.raises(PreprocessError, match="'holdout'"):
        reflacx_split(df.assign(reflacx_split=["train", "holdout", "test"]))


def test_transform_fitted_on_train_only():
    train = _frame(age=[50.0, 60.0, np.nan], temperature=[98.0, 99.0, 100.0])
    t1 = ClinicalTransform.fit(train)
    assert t1.median["age"] == 55.0 and t1.mean["age"] == pytest.approx(55.0)
    num, cat = t1.transform(_frame(age=[55.0, np.nan], gender=["M", None]))
    assert num.shape == (2, 9) and cat.tolist() == [[2], [0]]
    assert num[0, 0] == pytest.approx(0.0) and num[1, 0] == pytest.approx(0.0)  # imputed with train median


def test_preprocess_outputs(tiny_preprocessed, tiny_joined):
    pre = tiny_preprocessed
    inst = pd.read_parquet(pre / "instances.parquet")
    assert len(inst) == 16
    assert inst.groupby("subject_id")["split"].nunique().max() == 1
    assert inst["split"].value_counts().to_dict() == {"train": 8, "val": 4, "test": 4}
    imgs = np.load(pre / "images.npy", mmap_mode="r")
    assert imgs.shape == (16, 64, 64) and imgs.dtype == np.uint8
    meta = json.loads((pre / "preprocessing.json").read_text())
    assert meta["image_size"] == 64
    # boxes scaled from 96×80 originals to 64×64
    jb = pd.read_parquet(tiny_joined / "boxes.parquet").set_index("reflacx_id")
    pb = pd.read_parquet(pre / "boxes.parquet").set_index("reflacx_id")
    rid = pb.index[0]
    assert pb.loc[[rid], "xmax"].iloc[0] == pytest.approx(jb.loc[[rid], "xmax"].iloc[0] * 64 / 96)
    assert pb.loc[[rid], "ymax"].iloc[0] == pytest.approx(jb.loc[[rid], "ymax"].iloc[0] * 64 / 80)
    assert set(pb["label_id"]) <= {1, 2, 3, 4, 5}
    cleaning = pd.read_csv(pre / "cleaning.csv")
    assert list(cleaning.columns) == ["column", "rule", "count"]
    r = cleaning.set_index(["column", "rule"])["count"]
    assert r[("pain", "text range a-b -> midpoint")] == 4  # every 4th reading has "8-10"


def test_stats_unchanged_when_only_test_rows_change(tiny_joined, tmp_path):
    inst = pd.read_parquet(tiny_joined / "instances.parquet")
    cfg = PreprocessConfig(image_size=32, fractions=(0.5, 0.25, 0.25), seed=0, workers=1)
    a = preprocess(tiny_joined, tmp_path / "a", cfg)
    split = pd.read_parquet(tmp_path / "a" / "instances.parquet").set_index("reflacx_id")["split"]
    test_ids = split[split == "test"].index
    changed = tmp_path / "j2"
    changed.mkdir()
    for f in tiny_joined.iterdir():
        (changed / f.name).write_bytes(f.read_bytes())
    mod = inst.copy()
    sel = mod["reflacx_id"].isin(test_ids)
    mod.loc[sel, "temperature"] = "104.0"  # joined triage values are text, as in the source
    mod.loc[sel, "age"] = 90
    mod.loc[sel, "heartrate"] = None
    mod.to_parquet(changed / "instances.parquet", index=False)
    b = preprocess(changed, tmp_path / "b", cfg)
    ja = json.loads((a.out_dir / "preprocessing.json").read_text())["transform"]
    jb = json.loads((b.out_dir / "preprocessing.json").read_text())["transform"]
    assert ja == jb
    # and changing a train row does change them
    mod2 = inst.copy()
    mod2.loc[mod2["reflacx_id"] == split[split == "train"].index[0], "age"] = 99
    mod2.to_parquet(changed / "instances.parquet", index=False)
    c = preprocess(changed, tmp_path / "c", cfg)
    jc = json.loads((c.out_dir / "preprocessing.json").read_text())["transform"]
    assert jc["mean"]["age"] != ja["mean"]["age"]


def test_config_overrides_and_errors():
    cfg = load_config(PreprocessConfig, overrides=["image_size=128", "split=reflacx"])
    assert cfg.image_size == 128 and cfg.split == "reflacx"
    with pytest.raises(ConfigError, match="power of two"):
        load_config(PreprocessConfig, overrides=["image_size=100"])
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(PreprocessConfig, overrides=["imagesize=128"])
    with pytest.raises(ConfigError, match="split"):
        load_config(PreprocessConfig, overrides=["split=random"])


def test_dataset_items_and_empty_targets(tiny_preprocessed):
    ds = MDFDataset(tiny_preprocessed, "train")
    assert len(ds) == 8 and len(ds.ids) == 8 and ds.classes == schema.CLASSES
    assert ds.features == schema.ALL_FEATURES
    img, clin, tgt = ds[0]
    # the cached grayscale as it is: uint8 [1, S, S], S·S bytes (the model's transform converts it on the device)
    assert img.shape == (1, 64, 64) and img.dtype == torch.uint8
    assert img.untyped_storage().nbytes() == 64 * 64
    cache = np.load(tiny_preprocessed / "images.npy")
    assert np.array_equal(img[0].numpy(), cache[ds._cache_index[0]])
    assert clin["numeric"].shape == (9,) and clin["categorical"].shape == (1,)
    assert clin["categorical"].dtype == torch.int64
    sizes = [ds.target(i)["boxes"].shape[0] for i in range(len(ds))]
    empty = [i for i, n in enumerate(sizes) if n == 0]
    full = [i for i, n in enumerate(sizes) if n > 0]
    assert empty and full
    _, _, t0 = ds[empty[0]]
    assert t0["boxes"].shape == (0, 4) and t0["labels"].shape == (0,) and t0["masks"].shape == (0, 64, 64)
    _, _, t1 = ds[full[0]]
    assert t1["masks"].shape == (len(t1["labels"]), 64, 64) and t1["masks"].dtype == torch.uint8
    assert t1["labels"].dtype == torch.int64 and ((t1["labels"] >= 1) & (t1["labels"] <= 5)).all()
    # train-split numeric features are standardised: mean ≈ 0 over the train split
    allnum = torch.stack([ds.clinical(i)["numeric"] for i in range(len(ds))])
    assert allnum[:, 0].mean().abs() < 1e-5  # age
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_dataset_feature_subsets(tiny_preprocessed):
    ds = MDFDataset(tiny_preprocessed, "val", features=["gender", "heartrate"])
    _, clin, _ = ds[0]
    assert clin["numeric"].shape == (1,) and clin["categorical"].shape == (1,)
    assert ds.features == ("heartrate", "gender")
    none = MDFDataset(tiny_preprocessed, "val", features=[])
    _, clin0, _ = none[0]
    assert clin0["numeric"].shape == (0,) and clin0["categorical"].shape == (0,)
    with pytest.raises(ValueError, match="unknown clinical feature"):
        MDFDataset(tiny_preprocessed, "val", features=["bmi"])
    with pytest.raises(ValueError, match="split"):
        MDFDataset(tiny_preprocessed, "holdout")


def test_shuffled_clinical_control_permutes_studies_not_images(tiny_preprocessed):
    plain = MDFDataset(tiny_preprocessed, "train")
    shuf = MDFDataset(tiny_preprocessed, "train", shuffle_clinical=True)
    assert shuf.shuffle_clinical and not plain.shuffle_clinical
    n = len(plain)
    rows = {tuple(plain.clinical(i)["numeric"].tolist() + plain.clinical(i)["categorical"].tolist()) for i in range(n)}
    moved = 0
    for i in range(n):
        a, b = plain[i], shuf[i]
        assert torch.equal(a[0], b[0]) and torch.equal(a[2]["boxes"], b[2]["boxes"])  # image and target unchanged
        got = tuple(b[1]["numeric"].tolist() + b[1]["categorical"].tolist())
        assert got in rows  # another study's values, not new ones
        moved += not torch.equal(a[1]["numeric"], b[1]["numeric"])
    assert moved == n  # a cyclic shift: no study keeps its own values (all values distinct here)
    # fixed: the same permutation every time (training and evaluation see the same pairing)
    again = MDFDataset(tiny_preprocessed, "train", shuffle_clinical=True)
    assert all(torch.equal(again.clinical(i)["numeric"], shuf.clinical(i)["numeric"]) for i in range(n))


def test_shuffled_clinical_rows_keep_readings_of_one_image_together():
    from mdfnet.data.dataset import shuffled_clinical_rows

    images = np.array(["c", "a", "b", "a", "c", "d"])
    rows = shuffled_clinical_rows(images, "val")
    donors = images[rows]
    assert (donors != images).all()  # every image takes another image's values
    assert donors[1] == donors[3] and donors[0] == donors[4]  # readings of one image agree
    assert sorted(set(donors)) == sorted(set(images))  # a permutation of the images
    assert rows.tolist() == shuffled_clinical_rows(images, "val").tolist()
    assert shuffled_clinical_rows(np.array(["x", "x"]), "val").tolist() == [0, 1]  # one image: unchanged


def test_collate_and_masks(tiny_preprocessed):
    ds = MDFDataset(tiny_preprocessed, "train")
    images, clinical, targets = collate_detection([ds[0], ds[1], ds[2]])
    assert [(im.shape, im.dtype) for im in images] == [((1, 64, 64), torch.uint8)] * 3
    assert len(images) == 3 and clinical["numeric"].shape == (3, 9) and clinical["categorical"].shape == (3, 1)
    assert len(targets) == 3
    m = boxes_to_masks(torch.tensor([[1.0, 2.0, 4.0, 3.0]]), 6)
    assert m.sum() == 3 and m[0, 2, 1:4].tolist() == [1, 1, 1]
