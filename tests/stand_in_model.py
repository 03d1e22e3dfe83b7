"""A stand-in MLflow model for registry tests: registration and the champion rule only need *a* logged model
(the real one, :func:`mdfnet.serving.pyfunc.log_served_model`, is tested in ``test_serving_server.py``)."""

from __future__ import annotations

from typing import Any

import mlflow


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):  # pragma: no cover - never served
        return model_input


def log_stand_in_model(client: Any, run_id: str) -> str:
    """Log :class:`Constant` into run ``run_id`` (in its experiment); return the model URI."""
    from mlflow.models import Model

    mlflow.set_tracking_uri(client.tracking_uri)
    exp = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(experiment_id=exp, name="model", source_run_id=run_id)
    return Model.log(artifact_path=None, name="model", flavor=mlflow.pyfunc, python_model=Constant(), run_id=run_id,
                     model_id=logged.model_id, pip_requirements=["mlflow"]).model_uri
