"""What the compiled pipeline asks of the KFP backend (:mod:`pipelines.backend`): the features found in the committed
package (and in its Kubernetes manifests), the release each needs, the refusal naming them, the README's table."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipelines import backend

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pipelines" / "mdfnet_pipeline.yaml"
MANIFESTS = ROOT / "charts" / "mdfnet" / "files" / "mdfnet-pipeline.yaml"
STEP_EXECUTORS = ["exec-compare", "exec-evaluate", "exec-expand-grid", "exec-join", "exec-preprocess",
                  "exec-register", "exec-train"]


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def by_name(used: dict) -> dict[str, list[str]]:
    return {f.name: where for f, where in used.items()}


@pytest.mark.parametrize(("text", "version"), [("2.14", (2, 14, 0)), ("2.14.0", (2, 14, 0)), ("v2.15.3", (2, 15, 3)),
                                               (" 2.17.0 ", (2, 17, 0))])
def test_versions_parse(text, version):
    assert backend.parse_version(text) == version


@pytest.mark.parametrize("bad", ["latest", "2", "2.x", "2.14.0-rc.1", ""])
def test_a_bad_version_is_refused_naming_it(bad):
    with pytest.raises(ValueError, match=f"KFP backend release such as 2.14.0, got {bad!r}"):
        backend.parse_version(bad)


def test_the_committed_package_uses_these_features_where_expected():
    used = by_name(backend.features_used(docs(PACKAGE)))
    assert used == {
        "fan-in of the grid loop (dsl.Collected)": ["for-loop-1"],
        "Secret keys as environment variables, the Secret named by a task parameter (secretNameParameter)":
            STEP_EXECUTORS,
        "memory-backed emptyDir at /dev/shm (medium Memory, sizeLimit)": ["exec-train"],
        "node selector": ["exec-train"],
        "toleration": ["exec-train"],
        "task timeout (activeDeadlineSeconds)": ["exec-train"],
        "ParallelFor parallelism limit": ["for-loop-1"],
        "task retries (retryPolicy)": ["train"],
        "resource requests and GPU count as strings (resourceCpuRequest, accelerator.resourceCount)": ["exec-train"],
    }  # the default (--min-backend 2.14.0) leaves SecretAsEnv.optional out
    assert backend.MIN_BACKEND == "2.14.0"
    # the manifests embed the same package: the same features
    assert by_name(backend.features_used(docs(MANIFESTS))) == used


def test_check_refuses_a_release_naming_each_feature_it_lacks():
    package = docs(PACKAGE)
    for ok in ("2.14.0", "2.14", "2.15.0", "3.0.0"):
        backend.check_backend(package, ok)
    with pytest.raises(backend.BackendError) as err:
        backend.check_backend(package, "2.5.0")
    assert str(err.value) == (
        "KFP backend 2.5.0 cannot run this pipeline: fan-in of the grid loop (dsl.Collected) needs 2.14.0 "
        "(kubeflow/pipelines #11725; used by for-loop-1). The oldest release that runs it is 2.14.0.")
    with pytest.raises(backend.BackendError) as err:
        backend.check_backend(package, "2.4.1")
    message = str(err.value)
    assert "fan-in of the grid loop (dsl.Collected) needs 2.14.0" in message
    assert "(secretNameParameter) needs 2.5.0 (kubeflow/pipelines #9178, kubeflow/pipelines #11621" in message
    assert "task retries (retryPolicy) needs 2.5.0 (kubeflow/pipelines #11673; used by train)" in message
    assert "ParallelFor" not in message and "emptyDir" not in message  # 2.4.1 runs those
    with pytest.raises(backend.BackendError, match="Pipeline and PipelineVersion resources .* needs 2.14.0 "
                                                   r"\(kubeflow/pipelines #11907, kubeflow/pipelines #12016"):
        backend.check_backend(package, "2.5.0", kubernetes_native=True)
    with pytest.raises(ValueError, match="got 'newest'"):
        backend.check_backend(package, "newest")


def test_optional_secret_keys_need_2_15():
    package = copy.deepcopy(docs(PACKAGE))
    package[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-join"]["secretAsEnv"][0][
        "optional"] = False  # kfp-kubernetes writes the field even when false: its presence is what 2.14 refuses
    with pytest.raises(backend.BackendError, match=r"optional Secret keys as environment variables "
                                                   r"\(SecretAsEnv.optional\) needs 2.15.0 \(kubeflow/pipelines "
                                                   r"#12216; used by exec-join\)"):
        backend.check_backend(package, "2.14.0")
    backend.check_backend(package, "2.15.0")


def test_a_loop_without_collected_outputs_is_no_fan_in():
    package = copy.deepcopy(docs(PACKAGE))
    package[0]["components"]["comp-for-loop-1"]["dag"].pop("outputs")
    assert "fan-in of the grid loop (dsl.Collected)" not in by_name(backend.features_used(package))
    with pytest.raises(ValueError, match="not a compiled KFP package"):
        backend.features_used([{"kind": "Pipeline"}])


def test_the_readme_table_is_the_feature_list():
    assert backend.requirements_table() in (ROOT / "README.md").read_text()
    assert len(backend.requirements_table().splitlines()) == 2 + len(backend.FEATURES) + 1
