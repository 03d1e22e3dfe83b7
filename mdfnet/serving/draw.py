"""Detections drawn on the image they came from (``mdfnet predict --out``): one colour per lesion class, a label
with the score above each box, a legend of the classes found."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mdfnet.data import schema
from mdfnet.data.images import read_display

COLOURS: dict[str, tuple[int, int, int]] = dict(zip(schema.CLASSES, [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48)], strict=True))


def draw_detections(image: str | Path | bytes, detections: pd.DataFrame, out_path: str | Path) -> Path:
    """Write ``out_path`` (PNG): ``image`` (path or bytes; JPEG/PNG/DICOM) with ``detections``' boxes (original
    pixels, columns of :data:`mdfnet.serving.predictor.OUTPUT_COLUMNS`)."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.fromarray(read_display(image)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    side = max(canvas.size)
    width = max(1, side // 256)
    font = ImageFont.load_default(size=max(10, side // 48))
    for d in detections.itertuples(index=False):
        colour = COLOURS.get(d.label, (255, 255, 255))
        draw.rectangle([d.xmin, d.ymin, d.xmax, d.ymax], outline=colour, width=width)
        text = f"{d.label} {d.score:.2f}"
        left, top, right, bottom = draw.textbbox((d.xmin, d.ymin), text, font=font)
        y = max(0.0, d.ymin - (bottom - top) - 2 * width)
        draw.rectangle([d.xmin, y, d.xmin + (right - left) + 2 * width, y + (bottom - top) + 2 * width], fill=colour)
        draw.text((d.xmin + width, y), text, fill=(0, 0, 0), font=font)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_path, "PNG")
    return out_path
