"""Image geometry: per-image anatomy and the box (and shape) of each lesion, in original pixels."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mdfnet.data.synthetic.clinical import ATEL, CONSOL, ECS, EDEMA, PLEURAL


class Anatomy(NamedTuple):
    """Normalised anatomy of one image (fractions of width / height)."""

    mid: float
    lung_dx: float
    lung_cy: float
    lung_ax: float
    lung_ay: float
    heart_cx: float
    heart_cy: float
    heart_ax: float
    heart_ay: float

    def lung_cx(self, side: int) -> float:
        return self.mid - self.lung_dx if side == 0 else self.mid + self.lung_dx


class Lesion(NamedTuple):
    """One lesion of an image in original pixels: class index, box (x0, y0, x1, y1) and shape parameters."""

    cls: int
    box: tuple[float, float, float, float]
    side: int = 0
    angle: float = 0.0
    half_length: float = 0.0
    half_thickness: float = 0.0


def sample_anatomy(rng: np.random.Generator, enlarged_heart: bool) -> Anatomy:
    mid = 0.5 + rng.normal(0, 0.012)
    lung_cy = rng.uniform(0.44, 0.50)
    return Anatomy(
        mid=mid,
        lung_dx=rng.uniform(0.19, 0.22),
        lung_cy=lung_cy,
        lung_ax=rng.uniform(0.14, 0.17),
        lung_ay=rng.uniform(0.27, 0.32),
        heart_cx=mid + rng.uniform(0.02, 0.05),
        heart_cy=lung_cy + rng.uniform(0.13, 0.17),
        heart_ax=rng.uniform(0.19, 0.24) if enlarged_heart else rng.uniform(0.11, 0.145),
        heart_ay=rng.uniform(0.12, 0.15) if enlarged_heart else rng.uniform(0.09, 0.11),
    )


def _clip_box(x0: float, y0: float, x1: float, y1: float, w: int, h: int) -> tuple[float, float, float, float]:
    """Clip to the image, keeping at least 2 px of width and height."""
    a0, b0 = float(np.clip(x0, 0, w - 2)), float(np.clip(y0, 0, h - 2))
    return a0, b0, float(np.clip(x1, a0 + 2, w)), float(np.clip(y1, b0 + 2, h))


def opacity_box(rng: np.random.Generator, anat: Anatomy, side: int, w: int, h: int) -> Lesion:
    """Box of a patchy opacity in the lower two thirds of a lung — shared by Consolidation and Pulmonary edema."""
    cx = (anat.lung_cx(side) + rng.uniform(-0.35, 0.35) * anat.lung_ax) * w
    cy = (anat.lung_cy + rng.uniform(0.05, 0.55) * anat.lung_ay) * h
    hw = rng.uniform(0.3, 0.6) * anat.lung_ax * w
    hh = rng.uniform(0.18, 0.35) * anat.lung_ay * h
    return Lesion(-1, _clip_box(cx - hw, cy - hh, cx + hw, cy + hh, w, h), side)


def sample_lesion_geometry(rng: np.random.Generator, present: np.ndarray, anat: Anatomy, w: int,
                           h: int) -> list[Lesion]:
    """One :class:`Lesion` per present class (bool ``[5]``), boxes in original pixels."""
    lesions: list[Lesion] = []
    opacity_sides = rng.permutation(2)  # consolidation + edema together: one per lung
    for k, cls in enumerate(c for c in (CONSOL, EDEMA) if present[c]):
        side = int(opacity_sides[k]) if present[CONSOL] and present[EDEMA] else int(rng.integers(2))
        lesions.append(opacity_box(rng, anat, side, w, h)._replace(cls=cls))
    if present[ECS]:
        x0, x1 = (anat.heart_cx - anat.heart_ax) * w, (anat.heart_cx + anat.heart_ax) * w
        y0, y1 = (anat.heart_cy - anat.heart_ay) * h, (anat.heart_cy + anat.heart_ay) * h
        lesions.append(Lesion(ECS, _clip_box(x0, y0, x1, y1, w, h)))
    if present[PLEURAL]:
        side = int(rng.integers(2))
        lateral = (anat.lung_cx(side) + (-1 if side == 0 else 1) * 1.02 * anat.lung_ax) * w
        reach = rng.uniform(0.6, 1.1) * anat.lung_ax * w
        x0, x1 = (lateral, lateral + reach) if side == 0 else (lateral - reach, lateral)
        y0 = (anat.lung_cy + rng.uniform(0.45, 0.7) * anat.lung_ay) * h
        y1 = (anat.lung_cy + 1.03 * anat.lung_ay) * h
        lesions.append(Lesion(PLEURAL, _clip_box(x0, y0, x1, y1, w, h), side))
    if present[ATEL]:
        side = int(rng.integers(2))
        cx = (anat.lung_cx(side) + rng.uniform(-0.2, 0.2) * anat.lung_ax) * w
        cy = (anat.lung_cy + rng.uniform(-0.1, 0.5) * anat.lung_ay) * h
        half_len = rng.uniform(0.45, 0.8) * anat.lung_ax * w
        half_t = max(1.5, rng.uniform(0.02, 0.035) * h)  # visible at 64 px (0.008-0.016 was ≈ 1 px there)
        ang = rng.uniform(-0.3, 0.3)
        ex = half_len * abs(np.cos(ang)) + half_t * abs(np.sin(ang))
        ey = half_len * abs(np.sin(ang)) + half_t * abs(np.cos(ang))
        lesions.append(Lesion(ATEL, _clip_box(cx - ex, cy - ey, cx + ex, cy + ey, w, h), side, ang, half_len,
                              half_t))
    return lesions
