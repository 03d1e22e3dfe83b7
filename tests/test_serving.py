"""Serving inputs: requests as a person types them (cleaned like ``preprocess``, refused with a message when a
value would have to be thrown away), the one image decoder (JPEG/PNG/DICOM, caching = inference), and the
``Predictor`` against the evaluation recipe. The served model over HTTP: ``test_serving_server.py``."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest

from mdfnet.data import schema
from mdfnet.data.images import ImageReadError, read_display, read_gray
from mdfnet.serving.inputs import (
    FIELDS,
    RequestError,
    clean_request,
    decode_base64_image,
    encode_image,
    example_request,
    request_frame,
)

TYPED = {"age": 67, "gender": "female", "temperature": 37.0, "heartrate": 88, "resprate": 18, "o2sat": 97,
         "sbp": 130, "dbp": 80, "pain": "8-10", "acuity": 2}


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, "PNG")
    return buf.getvalue()


def _request(**changes) -> dict:
    return {"image": encode_image(_png(np.full((8, 8), 100, np.uint8))), **TYPED, **changes}


# ------------------------------------------------------------------------------------------ requests
def test_typed_values_are_cleaned_as_preprocess_does():
    cleaned = clean_request(request_frame([_request(), _request(pain="7", temperature="99.5", gender="M",
                                                                heartrate=None, o2sat="")]))
    first, second = cleaned.iloc[0], cleaned.iloc[1]
    assert first["pain"] == 9.0 and first["temperature"] == pytest.approx(98.6) and first["gender"] == "F"
    assert second["pain"] == 7.0 and second["temperature"] == 99.5 and second["gender"] == "M"
    assert np.isnan(second["heartrate"]) and np.isnan(second["o2sat"])  # empty → imputed later (train medians)
    assert list(cleaned.columns) == list(FIELDS)


def test_cleaning_equals_preprocess_on_the_raw_source_values(tiny_preprocessed):
    """The raw triage values of every preprocessed reading, sent as a request, clean to the values the model
    was trained on (free-text pain such as "UA" included)."""
    inst = pd.read_parquet(tiny_preprocessed / "instances.parquet")
    records = [{"image": "", **{f: (None if pd.isna(v := r[f"raw_{f}"]) else v) for f in FIELDS}}
               for _, r in inst.iterrows()]
    assert {"UA", "8-10"} <= set(inst["raw_pain"].dropna())
    cleaned = clean_request(request_frame(records))
    pd.testing.assert_frame_equal(cleaned[list(schema.NUMERIC_FEATURES)].astype("float64"),
                                  inst[list(schema.NUMERIC_FEATURES)].astype("float64").reset_index(drop=True))
    assert cleaned["gender"].tolist() == inst["gender"].tolist()


@pytest.mark.parametrize(("change", "message"), [
    ({"heartrate": 900}, r"row 0: heartrate=900.0 is outside the plausible range 20-300"),
    ({"temperature": 200}, r"temperature=200.0 is outside the plausible range \(85-110 °F, or 25-45 °C"),
    ({"acuity": 2.5}, r"acuity=2.5 is not an integer acuity 1-5"),
    ({"pain": "15"}, r"pain='15' is outside the pain scale 0-10"),
    ({"gender": "X"}, r"gender='X' is not one of F, M, female, male"),
    ({"age": [67]}, r"age=\[67\] \(list\) is not a number"),
    ({"age": True}, r"age=True \(bool\) is not a number"),
    ({"sbp": "high"}, r"sbp='high' is not a number"),
    ({"dbp": float("inf")}, r"dbp=inf is not a finite number"),
])
def test_values_that_cleaning_would_drop_are_refused_with_the_reason(change, message):
    with pytest.raises(RequestError, match=message):
        clean_request(request_frame([_request(**change)]))


def test_free_text_pain_is_missing_as_in_the_training_data():
    assert np.isnan(clean_request(request_frame([_request(pain="unable")]))["pain"].iloc[0])


def test_missing_and_unknown_fields_are_named():
    rec = _request()
    del rec["o2sat"]
    with pytest.raises(RequestError, match=r"row 0: missing field\(s\) \['o2sat'\]"):
        request_frame([rec])
    with pytest.raises(RequestError, match=r"unknown field\(s\) \['heart_rate'\]"):
        request_frame([_request(heart_rate=80)])
    with pytest.raises(RequestError, match=r"missing field\(s\) \['pain'\]"):
        clean_request(pd.DataFrame([{k: v for k, v in TYPED.items() if k != "pain"}]))


def test_image_cells_are_checked(monkeypatch):
    from mdfnet.serving import inputs

    with pytest.raises(RequestError, match="not valid base64"):
        decode_base64_image(3, "###")
    with pytest.raises(RequestError, match="row 1: image must be the base64 text"):
        decode_base64_image(1, 12)
    with pytest.raises(RequestError, match="image must be the base64"):
        decode_base64_image(0, "")
    monkeypatch.setattr(inputs, "MAX_IMAGE_BYTES", 30)
    with pytest.raises(RequestError, match="limit is 0 MiB"):
        decode_base64_image(0, encode_image(b"x" * 100))
    assert decode_base64_image(0, encode_image(b"abc")) == b"abc"


def test_example_request_is_valid_and_holds_no_patient_data():
    medians = {f: v for f, v in zip(schema.NUMERIC_FEATURES, (61.5, 98.1, 85, 18, 98, 132, 76, 3.5, 2.5),
                                    strict=True)}
    ex = example_request(medians, _png(np.zeros((4, 4), np.uint8)))
    cleaned = clean_request(ex)
    assert cleaned["acuity"].iloc[0] in (2.0, 3.0) and cleaned["pain"].iloc[0] in (3.0, 4.0)
    assert ex["study"].iloc[0] == "example"


# ------------------------------------------------------------------------------------------ images
def test_cached_pixels_equal_the_inference_decoder(tiny_joined, tiny_preprocessed):
    """preprocess caches images with read_gray; the same bytes sent base64 give the same pixels."""
    from mdfnet.data.join import image_root

    inst = pd.read_parquet(tiny_preprocessed / "instances.parquet").drop_duplicates("dicom_id")
    cache = np.load(tiny_preprocessed / "images.npy")
    for r in inst.head(4).itertuples():
        data = (image_root(tiny_joined) / r.image_path).read_bytes()
        gray, size = read_gray(decode_base64_image(0, base64.b64encode(data).decode()), 64)
        assert np.array_equal(gray, cache[r.cache_index])
        assert size == (int(r.image_width), int(r.image_height))


def test_served_images_reach_the_model_as_the_dataset_hands_them(tiny_joined, tiny_preprocessed):
    """Predictor.decode gives the training loader's image of the same study, bit for bit: uint8 [1, S, S]."""
    import torch

    from mdfnet.data import MDFDataset
    from mdfnet.data.join import image_root
    from mdfnet.serving.predictor import Predictor

    ds = MDFDataset(tiny_preprocessed, "val", with_masks=False)
    rows = range(min(3, len(ds)))
    frame = pd.DataFrame({"image": [base64.b64encode((image_root(tiny_joined) / ds.instances["image_path"][i])
                                                     .read_bytes()).decode() for i in rows]})
    images, sizes = Predictor(model=None, cfg=None, meta={"image_size": 64}).decode(frame)
    assert len(images) == len(sizes) == len(rows) > 0
    for i, im in zip(rows, images, strict=True):
        assert im.shape == (1, 64, 64) and im.dtype == torch.uint8
        assert torch.equal(im, ds.image(i))


def test_16bit_png_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 60000, 64).astype(np.uint16), (64, 1))
    gray, size = read_gray(_png(ramp), 64)
    assert size == (64, 64) and gray.min() == 0 and gray.max() == 255
    assert 100 < gray[0, 32] < 155  # the middle of the ramp stays in the middle
    assert read_display(_png(ramp)).max() == 255


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty"),
    (b"not an image at all", "cannot decode"),
    (None, "cannot decode"),  # truncated JPEG, built below
])
def test_unreadable_images_raise_a_named_error(data, message):
    if data is None:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, "JPEG")
        data = buf.getvalue()[: len(buf.getvalue()) // 2]
    with pytest.raises(ImageReadError, match=message):
        read_gray(data, 32)


def test_absurd_dimensions_are_refused(monkeypatch):
    from mdfnet.data import images

    monkeypatch.setattr(images, "MAX_SIDE", 100)
    with pytest.raises(ImageReadError, match=r"image is 101x2 px; expected sides in 1..100"):
        read_gray(_png(np.zeros((2, 101), np.uint8)), 16)


def _dicom(pixels: np.ndarray, photometric: str = "MONOCHROME2", window: tuple[float, float] | None = None,
           slope: float = 1.0, intercept: float = 0.0) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_dicom_monochrome1_windowing_and_16_bit():
    ramp = np.tile(np.linspace(0, 4095, 80).round().astype(np.uint16), (40, 1))  # 12-bit data, 80x40 px
    plain, size = read_gray(_dicom(ramp), 80)
    assert size == (80, 40) and plain[0, 0] == 0 and plain[0, -1] == 255  # 16-bit scaled to the full 8-bit range
    inverted, _ = read_gray(_dicom(ramp, "MONOCHROME1"), 80)
    assert np.array_equal(inverted, 255 - plain)  # MONOCHROME1: bright = low values
    windowed = read_display(_dicom(ramp, window=(2000, 1000)))  # window 1500..2500
    col = {int(v): int(g) for v, g in zip(ramp[0], windowed[0], strict=True)}
    assert all(g == 0 for v, g in col.items() if v < 1450) and all(g == 255 for v, g in col.items() if v > 2550)
    assert 100 < col[min(col, key=lambda v: abs(v - 2000))] < 155
    rescaled = read_display(_dicom(ramp, slope=2.0, intercept=-1024.0))  # modality LUT: linear, so same scaling
    assert np.array_equal(rescaled, read_display(_dicom(ramp)))
    with pytest.raises(ImageReadError, match="not a readable DICOM"):
        read_gray(_dicom(ramp)[:400], 32)


def test_demo_example_is_a_test_study_with_its_raw_triage(tiny_joined, tiny_preprocessed, tmp_path):
    """``make demo`` ends with a ready ``mdfnet predict`` command: the example is a test-split study of the run
    (image bytes of the source, triage values as typed in the sources) and validates as a request."""
    import json
    import shutil

    from mdfnet.demo import write_example

    shutil.copytree(tiny_joined, tmp_path / "kfp" / "join" / "joined")
    shutil.copytree(tiny_preprocessed, tmp_path / "kfp" / "preprocess" / "pre")
    image, clinical = write_example(tmp_path)
    inst = pd.read_parquet(tiny_preprocessed / "instances.parquet").set_index("reflacx_id")
    row = inst.loc[image.stem]
    assert row["split"] == "test"
    from mdfnet.data.join import image_root

    assert image.read_bytes() == (image_root(tiny_joined) / row["image_path"]).read_bytes()
    values = json.loads(clinical.read_text())
    assert values["pain"] == (None if pd.isna(row["raw_pain"]) else row["raw_pain"])
    assert values["age"] == row["raw_age"] and values["temperature"] == float(row["raw_temperature"])
    clean_request(request_frame([{"image": encode_image(image.read_bytes()), **values}]))


def test_serving_device_is_chosen_by_the_environment(monkeypatch):
    import torch

    from mdfnet.serving.predictor import DEVICE_ENV, ModelSourceError, resolve_device

    monkeypatch.delenv(DEVICE_ENV, raising=False)
    assert resolve_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert resolve_device() == torch.device("cpu") and resolve_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setenv(DEVICE_ENV, "tpu")
    with pytest.raises(ModelSourceError, match="MDFNET_SERVING_DEVICE='tpu': expected auto, cpu or cuda"):
        resolve_device()


def test_the_device_pin_keeps_served_models_on_the_cpu_when_cuda_is_available(monkeypatch, tmp_path):
    """``MDFNET_SERVING_DEVICE=cpu`` (the pin of ``test_serving_server.py``) with ``torch.cuda.is_available``
    forced to True: ``open_model`` (a checkpoint) and the pyfunc's ``load_context`` (a bundle) leave a
    stand-in predictor's model on the CPU; without the pin ``auto`` would pick CUDA."""
    from types import SimpleNamespace

    import torch

    from mdfnet.serving import predictor as serving
    from mdfnet.serving.pyfunc import MDFNetModel
    from mdfnet.training.config import TrainConfig

    stand_in = serving.Predictor(torch.nn.Linear(3, 2), TrainConfig(), {})
    monkeypatch.setattr(serving.Predictor, "from_checkpoint", classmethod(lambda cls, path, data_dir=None: stand_in))
    monkeypatch.setattr(serving.Predictor, "from_bundle", classmethod(lambda cls, bundle_dir: stand_in))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv(serving.DEVICE_ENV, raising=False)
    assert serving.resolve_device() == torch.device("cuda")
    monkeypatch.setenv(serving.DEVICE_ENV, "cpu")
    (tmp_path / "model.pt").write_bytes(b"")
    serving.open_model(str(tmp_path / "model.pt"))
    served = MDFNetModel()
    served.load_context(SimpleNamespace(artifacts={"bundle": str(tmp_path)}))
    assert served.predictor is stand_in
    assert [p.device.type for p in stand_in.model.parameters()] == ["cpu", "cpu"]
