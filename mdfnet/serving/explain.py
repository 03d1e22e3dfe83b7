"""Per-detection reasons: how each triage value moves a detection's class score (``mdfnet predict --explain``,
the pyfunc's ``explain`` param).

**Definition.** For a kept detection ``d`` (box ``b`` in the model's pixels, class ``c``) of a study whose cleaned
triage values are ``x``, the change due to feature ``f`` is

    Δ_f(d) = p_c(b | x) − p_c(b | x with f set to the train median)

where ``p_c(b | ·)`` is the softmax probability of class ``c`` that the box head gives the fixed box ``b``
(:meth:`mdfnet.model.detector.MDFNet.classify_boxes`: image and clinical inputs through the whole feature stage,
RoIAlign on ``b``, box head; the RPN is skipped). The detector itself is *not* re-run with the altered input:
its proposals, boxes and kept set would change, and "the same detection" would be undefined. Holding ``b`` and
``c`` fixed makes ``Δ_f`` the answer to: *how much more (or less) of class c would the model see in this box if
this patient's f were unremarkable?* ``Δ_f > 0``: the value supports the detection. The median is the train
split's (:class:`mdfnet.data.preprocess.ClinicalTransform`, stored in every checkpoint and serving bundle), so
setting ``f`` to "missing" and letting the model's own imputation fill it in is the same input. A value that was
missing in the request is already the median: its ``Δ`` is exactly 0. Features the model does not take (its
``data.features``; all of them for the image-only baseline) get ``NaN``. **Gender** is not explained: it has no
median, and its "missing" code is one the model never sees in training when the train split has no missing
gender (the demo's train split: 261 M, 220 F, none missing; the 0 row of the embedding is then never trained), so that
replacement would read an untrained embedding row (it moved the demo model's Consolidation scores by a median
0.20, more than any triage value but temperature: an artefact, not a reason).

``p_c(b | x)`` is the box head's score for the *final* (regressed) box; the detection's own ``score`` is the same
head's output for the proposal it was regressed from, so the two differ slightly (``base_score`` column).

**Cost.** One batched forward pass of a chunk's images with the actual inputs and one per feature the model
takes (9 for MDF-Net): 10 forward passes per image, on top of the detection pass.

**Output.** :func:`explain_predict` returns the detections (:data:`~mdfnet.serving.predictor.OUTPUT_COLUMNS`)
plus ``base_score``, ``change_<feature>`` for each of the 9 numeric fields (:data:`EXPLAINED`), ``top_reason`` (the
feature with the largest ``|Δ|``, or ``None``) and ``reasons`` (text: ``"temperature 102.6 °F +0.61, resprate
16/min +0.05"``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from mdfnet.data import schema
from mdfnet.data.dataset import select_features
from mdfnet.model.catalog import VARIANTS
from mdfnet.serving.inputs import clean_request, study_ids
from mdfnet.serving.predictor import Predictor

log = logging.getLogger(__name__)

CHANGE_PREFIX = "change_"
"""``change_<feature>``: Δ of the module docstring (float; NaN for a feature the model does not take)."""
EXPLAINED: tuple[str, ...] = schema.NUMERIC_FEATURES
"""The fields a detection's score change is computed for: every one with a train median (not gender)."""
EXPLAIN_COLUMNS: tuple[str, ...] = ("base_score", *(f"{CHANGE_PREFIX}{f}" for f in EXPLAINED), "top_reason", "reasons")
"""Columns :func:`explain_predict` adds to the detections."""
UNITS: dict[str, str] = {"age": "y", "temperature": "°F", "heartrate": "bpm", "resprate": "/min", "o2sat": "%",
                         "sbp": "mmHg", "dbp": "mmHg", "pain": "/10", "acuity": "(ESI)"}
"""Units of the cleaned values, as :mod:`mdfnet.data.clean` leaves them (temperature converted to °F)."""
MIN_REASON = 0.01
"""Changes smaller than this (in probability) are left out of the ``reasons`` text (never out of the columns)."""
MAX_REASONS = 3
"""At most this many features in the ``reasons`` text, largest ``|Δ|`` first."""
BOX = ("xmin", "ymin", "xmax", "ymax")


def explained_features(predictor: Predictor) -> tuple[str, ...]:
    """The fields of :data:`EXPLAINED` the model takes (none for a variant without a clinical path)."""
    if not VARIANTS[predictor.cfg.model.variant].uses_clinical:
        return ()
    numeric, _ = select_features(predictor.cfg.data.features)
    return tuple(f for f in EXPLAINED if f in numeric)


def _class_probability(predictor: Predictor, images: list[torch.Tensor], cleaned: pd.DataFrame,
                       boxes: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """``p_c(b | cleaned)`` for every box (``R = Σ len(boxes)``, labels 1..K), one batched forward pass."""
    device = next(predictor.model.parameters()).device
    clinical = {k: v.to(device) for k, v in predictor.clinical_tensors(cleaned).items()}
    logits = predictor.model.classify_boxes([im.to(device) for im in images], clinical,
                                            [b.to(device) for b in boxes])
    probs = torch.softmax(logits.float(), dim=-1).cpu()
    return probs.gather(1, labels.view(-1, 1)).view(-1).to(torch.float64)


@torch.no_grad()
def score_changes(predictor: Predictor, images: list[torch.Tensor], cleaned: pd.DataFrame,
                  boxes: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(p_c(b | x) [R], {feature: Δ [R]})`` for the boxes of ``len(images)`` images (module docstring).

    ``images``: the model's inputs (uint8 ``[1, S, S]``); ``cleaned``: their cleaned clinical rows
    (:func:`~mdfnet.serving.inputs.clean_request`); ``boxes``: one ``[N_i, 4]`` xyxy tensor per image, model
    pixels; ``labels``: ``[R]`` class ids 1..K in the same order. One batched forward pass per feature."""
    if len(images) != len(cleaned) or len(images) != len(boxes):
        raise ValueError(f"{len(images)} images, {len(cleaned)} clinical rows and {len(boxes)} box sets: "
                         "expected one of each per study")
    base = _class_probability(predictor, images, cleaned, boxes, labels)
    changes = {}
    for f in explained_features(predictor):
        altered = cleaned.copy()
        altered[f] = math.nan  # the model's own imputation: the train median
        changes[f] = base - _class_probability(predictor, images, altered, boxes, labels)
    return base, changes


def explain_predict(predictor: Predictor, frame: pd.DataFrame, score_threshold: float = 0.0,
                    batch_size: int = 4) -> pd.DataFrame:
    """:meth:`Predictor.predict` plus the columns :data:`EXPLAIN_COLUMNS` for each detection (module docstring).
    Raises :class:`~mdfnet.serving.inputs.RequestError` for a bad request, exactly as ``predict`` does."""
    frame = frame.reset_index(drop=True)
    keyed = frame.assign(study=[str(i) for i in range(len(frame))])  # row ids: studies may repeat
    dets = predictor.predict(keyed, score_threshold=score_threshold, batch_size=batch_size)
    rows = dets["study"].astype(int).to_numpy()
    changes = np.full((len(dets), len(EXPLAINED)), np.nan)
    base = np.full(len(dets), np.nan)
    features = explained_features(predictor)
    cleaned = clean_request(keyed)
    if len(dets):
        images, sizes = predictor.decode(keyed)
        scale = np.array([[w, h, w, h] for w, h in sizes], dtype=np.float64) / predictor.image_size
        model_boxes = dets[list(BOX)].to_numpy(np.float64) / scale[rows]
        class_ids = torch.tensor([predictor.meta["classes"].index(c) + 1 for c in dets["label"]], dtype=torch.int64)
        for start in range(0, len(frame), batch_size):
            chunk = range(start, min(start + batch_size, len(frame)))
            picked = np.flatnonzero((rows >= chunk.start) & (rows < chunk.stop))
            if not len(picked):
                continue
            per_image = [torch.from_numpy(model_boxes[picked[rows[picked] == i]]).float() for i in chunk]
            b, ch = score_changes(predictor, [images[i] for i in chunk], cleaned.iloc[chunk.start:chunk.stop],
                                  per_image, class_ids[picked])
            base[picked] = b.numpy()
            for f, delta in ch.items():
                changes[picked, EXPLAINED.index(f)] = delta.numpy()
        log.info("explained %d detection(s) of %d stud(ies) over %d feature(s)", len(dets), len(frame), len(features))
    names = study_ids(frame)
    dets["study"] = pd.Series([names[r] for r in rows], index=dets.index, dtype="object")
    return _with_reasons(dets, base, changes, features, cleaned, rows)


def _with_reasons(dets: pd.DataFrame, base: np.ndarray, changes: np.ndarray, features: Sequence[str],
                  cleaned: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """``dets`` with :data:`EXPLAIN_COLUMNS`; ``rows``: each detection's row of ``cleaned``."""
    out = dets.copy()
    out["base_score"] = base
    for j, f in enumerate(EXPLAINED):
        out[f"{CHANGE_PREFIX}{f}"] = changes[:, j]
    tops, texts = [], []
    for k in range(len(dets)):
        by_size = sorted(features, key=lambda f: -abs(changes[k, EXPLAINED.index(f)]))
        tops.append(by_size[0] if by_size and abs(changes[k, EXPLAINED.index(by_size[0])]) > 0 else None)
        texts.append(reason_text({f: changes[k, EXPLAINED.index(f)] for f in by_size}, cleaned.iloc[int(rows[k])]))
    out["top_reason"] = pd.Series(tops, index=out.index, dtype="object")
    out["reasons"] = pd.Series(texts, index=out.index, dtype="object")
    return out


def format_value(field: str, value) -> str:
    """A cleaned value with its unit: ``temperature 102.6 °F``, ``o2sat missing``."""
    if value is None or pd.isna(value):
        return f"{field} missing"
    if isinstance(value, str):
        return f"{field} {value}"
    unit = UNITS.get(field, "")
    number = f"{float(value):.1f}" if field == "temperature" else f"{float(value):g}"
    return f"{field} {number}{' ' if unit and not unit.startswith('/') else ''}{unit}"


def reason_text(changes: Mapping[str, float], values: Mapping[str, object]) -> str:
    """``"temperature 102.6 °F +0.61, resprate 16 /min +0.05"``: the features whose ``|Δ|`` ≥ :data:`MIN_REASON`,
    largest first, at most :data:`MAX_REASONS`; ``""`` when none."""
    ranked = sorted(((f, d) for f, d in changes.items() if abs(d) >= MIN_REASON), key=lambda fd: -abs(fd[1]))
    return ", ".join(f"{format_value(f, values.get(f))} {d:+.2f}" for f, d in ranked[:MAX_REASONS])


def detection_line(d: Mapping[str, object]) -> str:
    """One explained detection as a line: ``"Consolidation 0.98 — temperature 102.6 °F +0.61, …"``."""
    reasons = d.get("reasons") or "no triage value moves it by 0.01 or more"
    return f"{d['label']} {float(d['score']):.2f} — {reasons}"


def top_reason_counts(dets: pd.DataFrame) -> pd.DataFrame:
    """Explained detections → a table class × top reason (counts; rows = classes found, columns = features)."""
    if not len(dets):
        return pd.DataFrame()
    return pd.crosstab(dets["label"], dets["top_reason"].fillna("none"))
