"""The MLflow pyfunc model: a :class:`~mdfnet.serving.predictor.Predictor` behind MLflow's typed signature.

:func:`log_served_model` writes the serving bundle (state_dict + config + preprocessing state), logs it with the
model code (``mdfnet/serving/mlflow_model.py``, MLflow's models-from-code: nothing of the model is pickled), the
signature, a params schema (``score_threshold``; ``explain``: per-detection reasons, :mod:`mdfnet.serving.explain`)
and an input example built from the train medians and a blank image (no patient data in the artefact).
``mlflow models serve -m models:/NAME@champion --env-manager local`` then answers ``POST /invocations`` with one
row per detection; a bad request gets HTTP 400 naming the problem.
"""

from __future__ import annotations

import io
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mdfnet.serving.inputs import FIELDS, RequestError, example_request

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

    from mdfnet.serving.predictor import Predictor

log = logging.getLogger(__name__)
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")


def signature():
    """Inputs: ``image`` (base64 text), the ten clinical fields (all required columns), optional ``study`` (id).
    Outputs: one row per detection.

    The clinical fields and ``study`` are typed ``Any``: a table as pandas reads the source tables (ages int64,
    vitals float64, numbers as text, ``NaN``/``None``, pain as text) reaches
    :func:`~mdfnet.serving.inputs.clean_request`, the one place that parses and checks them, in every path
    (``load_model(...).predict``, ``mlflow models predict -i`` CSV/JSON, HTTP JSON). A ``double`` column made
    MLflow refuse int64 and numbers as text before ``predict`` ("Can not safely convert int64 to float64").
    Cost: MLflow 3.17's HTTP server refuses ``Content-Type: text/csv`` bodies for a signature with ``Any``
    columns (it reads CSV with the signature's pandas dtypes); send JSON (``dataframe_split``) over HTTP."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import AnyType

    inputs = [ColSpec("string", "image"), ColSpec(AnyType(), "study", required=False)]  # MIMIC's ids are int64
    inputs += [ColSpec(AnyType(), f) for f in FIELDS]
    outputs = [ColSpec("string", "study"), ColSpec("string", "label"), ColSpec("double", "score"),
               *(ColSpec("double", c) for c in ("xmin", "ymin", "xmax", "ymax"))]
    params = ParamSchema([ParamSpec("score_threshold", "double", 0.0),
                          ParamSpec("explain", "boolean", False)])  # per-detection reasons: mdfnet.serving.explain
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs), params=params)


class MDFNetModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: loads the bundle artefact; ``predict`` maps request errors to HTTP 400."""

    def load_context(self, context) -> None:
        """Load the bundle onto ``$MDFNET_SERVING_DEVICE`` (default ``auto``: the GPU when there is one), without
        the mask branch (answers are boxes: :meth:`~mdfnet.serving.predictor.Predictor.without_masks`), behind
        one inference thread with ``$MDFNET_SERVING_THREADS`` torch threads, the loaded objects out of the cyclic
        garbage collector (:mod:`mdfnet.serving.runtime`)."""
        from mdfnet.serving.predictor import Predictor, resolve_device
        from mdfnet.serving.runtime import InferenceRunner, configure_threads, freeze_loaded_objects

        configure_threads()
        self.predictor = Predictor.from_bundle(context.artifacts["bundle"]).to(resolve_device()).without_masks()
        self.runner = InferenceRunner(self.predictor)
        freeze_loaded_objects()

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        threshold = float((params or {}).get("score_threshold") or 0.0)
        try:
            if (params or {}).get("explain"):
                from mdfnet.serving.explain import explain_predict

                return self.runner.call(explain_predict, self.predictor, model_input, score_threshold=threshold)
            return self.runner.predict(model_input, score_threshold=threshold)
        except RequestError as e:
            raise MlflowException(f"bad request: {e}", error_code=INVALID_PARAMETER_VALUE) from None


def _blank_png(size: int) -> bytes:
    """A smooth grey gradient PNG (``size`` px): the input example's image."""
    from PIL import Image

    ramp = np.linspace(40, 200, size, dtype=np.float64)
    buf = io.BytesIO()
    Image.fromarray((np.add.outer(ramp, ramp[::-1]) / 2).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def log_pyfunc(client: MlflowClient, run_id: str, name: str = "model", **model_log: Any) -> str:
    """Log a pyfunc model (``python_model`` …, keyword arguments of MLflow's ``Model.log``) into run ``run_id``
    and the run's experiment; return its model URI (``models:/<model id>``).

    ``Model.log`` is what ``mlflow.pyfunc.log_model`` calls; it also takes ``run_id`` (``pyfunc.log_model`` only
    logs into the active run, and starting one here would end the cell run on exit)."""
    from mdfnet.tracking import _get_run

    mlflow.set_tracking_uri(client.tracking_uri)
    run = _get_run(client, run_id)
    # the logged model must live in the run's experiment (MLflow would otherwise use the active/default one)
    logged = client.create_logged_model(experiment_id=run.info.experiment_id, name=name, source_run_id=run_id)
    return Model.log(artifact_path=None, name=name, flavor=mlflow.pyfunc, run_id=run_id, model_id=logged.model_id,
                     **model_log).model_uri


def log_served_model(client: MlflowClient, run_id: str, predictor: Predictor, name: str = "model",
                     pip_requirements: list[str] | None = None) -> str:
    """Log ``predictor`` as the served pyfunc model into run ``run_id``; return its model URI."""
    from mdfnet import __version__

    example = example_request(predictor.transform.median, _blank_png(predictor.image_size))
    with tempfile.TemporaryDirectory(prefix="mdfnet-bundle-") as tmp:
        bundle = predictor.write_bundle(Path(tmp) / "bundle")
        return log_pyfunc(client, run_id, name, python_model=str(MODEL_CODE), artifacts={"bundle": str(bundle)},
                          signature=signature(), input_example=example,
                          pip_requirements=pip_requirements or [f"mdfnet=={__version__}"])
