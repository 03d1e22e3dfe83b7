"""One bad image never sinks a run: the join decodes every image (in parallel, with the decoder ``preprocess``
caches with) and excludes a truncated, empty, non-image or absurdly large file as ``unreadable image``, counted in
``exclusions.csv``; 16-bit and RGB images are kept; ``preprocess`` then runs through."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from conftest import tiny_sources
from PIL import Image

from mdfnet.data import schema


def _jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_unreadable_images_are_excluded_and_preprocess_runs(tmp_path):
    from mdfnet.data.join import R_BAD_IMAGE, join
    from mdfnet.data.preprocess import PreprocessConfig, preprocess

    src = tiny_sources(tmp_path / "src", n=16)
    files = sorted((src / schema.CXR_DIR).rglob("*.jpg"))
    assert len(files) == 16
    rng = np.random.default_rng(0)
    good = _jpeg(rng.integers(0, 255, (80, 96), dtype=np.uint8))
    bad = {
        files[0]: good[: len(good) // 2],                                   # truncated JPEG
        files[1]: b"",                                                      # zero bytes
        files[2]: b"<html>not an image</html>" * 10,                        # non-image bytes
        files[3]: _png(np.zeros((1, 17_000), np.uint8)),                    # absurd dimensions
    }
    kept_odd = {
        files[4]: _jpeg(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)),  # RGB
        files[5]: _png(rng.integers(0, 60_000, (80, 96), dtype=np.uint16)),  # 16-bit (PNG bytes, .jpg name)
    }
    for path, data in {**bad, **kept_odd}.items():
        path.write_bytes(data)

    res = join(src, tmp_path / "joined")
    assert res.exclusions[R_BAD_IMAGE] == len(bad) == 4
    report = pd.read_csv(tmp_path / "joined" / "exclusions.csv")
    assert int(report.loc[report["reason"] == R_BAD_IMAGE, "count"].sum()) == 4
    inst = pd.read_parquet(tmp_path / "joined" / "instances.parquet")
    dicoms = set(inst["dicom_id"])
    assert not {p.stem for p in bad} & dicoms and {p.stem for p in kept_odd} <= dicoms
    out = preprocess(tmp_path / "joined", tmp_path / "pre",
                     PreprocessConfig(image_size=32, fractions=(0.5, 0.25, 0.25), workers=1))
    assert out.n_images == len(dicoms) == 12


def test_boxes_outside_empty_or_with_unknown_labels_are_counted(tmp_path):
    """An ellipse reaching outside the image is clipped and counted; one with no area left is dropped and
    counted; a label column this code does not know is counted by name, never silently ignored."""
    from mdfnet.data.join import join

    src = tiny_sources(tmp_path / "src", n=8)
    rid = "P1R001"
    path = src / schema.ellipses_path(rid)
    table = pd.read_csv(path)
    extra = table.iloc[[0, 0, 0]].copy()
    extra[["xmin", "ymin", "xmax", "ymax"]] = [[-20.0, 5.0, 30.0, 200.0], [120.0, 10.0, 150.0, 20.0],
                                               [10.0, 10.0, 20.0, 20.0]]
    table = pd.concat([table, extra], ignore_index=True)
    table["Lung opacity"] = [False] * (len(table) - 1) + [True]  # a CheXpert label, in no REFLACX phase
    for c in schema.LABEL_SYNONYMS:
        if c in table:
            table.loc[len(table) - 1, c] = False  # the last ellipse marks only the unknown label
    table.to_csv(path, index=False)
    res = join(src, tmp_path / "joined")
    assert res.box_report["clipped to the image (kept)"] >= 1
    assert res.box_report["empty after clipping to the image"] >= 1  # 120..150 on a 96 px wide image
    assert res.box_report["unknown label 'Lung opacity' (not a target)"] == 1
    boxes = pd.read_parquet(tmp_path / "joined" / "boxes.parquet")
    mine = boxes[boxes["reflacx_id"] == rid]
    assert (mine[["xmin", "ymin"]] >= 0).all().all() and (mine["xmax"] <= 96).all() and (mine["ymax"] <= 80).all()
