"""A stand-in MLflow model for MLflow Model Registry tests: registration and the champion rule only need *a* logged model
(the real one, :func:`mdfnet.serving.pyfunc.log_served_model`, is tested in ``test_serving_server.py``)."""

from __future__ import annotations

from typing import Any

import mlflow


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):  # pragma: no cover - never served
        return model_input


def log_stand_in_model(client: Any, run_id: str) -> str:
    """Log :class:`Constant` into run ``run_id`` (in its experiment); return the model URI."""
    from mdfnet.serving.pyfunc import log_pyfunc

    return log_pyfunc(client, run_id, python_model=Constant(), pip_requirements=["mlflow"])
