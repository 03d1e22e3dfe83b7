"""Compiled KFP package: golden file, strict protobuf parse, GPU train task (its /dev/shm, the device every cell asks
for), step images and task names from ``components/steps.tsv``, a description on every input and output, no secret
values; ``compile.py``'s defaults are ``CompileOptions``'. ``--min-backend`` (optional Secret keys from 2.15.0, a
release that cannot run the package refused), ``--kubernetes-manifest`` (golden file, strict), the compare task's
MLflow links and KFP metrics, and the README's "First run on a cluster" commands that run here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

import components
import mdfnet
from mdfnet.pipeline.grids import load_grids

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "pipelines" / "mdfnet_pipeline.yaml"
STEPS = tuple(row.image for row in components.step_images().values())
"""The step images = the compiled tasks' names (the component names with ``_`` → ``-``), from steps.tsv."""
FAKE_SECRETS = {"AWS_SECRET_ACCESS_KEY": "sekrit-aws-8c1f", "MLFLOW_TRACKING_PASSWORD": "sekrit-mlflow-2b9d",
                "AWS_ACCESS_KEY_ID": "AKIAFAKEKEY123"}


def compile_to(path: Path, *args: str) -> str:
    """Run ``pipelines/compile.py`` as a user does (a fresh interpreter, no ``sys.path`` help: ``pipelines`` and
    ``components`` are installed packages), with fake credentials in its environment that must not leak into
    the package."""
    env = {k: v for k, v in os.environ.items() if k != "MDFNET_IMAGE_REGISTRY"} | FAKE_SECRETS
    subprocess.run([sys.executable, str(ROOT / "pipelines" / "compile.py"), "--output", str(path), *args],
                   check=True, cwd=ROOT, env=env, capture_output=True, text=True)
    return path.read_text()


@pytest.fixture(scope="module")
def default_text(tmp_path_factory) -> str:
    return compile_to(tmp_path_factory.mktemp("c") / "p.yaml")


@pytest.fixture(scope="module")
def custom_text(tmp_path_factory) -> str:
    return compile_to(tmp_path_factory.mktemp("c") / "p.yaml", "--registry", "reg.example:5000/team/",
                      "--gpu-node-selector", "cloud.google.com/gke-accelerator=nvidia-h100-80gb",
                      "--gpu-toleration", "dedicated=gpu:NoExecute", "--parallelism", "7", "--train-retries", "3",
                      "--shm-size", "512Mi", "--train-device", "cuda:1", "--min-backend", "2.15.0")


def parse_strict(text: str):
    """PipelineSpec + PlatformSpec + every KubernetesExecutorConfig, unknown fields rejected."""
    docs = list(yaml.safe_load_all(text))
    assert len(docs) == 2, "expected the pipeline spec and the platform spec"
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    platform = json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    k8s = {name: json_format.ParseDict(cfg, kubernetes_executor_config_pb2.KubernetesExecutorConfig(),
                                       ignore_unknown_fields=False) for name, cfg in executors.items()}
    return docs, spec, platform, k8s


def test_committed_package_equals_a_fresh_compile(default_text):
    assert GOLDEN.is_file(), "run `python pipelines/compile.py` and commit pipelines/mdfnet_pipeline.yaml"
    assert default_text == GOLDEN.read_text(), "pipelines/mdfnet_pipeline.yaml is stale: recompile and commit it"


def test_package_parses_strictly_and_has_the_expected_graph(default_text):
    docs, spec, platform, k8s = parse_strict(default_text)
    assert spec.pipeline_info.name == "mdfnet"
    root = spec.root.dag.tasks
    loop = root["for-loop-1"]
    assert loop.iterator_policy.parallelism_limit == 4
    body = spec.components[loop.component_ref.name].dag.tasks
    assert set(body) == {"train", "evaluate"}
    assert set(root) == set(STEPS) - set(body) | {"for-loop-1"}  # one task per step, named as its image
    for name, task in {**root, **body}.items():
        if name != "for-loop-1":
            assert task.component_ref.name == f"comp-{name}"
    assert set(spec.root.input_definitions.parameters) == {
        "source_uri", "grid", "seeds", "config_overrides", "preprocess_overrides", "experiment", "registered_model",
        "max_steps", "mlflow_ui"}
    # the grids travel inside the package (steps' images do not carry pipelines/grids)
    grids = json_format.MessageToDict(root["expand-grid"].inputs.parameters["grids"].runtime_value.constant)
    assert grids == load_grids(ROOT / "pipelines" / "grids")
    assert set(k8s) == {f"exec-{s}" for s in STEPS}
    assert not body["train"].caching_options.enable_cache and not root["expand-grid"].caching_options.enable_cache


def test_train_task_requests_one_gpu_with_node_selector_toleration_timeout_retries(default_text, custom_text):
    for text, selector, tol, retries in (
        (default_text, {"nvidia.com/gpu.present": "true"}, ("nvidia.com/gpu", "Exists", "", "NoSchedule"), 2),
        (custom_text, {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}, ("dedicated", "Equal", "gpu",
                                                                                 "NoExecute"), 3),
    ):
        docs, spec, _, k8s = parse_strict(text)
        res = spec.deployment_spec["executors"]["exec-train"]["container"]["resources"]
        assert res["accelerator"]["resourceType"] == "nvidia.com/gpu" and res["accelerator"]["resourceCount"] == "1"
        train = k8s["exec-train"]
        assert dict(train.node_selector.labels) == selector
        assert [(t.key, t.operator, t.value, t.effect) for t in train.tolerations] == [tol]
        assert train.active_deadline_seconds == 86400
        loop_tasks = [c.dag.tasks for c in spec.components.values() if "train" in c.dag.tasks]
        assert loop_tasks[0]["train"].retry_policy.max_retry_count == retries
        for name, cfg in k8s.items():  # only the train task is pinned to GPU nodes
            if name != "exec-train":
                assert not cfg.node_selector.labels and not cfg.tolerations
                container = docs[0]["deploymentSpec"]["executors"][name]["container"]
                assert "accelerator" not in container.get("resources", {})
    assert parse_strict(custom_text)[1].root.dag.tasks["for-loop-1"].iterator_policy.parallelism_limit == 7


def test_every_step_runs_in_its_versioned_image_which_build_sh_builds(default_text, custom_text):
    for text, registry in ((default_text, "ghcr.io/mdfnet"), (custom_text, "reg.example:5000/team")):
        images = {name: e["container"]["image"] for name, e in parse_strict(text)[1].deployment_spec["executors"].items()}
        steps = set()
        for image in images.values():
            m = re.fullmatch(rf"{re.escape(registry)}/mdfnet-([a-z-]+):{re.escape(mdfnet.__version__)}", image)
            assert m, f"image {image!r} is not {registry}/mdfnet-<step>:{mdfnet.__version__}"
            steps.add(m.group(1))
        assert steps == set(STEPS)
        assert set(images) == {f"exec-{s}" for s in STEPS}  # each task runs in the image of its own name
        assert all(image.split("/mdfnet-")[1].split(":")[0] == name.removeprefix("exec-")
                   for name, image in images.items())
    for name in ("step", "base"):
        assert (ROOT / "images" / name / "Dockerfile").is_file(), f"images/{name}/Dockerfile missing"


def test_credentials_come_from_a_secret_and_no_secret_value_is_in_the_package(default_text, custom_text):
    for text in (default_text, custom_text):
        for value in FAKE_SECRETS.values():
            assert value not in text
        _, _, _, k8s = parse_strict(text)
        for name, cfg in k8s.items():
            assert [s.secret_name for s in cfg.secret_as_env] == ["mdfnet-credentials"], name
            envs = {k.env_var for k in cfg.secret_as_env[0].key_to_env}
            assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_URI"} <= envs
        docs = list(yaml.safe_load_all(text))
        for ex in docs[0]["deploymentSpec"]["executors"].values():
            assert not ex["container"].get("env"), "credentials must not be set as plain env"


def test_compile_option_parsing():
    from pipelines.compile import parse_node_selector, parse_toleration

    assert parse_node_selector("a/b=c=d") == ("a/b", "c=d")
    assert parse_toleration("nvidia.com/gpu=present:NoSchedule") == ("nvidia.com/gpu", "present", "NoSchedule")
    assert parse_toleration("gpu:NoExecute") == ("gpu", None, "NoExecute")
    for bad in ("gpu=x", "gpu=x:Sometimes", ":NoSchedule"):
        with pytest.raises(typer.BadParameter):
            parse_toleration(bad)
    with pytest.raises(typer.BadParameter, match="key=value"):
        parse_node_selector("novalue")


def _expand_grid_device(spec) -> str:
    return spec.root.dag.tasks["expand-grid"].inputs.parameters["train_device"].runtime_value.constant.string_value


def test_train_task_mounts_a_memory_backed_dev_shm_of_the_compiled_size(default_text, custom_text):
    for text, size in ((default_text, "2Gi"), (custom_text, "512Mi")):
        _, _, _, k8s = parse_strict(text)
        mounts = [(m.volume_name, m.mount_path, m.medium, m.size_limit) for m in k8s["exec-train"].empty_dir_mounts]
        assert mounts == [("dshm", "/dev/shm", "Memory", size)]
        assert not [name for name, cfg in k8s.items() if name != "exec-train" and cfg.empty_dir_mounts]


def test_every_cell_asks_for_the_compiled_device_and_a_runs_override_still_wins(default_text, custom_text):
    from mdfnet.pipeline.grids import GridItem, plan_grid

    grids = load_grids(ROOT / "pipelines" / "grids")
    for text, device in ((default_text, "cuda"), (custom_text, "cuda:1")):
        spec = parse_strict(text)[1]
        assert _expand_grid_device(spec) == device
        # the grid `tiny` sets train.device=cpu in its base: the pipeline's device beats it
        items = [GridItem.of(cell, 0, "tiny").to_dict() for cell in plan_grid(grids, "tiny", device=device)]
        assert items and {i["config"]["train"]["device"] for i in items} == {device}
        assert {GridItem.from_dict(i).train_config().train.device for i in items} == {device}
    debug = plan_grid(grids, "paper-variants", ["train.device=cpu"], device="cuda")
    assert {c.config.train.device for c in debug} == {"cpu"}


def test_local_runs_compile_with_the_local_device():
    from mdfnet.pipeline.grids import plan_grid
    from pipelines.pipeline import build_pipeline
    from pipelines.run_local import LOCAL_TRAIN_DEVICE, local_options

    assert LOCAL_TRAIN_DEVICE == "auto"  # kfp.local: a GPU where this machine has one, the CPU here
    opts = local_options()
    assert opts.train_device == LOCAL_TRAIN_DEVICE and not opts.secret_name
    assert _expand_grid_device(build_pipeline(opts).pipeline_spec) == "auto"
    cells = plan_grid(load_grids(ROOT / "pipelines" / "grids"), "tiny", device=opts.train_device)
    assert {c.config.train.device for c in cells} == {"auto"}


def test_shm_size_and_train_device_are_validated():
    from pipelines.compile import parse_shm_size, parse_train_device
    from pipelines.pipeline import CompileOptions, check_quantity

    for good in ("2Gi", "512Mi", "1e9", "1.5G", "+1Ki", ".5Gi", "1E3", "3000000000"):
        assert check_quantity(good) == good
    for bad in ("", "2GB", "2gi", "-1Gi", "0", "0Gi", "Gi", "2 Gi", "1e"):
        with pytest.raises(ValueError, match=f"positive Kubernetes quantity.*got {bad!r}"):
            check_quantity(bad)
        with pytest.raises(ValueError, match=f"CompileOptions.shm_size: .*got {bad!r}"):
            CompileOptions(shm_size=bad, grids={})
    with pytest.raises(typer.BadParameter, match="got '2GB'"):
        parse_shm_size("2GB")
    for good in ("cuda", "cuda:1", "auto", "cpu"):
        assert parse_train_device(good) == good == CompileOptions(train_device=good, grids={}).train_device
    with pytest.raises(ValueError, match="CompileOptions.train_device: train.device: .*got 'gpu'"):
        CompileOptions(train_device="gpu", grids={})
    with pytest.raises(typer.BadParameter, match="got 'tpu'"):
        parse_train_device("tpu")


def test_compile_cli_rejects_a_bad_shm_size_naming_it(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "pipelines" / "compile.py"), "--output", str(tmp_path / "p.yaml"),
                          "--shm-size", "2GB"], cwd=ROOT, capture_output=True, text=True,
                         env=os.environ | {"COLUMNS": "200"})  # the error box unwrapped
    assert out.returncode == 2 and "'2GB'" in out.stderr and "--shm-size" in out.stderr
    assert not (tmp_path / "p.yaml").exists()


def test_every_input_and_output_of_every_step_and_the_pipeline_has_a_description(default_text):
    """The components' and the pipeline's docstrings (Google style ``Args:`` / ``Returns:``) reach the compiled spec,
    which the KFP UI shows: every input and output of every step's component and every pipeline input carries one.
    (The ParallelFor's own component has only compiler-made ``pipelinechannel--`` inputs.)"""
    spec = next(yaml.safe_load_all(default_text))
    steps = {name: c for name, c in spec["components"].items() if "executorLabel" in c}
    assert set(steps) == {f"comp-{s}" for s in STEPS}
    missing = []
    for name, comp in [*steps.items(), ("root", spec["root"])]:
        for kind in ("inputDefinitions", "outputDefinitions"):
            for section in ("parameters", "artifacts"):
                for key, definition in comp.get(kind, {}).get(section, {}).items():
                    if not str(definition.get("description", "")).strip():
                        missing.append(f"{name}.{kind}.{section}.{key}")
    assert not missing, f"no description (add it to the docstring's Args/Returns): {missing}"
    assert spec["root"]["inputDefinitions"]["parameters"]["seeds"]["description"].startswith("Seeds")
    assert "Output" in spec["components"]["comp-compare"]["outputDefinitions"]["parameters"]


def test_compile_cli_defaults_are_the_compile_options(monkeypatch, tmp_path):
    """``compile.py`` with no options compiles ``CompileOptions()``: its defaults are derived, not restated."""
    from typer.testing import CliRunner

    from pipelines import compile as compile_cli
    from pipelines.pipeline import CompileOptions

    seen = {}
    monkeypatch.setattr(compile_cli, "compile_pipeline",
                        lambda output, kubernetes_manifest=False, **options: seen.update(options) or output)
    monkeypatch.delenv("MDFNET_IMAGE_REGISTRY", raising=False)
    result = CliRunner().invoke(compile_cli.app, ["--output", str(tmp_path / "p.yaml")])
    assert result.exit_code == 0, result.output
    assert CompileOptions(**seen) == CompileOptions()
    assert seen["gpu_node_selector"] == ("nvidia.com/gpu.present", "true")  # the NVIDIA GPU operator's label
    for toleration in (("nvidia.com/gpu", None, "NoSchedule"), ("dedicated", "gpu", "NoExecute"), None):
        assert compile_cli.parse_toleration(compile_cli.format_toleration(toleration)) == toleration
    for selector in (("a/b", "c=d"), None):
        assert compile_cli.parse_node_selector(compile_cli.format_node_selector(selector)) == selector
