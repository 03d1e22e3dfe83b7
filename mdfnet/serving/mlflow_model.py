"""MLflow models-from-code entry: the file MLflow stores with every logged mdfnet model and runs to build it
(no pickled Python object in the artefact). See :mod:`mdfnet.serving.pyfunc`."""

from mlflow.models import set_model

from mdfnet.serving.pyfunc import MDFNetModel

set_model(MDFNetModel())
