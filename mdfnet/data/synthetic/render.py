"""Rendering: a grayscale chest radiograph with every lesion drawn inside its box."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mdfnet.data.synthetic.clinical import ATEL, CONSOL, EDEMA, PLEURAL
from mdfnet.data.synthetic.geometry import Anatomy, Lesion


def _soft_ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, ax: float, ay: float,
                  edge: float = 0.15) -> np.ndarray:
    r2 = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2
    return np.clip((1.0 - r2) / edge, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1], ``[h, w]`` (bicubic upsampling of a ``cells×cells`` grid)."""
    low = rng.random((cells, cells)).astype(np.float32)
    up = np.asarray(Image.fromarray(low).resize((max(w, 1), max(h, 1)), Image.Resampling.BICUBIC))
    return np.clip(up, 0.0, 1.0)


def render_image(rng: np.random.Generator, anat: Anatomy, lesions: list[Lesion], w: int, h: int) -> np.ndarray:
    """Grayscale chest radiograph ``uint8 [h, w]`` with the lesions drawn inside their boxes."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xn, yn = xx / w, yy / h
    img = np.full((h, w), 30.0, dtype=np.float32)
    img += 80.0 * _soft_ellipse(xn, yn, anat.mid, 0.58, 0.47, 0.62, edge=0.3)  # body
    lungs = np.zeros((h, w), dtype=np.float32)
    for side in (0, 1):
        lungs = np.maximum(lungs, _soft_ellipse(xn, yn, anat.lung_cx(side), anat.lung_cy, anat.lung_ax,
                                                anat.lung_ay, edge=0.25))
    img -= 55.0 * lungs * (0.85 + 0.3 * _smooth_noise(rng, h, w, 5))
    img += 45.0 * np.clip(1.0 - np.abs(xn - anat.mid) / 0.07, 0, 1) * (yn > 0.08)  # mediastinum
    img += 35.0 * np.clip(1.0 - np.abs(xn - anat.mid) / 0.025, 0, 1)  # spine
    img += 60.0 * _soft_ellipse(xn, yn, anat.heart_cx, anat.heart_cy, anat.heart_ax, anat.heart_ay, edge=0.2)
    top = anat.lung_cy - anat.lung_ay
    for side in (0, 1):  # ribs: faint arcs across each lung
        cx = anat.lung_cx(side)
        for k in range(8):
            y_k = top + (k + 1.2) * 0.22 * anat.lung_ay - 0.2 * anat.lung_ay * ((xn - cx) / anat.lung_ax) ** 2
            img += 14.0 * np.clip(1.0 - np.abs(yn - y_k) / 0.008, 0, 1) * lungs
    for les in lesions:
        _draw_lesion(rng, img, les)
    img = img * rng.uniform(0.9, 1.1) + rng.uniform(-8, 8) + rng.normal(0, 4.0, (h, w)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_lesion(rng: np.random.Generator, img: np.ndarray, les: Lesion) -> None:
    x0, y0, x1, y1 = les.box
    c0, r0, c1, r1 = int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1))
    if c1 <= c0 or r1 <= r0:
        return
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32) + 0.5
    if les.cls in (CONSOL, EDEMA):  # same renderer, same parameters: indistinguishable by design
        m = _soft_ellipse(xx, yy, (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 1), max((y1 - y0) / 2, 1), 0.6)
        tex = _smooth_noise(rng, r1 - r0, c1 - c0, 6)
        img[r0:r1, c0:c1] += rng.uniform(50, 70) * m * (0.35 + 0.65 * tex)
    elif les.cls == PLEURAL:  # meniscus: full height at the lateral edge, thinning medially
        u = (xx - x0) / max(x1 - x0, 1) if les.side == 0 else (x1 - xx) / max(x1 - x0, 1)
        v = (yy - y0) / max(y1 - y0, 1)
        img[r0:r1, c0:c1] += rng.uniform(65, 85) * np.clip((v - np.clip(u, 0, 1) ** 0.6) / 0.08, 0, 1)
    elif les.cls == ATEL:  # thin dense band
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        d_perp = np.abs(-(xx - cx) * np.sin(les.angle) + (yy - cy) * np.cos(les.angle))
        d_par = np.abs((xx - cx) * np.cos(les.angle) + (yy - cy) * np.sin(les.angle))
        band = np.clip(les.half_thickness - d_perp + 0.5, 0, 1) * np.clip((les.half_length - d_par) / 3.0, 0, 1)
        img[r0:r1, c0:c1] += rng.uniform(75, 95) * band
    # ECS: the enlarged heart is part of the background anatomy (heart_ax), nothing more to draw
