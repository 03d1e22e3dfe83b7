"""``Predictor``: a trained model plus everything its inputs need (image size, feature list, the train split's
imputation and scaling), from a checkpoint or from a serving bundle; one ``predict`` for the CLI and the served
model, so both give the same answer.

Serving bundle (a folder; what the MLflow pyfunc model carries as its ``bundle`` artefact)::

    weights.pt     model.state_dict() only (read with torch.load(weights_only=True): no pickle)
    serving.json   {"format": "mdfnet-serving-v1", "config": TrainConfig dict, "meta": checkpoint meta}

``meta`` holds ``image_size``, ``numeric_features``, ``categorical_features``, ``classes`` and ``transform``
(:class:`mdfnet.data.preprocess.ClinicalTransform` as a dict).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mdfnet.config import from_dict, to_dict
from mdfnet.data import schema
from mdfnet.data.dataset import select_features
from mdfnet.data.images import ImageReadError, read_gray
from mdfnet.data.preprocess import ClinicalTransform, load_transform
from mdfnet.serving.inputs import RequestError, clean_requests, decode_base64_image, study_ids
from mdfnet.training.config import TrainConfig

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "mdfnet-serving-v1"
OUTPUT_COLUMNS: tuple[str, ...] = ("study", "label", "score", "xmin", "ymin", "xmax", "ymax")
"""One row per detection; boxes in the original image's pixels."""


DEVICE_ENV = "MDFNET_SERVING_DEVICE"
"""Where served models run: ``auto`` (default: the GPU when the pod has one), ``cpu`` or ``cuda[:N]``."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, else ``$MDFNET_SERVING_DEVICE``, else ``auto``; ``auto`` = ``cuda`` if available, else ``cpu``."""
    import os

    name = str(device or os.environ.get(DEVICE_ENV) or "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise ModelSourceError(f"{DEVICE_ENV}={name!r}: expected auto, cpu or cuda[:N]")
    return torch.device(name)


class ModelSourceError(ValueError):
    """A checkpoint, run folder or bundle cannot be loaded; the message names it."""


@dataclass
class Predictor:
    """``model`` (eval mode, CPU unless moved), its resolved ``cfg`` and checkpoint ``meta``."""

    model: nn.Module
    cfg: TrainConfig
    meta: dict[str, Any]

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def transform(self) -> ClinicalTransform:
        return ClinicalTransform.from_dict(self.meta["transform"])

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def _build(cls, cfg: TrainConfig, meta: dict[str, Any], state: dict[str, Any]) -> Predictor:
        from mdfnet.model import build_model

        model = build_model(cfg.model, len(meta["numeric_features"]), len(meta["categorical_features"]),
                            int(meta["image_size"]))
        model.load_state_dict(state)
        return cls(model.eval(), cfg, meta)

    @classmethod
    def from_checkpoint(cls, path: str | Path, data_dir: str | Path | None = None) -> Predictor:
        """A training checkpoint (``.pt``) or a run folder (its ``checkpoints/best.pt``, else ``last.pt``).
        Checkpoints written before the transform was stored in them need ``data_dir`` (the preprocessed folder)."""
        from mdfnet.training.checkpoint import load_checkpoint
        from mdfnet.training.run_folder import RunFolder

        path = Path(path)
        if path.is_dir():
            folder = RunFolder(path)
            found = [p for p in (folder.best, folder.last) if p.is_file()]
            if not found:
                raise ModelSourceError(f"{path} is a folder without {folder.best.relative_to(path)} or "
                                       f"{folder.last.relative_to(path)}")
            path = found[0]
        ckpt = load_checkpoint(path)
        meta = dict(ckpt["meta"])
        if "transform" not in meta:
            if data_dir is None:
                raise ModelSourceError(f"{path} predates stored preprocessing state: pass the preprocessed folder "
                                       "it was trained on (--data)")
            meta["transform"] = load_transform(data_dir)[0].to_dict()
        return cls._build(from_dict(TrainConfig, ckpt["config"]), meta, ckpt["model"])

    @classmethod
    def from_bundle(cls, bundle_dir: str | Path) -> Predictor:
        bundle_dir = Path(bundle_dir)
        spec_path = bundle_dir / "serving.json"
        if not spec_path.is_file():
            raise ModelSourceError(f"{spec_path} not found: {bundle_dir} is not an mdfnet serving bundle")
        spec = json.loads(spec_path.read_text())
        if spec.get("format") != BUNDLE_FORMAT:
            raise ModelSourceError(f"{spec_path}: format {spec.get('format')!r}, expected {BUNDLE_FORMAT!r}")
        state = torch.load(bundle_dir / "weights.pt", map_location="cpu", weights_only=True)
        return cls._build(from_dict(TrainConfig, spec["config"]), spec["meta"], state)

    def to(self, device: str | torch.device) -> Predictor:
        """Move the model to ``device`` (``auto``: CUDA when available, else CPU); returns ``self``."""
        self.model.to(resolve_device(device))
        return self

    def without_masks(self) -> Predictor:
        """Drop the Mask R-CNN mask branch (mask RoI pool, head and predictor) from the model, in place; returns
        ``self``. Served answers are boxes only (:data:`OUTPUT_COLUMNS`), and the branch is most of a request's
        time: a default-config model (``use_mask``, 256-channel mask head) at 64 px took 155 ms per image with it
        and 15 ms without, one thread on 2 shared cores (2026-12-05). Boxes, labels and scores are unchanged.
        Such a predictor cannot :meth:`write_bundle` (its weights lack the branch). A model without torchvision
        ``roi_heads`` (a stand-in) is left as it is."""
        heads = getattr(self.model, "roi_heads", None)
        if heads is not None and heads.has_mask():
            heads.mask_roi_pool = heads.mask_head = heads.mask_predictor = None
        return self

    def write_bundle(self, out_dir: str | Path) -> Path:
        heads = getattr(self.model, "roi_heads", None)
        if self.cfg.model.use_mask and heads is not None and not heads.has_mask():
            raise ModelSourceError("this predictor's mask branch was dropped (without_masks): its weights cannot "
                                   "be written as a bundle of a use_mask model; load the checkpoint again")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), out_dir / "weights.pt")
        spec = {"format": BUNDLE_FORMAT, "config": to_dict(self.cfg), "meta": self.meta}
        (out_dir / "serving.json").write_text(json.dumps(spec, indent=2))
        return out_dir

    # ------------------------------------------------------------------------------ inference
    def clinical_tensors(self, cleaned: pd.DataFrame) -> dict[str, torch.Tensor]:
        """Cleaned clinical values → ``{"numeric": float32 [B, k], "categorical": int64 [B, m]}`` for the
        model's features (imputed and standardised with the train split's statistics)."""
        numeric, categorical = self.transform.transform(cleaned)
        num_names, cat_names = select_features(self.cfg.data.features)
        num_idx = [schema.NUMERIC_FEATURES.index(f) for f in num_names]
        cat_idx = [schema.CATEGORICAL_FEATURES.index(f) for f in cat_names]
        return {"numeric": torch.from_numpy(np.ascontiguousarray(numeric[:, num_idx])),
                "categorical": torch.from_numpy(np.ascontiguousarray(categorical[:, cat_idx]))}

    def decode(self, frame: pd.DataFrame) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
        """The request's images → model inputs uint8 ``[1, S, S]`` (grayscale, as :class:`mdfnet.data.MDFDataset`
        hands them to training: the model's transform converts both alike) and original ``(width, height)``."""
        images, sizes = [], []
        for i, value in enumerate(frame["image"]):
            try:
                gray, size = read_gray(decode_base64_image(i, value), self.image_size)
            except ImageReadError as e:
                raise RequestError(f"row {i}: {e}") from None
            images.append(torch.from_numpy(np.array(gray, dtype=np.uint8)).unsqueeze(0))
            sizes.append(size)
        return images, sizes

    def predict(self, frame: pd.DataFrame, score_threshold: float = 0.0, batch_size: int = 4) -> pd.DataFrame:
        """Score a request table (:mod:`mdfnet.serving.inputs`) → detections (:data:`OUTPUT_COLUMNS`), boxes in
        the original pixels, per study in the model's order (descending score). Raises ``RequestError``."""
        (out,) = self.predict_many([frame], [score_threshold], batch_size)
        if isinstance(out, RequestError):
            raise out
        return out

    @torch.no_grad()
    def predict_many(self, frames: list[pd.DataFrame], thresholds: list[float],
                     batch_size: int = 4) -> list[pd.DataFrame | RequestError]:
        """:meth:`predict` of several requests at once (the served model's concurrent requests,
        :mod:`mdfnet.serving.runtime`): their clinical values cleaned in one pass
        (:func:`~mdfnet.serving.inputs.clean_requests`), their images through the model together in batches of
        ``batch_size``. Returns what ``predict`` gives each request, or the ``RequestError`` it raises in its place
        (the other requests are scored)."""
        results: list[pd.DataFrame | RequestError | None] = [None] * len(frames)
        with_image = [k for k, f in enumerate(frames) if "image" in f.columns]
        for k in set(range(len(frames))) - set(with_image):
            results[k] = RequestError("missing field 'image' (base64 of a JPEG, PNG or DICOM file)")
        ready = []  # (request, cleaned values, images, original sizes)
        for k, cleaned in zip(with_image, clean_requests([frames[k] for k in with_image]), strict=True):
            try:
                if isinstance(cleaned, RequestError):
                    raise cleaned
                ready.append((k, cleaned, *self.decode(frames[k])))
            except RequestError as e:
                results[k] = e
        images = [im for _, _, ims, _ in ready for im in ims]
        outputs: list[dict[str, torch.Tensor]] = []
        if images:
            clinical = self.clinical_tensors(pd.concat([c for _, c, _, _ in ready], ignore_index=True))
            outputs = self._forward(images, clinical, batch_size)
        start = 0
        for k, _, ims, sizes in ready:
            rows = [row for study, out, size in zip(study_ids(frames[k]), outputs[start:start + len(ims)], sizes,
                                                    strict=True)
                    for row in self._rows(study, out, size, thresholds[k])]
            start += len(ims)
            results[k] = pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS)).astype(
                {"study": "object", "label": "object", **{c: "float64" for c in OUTPUT_COLUMNS[2:]}})
        return results  # type: ignore[return-value]

    def _forward(self, images: list[torch.Tensor], clinical: dict[str, torch.Tensor],
                 batch_size: int) -> list[dict[str, torch.Tensor]]:
        """The model's detections for ``images`` (and their clinical rows), ``batch_size`` images per call."""
        device = next(self.model.parameters()).device
        outputs: list[dict[str, torch.Tensor]] = []
        for start in range(0, len(images), batch_size):
            end = start + batch_size
            outputs += self.model([im.to(device) for im in images[start:end]],
                                  {k: v[start:end].to(device) for k, v in clinical.items()})
        return outputs

    def _rows(self, study: str, out: dict[str, torch.Tensor], size: tuple[int, int], threshold: float) -> list[tuple]:
        scale = torch.tensor([size[0], size[1], size[0], size[1]], dtype=torch.float64) / self.image_size
        boxes = out["boxes"].detach().cpu().to(torch.float64) * scale
        classes = self.meta["classes"]
        return [(study, classes[int(lab) - 1], float(s), *map(float, b))
                for b, lab, s in zip(boxes, out["labels"].cpu(), out["scores"].cpu().to(torch.float64), strict=True)
                if float(s) >= threshold]


def open_model(source: str, data_dir: str | Path | None = None) -> Callable[..., pd.DataFrame]:
    """``source`` → ``score(request_frame, score_threshold, explain=False) -> detections`` (``explain``: with the
    per-detection reasons of :mod:`mdfnet.serving.explain`).

    ``models:/NAME@alias``, ``models:/NAME/VERSION``, ``runs:/…`` or any URI: the MLflow pyfunc model (exactly
    what ``mlflow models serve`` runs); a ``.pt`` checkpoint or a run folder: :meth:`Predictor.from_checkpoint`.
    """
    if "://" in source or source.startswith(("models:/", "runs:/")):
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            model = mlflow.pyfunc.load_model(source)
        except (MlflowException, OSError) as e:
            raise ModelSourceError(f"cannot load model {source!r}: {e}") from e

        def score_pyfunc(frame: pd.DataFrame, threshold: float, explain: bool = False) -> pd.DataFrame:
            params = {"score_threshold": float(threshold), **({"explain": True} if explain else {})}
            try:
                out = model.predict(frame, params=params)
            except MlflowException as e:
                raise RequestError(e.message.removeprefix("bad request: ")) from None
            if explain and "reasons" not in out.columns:
                raise ModelSourceError(f"model {source!r} was logged before the 'explain' param existed: log it "
                                       "again (or pass its run folder or checkpoint) for per-detection reasons")
            return out

        return score_pyfunc
    path = Path(source)
    if not path.exists():
        raise ModelSourceError(f"model {source!r}: no such checkpoint or run folder, and not a models:/ or runs:/ URI")
    predictor = Predictor.from_checkpoint(path, data_dir).to(resolve_device())

    def score_checkpoint(frame: pd.DataFrame, threshold: float, explain: bool = False) -> pd.DataFrame:
        if explain:
            from mdfnet.serving.explain import explain_predict

            return explain_predict(predictor, frame, score_threshold=threshold)
        return predictor.predict(frame, score_threshold=threshold)

    return score_checkpoint
