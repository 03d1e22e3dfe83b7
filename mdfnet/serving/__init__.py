"""Serving: the champion in use.

- :mod:`~mdfnet.serving.inputs` (torch-free): a request as typed by a person → checked, cleaned values;
- :mod:`~mdfnet.serving.predictor`: ``Predictor`` (checkpoint or bundle → detections in original pixels);
- :mod:`~mdfnet.serving.pyfunc`: the MLflow pyfunc model, its signature, ``log_served_model``;
- :mod:`~mdfnet.serving.runtime`: the served model's torch threads and its one inference thread, which scores
  concurrent requests together;
- :mod:`~mdfnet.serving.draw`: labelled boxes on the image (``mdfnet predict --out``).
"""

from mdfnet.serving.inputs import FIELDS, RequestError, request_frame

__all__ = ["FIELDS", "RequestError", "request_frame"]
