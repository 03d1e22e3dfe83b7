"""From an empty cluster to the first run, as far as it runs here: ``compile.py --min-backend`` refusing a release
that cannot run the package, ``compile.py --kubernetes-manifest`` (golden file; a ``Pipeline`` and a
``PipelineVersion`` embedding the same spec as the package, parsed strictly), the compare task's MLflow links and
KFP metrics in the compiled spec, and the README's "First run on a cluster" commands (its compile lines run, its
run arguments are the pipeline's parameters). The chart side of the guide: ``tests/test_chart.py`` and
``charts/check.py``."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from test_pipeline_compile import FAKE_SECRETS, compile_to, parse_strict

import mdfnet
from pipelines import backend

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "charts" / "mdfnet" / "files" / "mdfnet-pipeline.yaml"
PACKAGE = ROOT / "pipelines" / "mdfnet_pipeline.yaml"


def load_chart_module(name: str):
    """``charts/<name>.py`` (the chart's check helpers; charts/ is no package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "charts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_guide():
    return load_chart_module("guide")


def check_manifests(text: str, package_text: str) -> dict:
    """The manifests of ``compile.py --kubernetes-manifest`` against the package compiled with the same options;
    returns the PipelineVersion."""
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert [(d["apiVersion"], d["kind"]) for d in docs] == [("pipelines.kubeflow.org/v2beta1", "Pipeline"),
                                                           ("pipelines.kubeflow.org/v2beta1", "PipelineVersion")]
    pipeline, version = docs
    for doc in docs:
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
        assert set(doc["metadata"]) == {"name"}  # no namespace: kubectl -n or the chart sets it
        assert not load_chart_module("kfp_manifest").validate_kfp(doc), doc["kind"]  # spec: KFP's CRD fields
    assert pipeline["metadata"]["name"] == version["spec"]["pipelineName"] == "mdfnet"
    package = [d for d in yaml.safe_load_all(package_text) if d]
    digest = re.fullmatch(rf"mdfnet-{mdfnet.__version__.replace('.', '-')}-([0-9a-f]{{8}})",
                          version["metadata"]["name"])
    assert digest, version["metadata"]["name"]
    from pipelines.compile import version_name

    assert version["metadata"]["name"] == version_name(package)
    assert version["spec"]["displayName"] == f"mdfnet {mdfnet.__version__} ({digest.group(1)})"
    assert version["spec"]["pipelineSpec"] == package[0] and version["spec"]["platformSpec"] == package[1]
    # the embedded spec parses as strictly as the package (unknown fields rejected)
    parse_strict(yaml.safe_dump_all([version["spec"]["pipelineSpec"], version["spec"]["platformSpec"]]))
    return version


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, str]:
    """The committed package (tests/test_pipeline_compile.py checks it equals a fresh compile) and fresh
    manifests."""
    out = tmp_path_factory.mktemp("c")
    return {"package": PACKAGE.read_text(), "manifests": compile_to(out / "m.yaml", "--kubernetes-manifest")}


def test_committed_manifests_equal_a_fresh_compile_and_embed_the_package(compiled):
    assert MANIFESTS.is_file(), "run `python pipelines/compile.py --kubernetes-manifest` and commit its output"
    assert compiled["manifests"] == MANIFESTS.read_text(), (
        "charts/mdfnet/files/mdfnet-pipeline.yaml is stale: python pipelines/compile.py --kubernetes-manifest")
    check_manifests(compiled["manifests"], compiled["package"])
    for value in FAKE_SECRETS.values():
        assert value not in compiled["manifests"]


def test_compare_links_mlflow_and_reports_metrics_in_the_compiled_spec(compiled):
    spec = next(yaml.safe_load_all(compiled["package"]))
    comp = spec["components"]["comp-compare"]
    assert comp["outputDefinitions"]["artifacts"]["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    assert {"table", "page", "metrics"} == set(comp["outputDefinitions"]["artifacts"])
    assert comp["inputDefinitions"]["parameters"]["mlflow_ui"]["parameterType"] == "STRING"
    task = spec["root"]["dag"]["tasks"]["compare"]
    assert task["inputs"]["parameters"]["mlflow_ui"] == {"componentInputParameter": "mlflow_ui"}
    assert spec["root"]["inputDefinitions"]["parameters"]["mlflow_ui"]["defaultValue"] == ""


def run_compile(*args: str, output: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MDFNET_IMAGE_REGISTRY"} | {"COLUMNS": "200"}
    return subprocess.run([sys.executable, str(ROOT / "pipelines" / "compile.py"), *args, "--output", str(output)],
                          cwd=ROOT, env=env, capture_output=True, text=True)


def test_min_backend_refuses_a_release_that_cannot_run_the_package(tmp_path):
    out = run_compile("--min-backend", "2.5.0", output=tmp_path / "p.yaml")
    assert out.returncode == 1
    assert "KFP backend 2.5.0 cannot run this pipeline: fan-in of the grid loop (dsl.Collected) needs 2.14.0 " \
           "(kubeflow/pipelines #11725; used by for-loop-1)" in out.stderr
    assert not (tmp_path / "p.yaml").exists()
    from typer.testing import CliRunner

    from pipelines import compile as compile_cli

    bad = CliRunner().invoke(compile_cli.app, ["--min-backend", "latest", "--output", str(tmp_path / "p.yaml")])
    assert bad.exit_code == 2 and "got 'latest'" in bad.output
    assert not (tmp_path / "p.yaml").exists()


def test_guide_compile_lines_run_and_use_the_guides_registry_and_release(tmp_path):
    guide = load_guide()
    lines = guide.commands("python pipelines/compile.py")
    assert len(lines) == 2 and ["--kubernetes-manifest"] == [a for a in lines[1] if a not in lines[0]]
    registry = lines[0][lines[0].index("--registry") + 1]
    release = lines[0][lines[0].index("--min-backend") + 1]
    assert registry == "registry.example.com/mdfnet" and backend.parse_version(release) >= (2, 15, 0)
    texts = []
    for n, args in enumerate(lines):
        out = run_compile(*args[2:], output=tmp_path / f"{n}.yaml")
        assert out.returncode == 0, out.stderr
        texts.append((tmp_path / f"{n}.yaml").read_text())
    package, manifests = texts
    docs, spec, _, k8s = parse_strict(package)
    images = {e["container"]["image"] for e in docs[0]["deploymentSpec"]["executors"].values()}
    assert images and all(i.startswith(f"{registry}/mdfnet-") and i.endswith(f":{mdfnet.__version__}")
                          for i in images)
    assert all(m.optional for cfg in k8s.values() for m in cfg.secret_as_env)  # >= 2.15.0: keys optional
    version = check_manifests(manifests, package)
    assert version["metadata"]["name"] != yaml.safe_load_all(MANIFESTS.read_text()).__next__()["metadata"]["name"]
    backend.check_backend(docs, release, kubernetes_native=True)


def test_guide_run_arguments_are_the_pipelines_parameters():
    import kfp

    from mdfnet.pipeline.grids import load_grids, plan_grid
    from pipelines.pipeline import build_pipeline

    block = load_guide().blocks("python")
    assert len(block) == 1
    call = next(n for n in ast.walk(ast.parse(block[0])) if isinstance(n, ast.Call)
                and getattr(n.func, "attr", "") == "create_run_from_pipeline_package")
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    assert set(kwargs) <= set(inspect.signature(kfp.Client.create_run_from_pipeline_package).parameters)
    assert ast.literal_eval(call.args[0]) == "pipelines/mdfnet_pipeline.yaml"
    args = kwargs["arguments"]
    inputs = json_format.MessageToDict(build_pipeline().pipeline_spec.root.input_definitions)["parameters"]
    assert set(args) <= set(inputs) and "source_uri" in args
    assert args["source_uri"].startswith("s3://") and args["mlflow_ui"] == "http://localhost:5000"
    cells = plan_grid(load_grids(ROOT / "pipelines" / "grids"), args["grid"], args["config_overrides"])
    assert cells and {c.config.train.epochs for c in cells} == {12}
    assert kwargs["service_account"] == "mdfnet-pipeline"
