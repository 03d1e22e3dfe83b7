"""One image decoder for caching (``preprocess``) and for inference (``mdfnet predict``, the served model), so a
served study sees exactly the pixels its training data saw.

:func:`read_gray` takes a path or the file's bytes (JPEG, PNG, any format Pillow reads, or DICOM) and returns
the image as uint8 grayscale ``[S, S]`` resized to the model's input size, plus the original ``(width, height)``
(so boxes can be mapped back to the original pixels). Pixel depth is reduced the same way for every source:

- 8-bit grayscale or colour (Pillow ``L``/``RGB``/``P``…): Pillow's ``convert("L")`` (ITU-R 601 luma);
- 16-bit or float images (PNG ``I;16``, TIFF ``I``/``F``): min–max scaled to 0..255;
- DICOM (pydicom): modality LUT (rescale slope/intercept), then the VOI LUT or window (``WindowCenter``/
  ``WindowWidth``) when the file has one, min–max scaled to 0..255, and ``MONOCHROME1`` inverted (so bone is
  bright as in MONOCHROME2 and in MIMIC-CXR-JPG).

JPEGs are decoded with Pillow's ``draft`` (DCT-domain downscale): much faster for large CXRs, and identical in
caching and inference because both call this function.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

MAX_SIDE = 16_384
"""Largest accepted image side (px); MIMIC-CXR images are at most ~4,300 px. Larger ones are refused."""


class ImageReadError(ValueError):
    """An image cannot be read; the message names the source and the reason."""


def is_dicom(head: bytes) -> bool:
    """DICOM Part 10 files carry ``DICM`` after a 128-byte preamble."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Min–max scale any numeric array to uint8 0..255 (a constant image becomes 0)."""
    arr = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ImageReadError("pixel values are not all finite")
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def dicom_to_gray(data: bytes) -> np.ndarray:
    """DICOM bytes → uint8 ``[H, W]`` display image (modality LUT, VOI LUT/window, MONOCHROME1 inverted)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        pixels = ds.pixel_array
    except Exception as e:  # pydicom raises many types for a broken or unsupported file
        raise ImageReadError(f"not a readable DICOM image ({type(e).__name__}: {e})") from e
    if pixels.ndim != 2:
        raise ImageReadError(f"DICOM pixel data has shape {pixels.shape}; expected one 2-D grayscale frame")
    _check_side(pixels.shape[1], pixels.shape[0])
    values = apply_voi_lut(apply_modality_lut(pixels, ds), ds)
    gray = _scale_to_uint8(values)
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        gray = 255 - gray
    return gray


def _check_side(width: int, height: int) -> None:
    if width < 1 or height < 1 or max(width, height) > MAX_SIDE:
        raise ImageReadError(f"image is {width}x{height} px; expected sides in 1..{MAX_SIDE}")


DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
"""Pillow modes deeper than 8 bits: scaled to 0..255, never clipped."""


def _decode_errors() -> tuple[type[BaseException], ...]:
    """What a failed decode raises (ImageReadError is a ValueError; Pillow is imported lazily)."""
    from PIL import Image

    return OSError, ValueError, SyntaxError, Image.DecompressionBombError


def _to_l(im):
    """A Pillow image of any mode → an ``L`` (8-bit grayscale) image, reduced to 8 bits as the module says."""
    from PIL import Image

    return Image.fromarray(_scale_to_uint8(np.asarray(im))) if im.mode in DEEP_MODES else im.convert("L")


def _read_source(source: str | Path | bytes) -> tuple[bytes, str]:
    """The file's bytes and a name for messages; an unreadable or empty file raises :class:`ImageReadError`."""
    name = str(source) if isinstance(source, str | Path) else f"<{len(source)} bytes>"
    try:
        data = Path(source).read_bytes() if isinstance(source, str | Path) else bytes(source)
    except OSError as e:
        raise ImageReadError(f"cannot read image {name}: {e}") from e
    if not data:
        raise ImageReadError(f"image {name} is empty (0 bytes)")
    return data, name


def read_gray(source: str | Path | bytes, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode ``source`` (path or bytes) → (uint8 ``[size, size]``, original ``(width, height)``).

    Raises :class:`ImageReadError` naming the source for an unreadable, truncated, empty or oversized image.
    """
    from PIL import Image

    data, name = _read_source(source)
    try:
        if is_dicom(data[:132]):
            gray = Image.fromarray(dicom_to_gray(data))
            original = gray.size
        else:
            with Image.open(io.BytesIO(data)) as im:
                original = im.size  # before draft, which shrinks it
                _check_side(*original)
                im.draft("L", (size, size))  # JPEG only: decode at the smallest DCT scale >= size
                gray = _to_l(im)
        resized = gray.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(resized, dtype=np.uint8), (int(original[0]), int(original[1]))
    except _decode_errors() as e:
        raise ImageReadError(f"cannot decode image {name}: {e}") from e


def read_display(source: str | Path | bytes) -> np.ndarray:
    """The whole image at its original size as uint8 grayscale ``[H, W]``, reduced to 8 bits as in
    :func:`read_gray` (for drawing detections on it)."""
    from PIL import Image

    data, name = _read_source(source)
    try:
        if is_dicom(data[:132]):
            return dicom_to_gray(data)
        with Image.open(io.BytesIO(data)) as im:
            _check_side(*im.size)
            return np.asarray(_to_l(im), dtype=np.uint8)
    except _decode_errors() as e:
        raise ImageReadError(f"cannot decode image {name}: {e}") from e
