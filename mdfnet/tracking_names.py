"""Every name the project writes into MLflow, each written once, here: run tags, the params it names itself, the
tags of registered model versions, the champion alias and the metric that ranks runs.

This module imports nothing (no torch, no mlflow), so ``training/``, :mod:`mdfnet.cells`, the report, the
pipeline steps and the champion rule (:mod:`mdfnet.champion`) all read the names from here.
``tests/test_tracking_names.py`` fails when a tag name is spelled anywhere else in ``mdfnet/``, ``components/``,
``pipelines/`` or ``benchmarks/``. What the runs look like, and the metric names (``train/…``, ``val/…``,
``final/…``): :mod:`mdfnet.tracking`.

==========================  =========================================================================================
where                       names
==========================  =========================================================================================
pipeline run                tags :data:`TAG_KFP_RUN_ID`, :data:`TAG_KFP_RUN_NAME`, :data:`TAG_GIT_SHA`,
                            :data:`TAG_VERSION`, :data:`TAG_FINGERPRINT`, :data:`TAG_GRID`, ``image.<step>``
                            (:data:`TAG_IMAGE_PREFIX`); after compare :data:`TAG_BEST_CELL`, :data:`TAG_BEST_RUN`,
                            :data:`TAG_NOTE` (the comparison table) or :data:`TAG_REPORT_ERROR`; after register
                            :data:`TAG_REGISTERED_VERSION`, :data:`TAG_CHAMPION_DECISION`,
                            :data:`TAG_CHAMPION_VERSION`; params :data:`PIPELINE_PARAMS`
cell run                    tags :data:`TAG_CELL`, :data:`TAG_GRID`, :data:`TAG_PARENT`, the device tags
                            (:data:`DEVICE_TAGS`), :data:`TAG_SYNTHETIC`, :data:`TAG_DATA_SOURCE`; dataset inputs
                            train/val/test (:data:`INPUT_CONTEXT`); params :data:`PARAM_CELL`, :data:`PARAM_GRID`,
                            :data:`LABEL_KEYS` and every key of the resolved ``TrainConfig`` (``seed``,
                            ``model.*``, ``train.*``, ``data.*``, ``eval.*``: named by the config, not here)
both                        tags :data:`TAG_ROLE`, :data:`TAG_MODE`, :data:`TAG_RUN_NAME` (looked up on retries),
                            :data:`TAG_SOURCE_NAME`, :data:`TAG_SOURCE_TYPE`, :data:`TAG_GIT_COMMIT`
experiment                  tags :data:`EXPERIMENT_TAGS`
model version               tags :data:`TAG_VAL_AP`, :data:`TAG_METRIC`, :data:`TAG_CHAMPION_DECISION`,
                            :data:`TAG_CHAMPION_REASON`, the model card's (:data:`TAG_CELL`, :data:`TAG_SYNTHETIC`,
                            :data:`TAG_DATA_SOURCE`, :data:`TAG_GIT_SHA`, :data:`TAG_TEST_AP`,
                            :data:`TAG_LOOKALIKE_BACC`, :data:`TAG_CONTROL_TEST_AP`, ``mdfnet.dataset.<split>``);
                            alias :data:`CHAMPION_ALIAS`; the card itself is the version's description
==========================  =========================================================================================
"""

from __future__ import annotations

# ------------------------------------------------------------------------------------------ runs: role and lineage
TAG_ROLE = "mdfnet.role"
"""``pipeline`` or ``cell``."""
TAG_MODE = "mdfnet.tracking_mode"
"""``self`` or ``kfp-plugin`` (:func:`mdfnet.tracking.tracking_mode`)."""
TAG_PARENT = "mlflow.parentRunId"
"""MLflow's own: the pipeline run a cell run nests under."""
TAG_RUN_NAME = "mlflow.runName"
"""MLflow's own: the run's name (``<cell>-s<seed>`` for a cell run)."""
TAG_NOTE = "mlflow.note.content"
"""MLflow's own: the run's description (the pipeline run's comparison table)."""

# ------------------------------------------------------------------------------------------ runs: source (MLflow's own)
TAG_SOURCE_NAME = "mlflow.source.name"
"""What ran: the step function (``mdfnet.pipeline.steps.train_step``…); the runs table's *Source* column."""
TAG_SOURCE_TYPE = "mlflow.source.type"
"""MLflow's source kind: :data:`SOURCE_TYPE` for every step."""
TAG_GIT_COMMIT = "mlflow.source.git.commit"
"""The commit of the code (:func:`mdfnet.provenance.git_sha`, set only when known); the runs table's *Version*."""
SOURCE_TYPE = "JOB"
"""A pipeline task (MLflow's kinds: NOTEBOOK, JOB, PROJECT, LOCAL, UNKNOWN); the UI shows a JOB's full name."""

# ------------------------------------------------------------------------------------------ pipeline run
TAG_KFP_RUN_ID = "kfp.run_id"
TAG_KFP_RUN_NAME = "kfp.run_name"
TAG_GIT_SHA = "mdfnet.git_sha"
TAG_VERSION = "mdfnet.version"
TAG_FINGERPRINT = "mdfnet.dataset_fingerprint"
TAG_GRID = "mdfnet.grid"
"""The grid file's stem (pipeline and cell runs)."""
TAG_IMAGE_PREFIX = "image."
"""``image.<step>``: the image each step runs in."""
TAG_BEST_CELL = "mdfnet.best_cell"
TAG_BEST_RUN = "mdfnet.best_run"
TAG_REPORT_ERROR = "mdfnet.report_error"
TAG_REGISTERED_VERSION = "mdfnet.registered_version"
TAG_CHAMPION_DECISION = "mdfnet.champion_decision"
"""On the model version ``promoted`` or ``kept``; on the pipeline run (after register) the decision's reason."""
TAG_CHAMPION_VERSION = "mdfnet.champion_version"

PARAM_GRID = "grid"
"""The grid file's stem (pipeline and cell runs)."""
PARAM_SEEDS = "seeds"
PARAM_OVERRIDES = "overrides"
PARAM_CELLS = "cells"
PARAM_RUNS = "runs"
PIPELINE_PARAMS = (PARAM_GRID, PARAM_SEEDS, PARAM_OVERRIDES, PARAM_CELLS, PARAM_RUNS)
"""The pipeline run's params."""

# ------------------------------------------------------------------------------------------ cell run
TAG_CELL = "mdfnet.cell"
TAG_SYNTHETIC = "mdfnet.synthetic"
"""``true`` when the training data came from the synthetic generator (its marker,
:data:`mdfnet.data.schema.SYNTHETIC_MARKER`, reached the preprocessed folder), else ``false`` (cell run and model
version)."""
TAG_DATA_SOURCE = "mdfnet.data_source"
"""Where the sources were read from (``s3://…`` or a file URI; the join's ``source_uri``): cell run, model version."""
INPUT_CONTEXT = "mlflow.data.context"
"""MLflow's own: the tag of a run's dataset input saying what it was used for (values :data:`DATASET_CONTEXTS`)."""
DATASET_CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
"""Split → context of the cell run's three dataset inputs (``mlflow.log_input``'s ``context``)."""
PARAM_CELL = "cell"
PARAM_SEED = "seed"
"""The resolved ``TrainConfig``'s ``seed`` (logged with the config; read back by the report)."""
LABEL_KEYS = ("variant", "fusion", "backbone", "feature_set")
"""Short params every cell run carries (same names in every run, so the MLflow UI can group by them); the labels
of a grid cell (:class:`mdfnet.pipeline.grids.GridItem`) have the same keys."""

TAG_DEVICE = "mdfnet.device"
TAG_AMP = "mdfnet.amp_dtype"
TAG_GPU = "mdfnet.gpu_name"
TAG_CAPABILITY = "mdfnet.gpu_capability"
TAG_CUDA = "mdfnet.cuda_version"
TAG_CUDNN = "mdfnet.cudnn_version"
TAG_DRIVER = "mdfnet.driver_version"
TAG_TORCH = "mdfnet.torch_version"
TAG_SHM = "mdfnet.shm_mib"
TAG_CPUS = "mdfnet.cpu_count"
DEVICE_TAGS = (TAG_DEVICE, TAG_AMP, TAG_GPU, TAG_CAPABILITY, TAG_CUDA, TAG_CUDNN, TAG_DRIVER, TAG_TORCH, TAG_SHM,
               TAG_CPUS)
"""What a training run records about where it ran (:func:`mdfnet.training.device.device_tags`; the GPU ones only
on a GPU)."""

SELECTION_METRIC = "final/val/ap"
"""Metric (of a cell run) on which configs are compared and the champion is chosen: validation AP."""

# ------------------------------------------------------------------------------------------ experiment
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_TAGS = {TAG_EXPERIMENT_KIND: "custom_model_development"}
"""Tags of the experiments the pipeline creates: model training (not GenAI) in MLflow 3's UI."""

# ------------------------------------------------------------------------------------------ MLflow Model Registry
CHAMPION_ALIAS = "champion"
"""The alias of the registered model version that serves (``models:/<name>@champion``)."""
TAG_VAL_AP = "mdfnet.val_ap"
"""The version's validation AP at registration (the fallback when its run's metric cannot be read)."""
TAG_METRIC = "mdfnet.metric"
"""The metric the version was compared on (:data:`SELECTION_METRIC`)."""
TAG_CHAMPION_REASON = "mdfnet.champion_reason"
TAG_TEST_AP = "mdfnet.test_ap"
"""The version's test AP (IoBB 0.5) and its 95 % bootstrap interval, ``0.6912 [0.6460, 0.7770]`` (model card)."""
TAG_LOOKALIKE_BACC = "mdfnet.test_lookalike_bacc"
"""The version's test balanced accuracy on the look-alike pair (Consolidation vs Pulmonary edema), when scored."""
TAG_CONTROL_TEST_AP = "mdfnet.control_test_ap"
"""Mean test AP of the pipeline run's shuffled-clinical control cell (absent without one)."""
TAG_DATASET_PREFIX = "mdfnet.dataset."
"""``mdfnet.dataset.<split>``: ``<name> <digest> (<rows> readings)`` of the data the version was trained and scored
on (its run's dataset inputs)."""
