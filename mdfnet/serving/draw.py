"""Detections drawn on the image they came from (``mdfnet predict --out``): one colour per lesion class, a label
with the score above each box (and, for explained detections, the top reason: ``Consolidation 0.95 · temperature
+0.63``), a legend of the classes found."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mdfnet.data import schema
from mdfnet.data.images import read_display

COLOURS: dict[str, tuple[int, int, int]] = dict(zip(schema.CLASSES, [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48)], strict=True))


MIN_SIDE = 512
"""Images smaller than this are enlarged (by a whole factor) before drawing, so labels stay legible."""


def draw_detections(image: str | Path | bytes, detections: pd.DataFrame, out_path: str | Path) -> Path:
    """Write ``out_path`` (PNG): ``image`` (path or bytes; JPEG/PNG/DICOM) with ``detections``' boxes (original
    pixels, columns of :data:`mdfnet.serving.predictor.OUTPUT_COLUMNS`). Small images are enlarged ×k."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.fromarray(read_display(image)).convert("RGB")
    k = max(1, MIN_SIDE // max(canvas.size))
    if k > 1:
        canvas = canvas.resize((canvas.width * k, canvas.height * k), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    side = max(canvas.size)
    width = max(1, side // 256)
    font = ImageFont.load_default(size=max(10, side // 40))
    for d in detections.itertuples(index=False):
        colour = COLOURS.get(d.label, (255, 255, 255))
        x0, y0, x1, y1 = (k * v for v in (d.xmin, d.ymin, d.xmax, d.ymax))
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        text = f"{d.label} {d.score:.2f}{_top_reason(d)}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        w, h = right - left + 2 * width, bottom - top + 2 * width
        tx = min(max(0.0, x0), max(0.0, canvas.width - w))  # keep the label inside the image
        ty = y0 - h if y0 - h >= 0 else min(y1, canvas.height - h)
        draw.rectangle([tx, ty, tx + w, ty + h], fill=colour)
        draw.text((tx + width - left, ty + width - top), text, fill=(0, 0, 0), font=font)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_path, "PNG")
    return out_path


def _top_reason(d) -> str:
    """``" · temperature +0.61"`` for an explained detection (:mod:`mdfnet.serving.explain`), else ``""``."""
    top = getattr(d, "top_reason", None)
    if not isinstance(top, str):
        return ""
    from mdfnet.serving.explain import CHANGE_PREFIX

    return f" · {top} {getattr(d, CHANGE_PREFIX + top):+.2f}"
