"""What the compiled pipeline asks of the Kubeflow Pipelines (KFP) backend that runs it, and the first open-source
backend release that runs each of those features.

The features are found in the compiled package itself (:func:`features_used`), so the check describes what was
really compiled, and :func:`check_backend` refuses a package for a release that cannot run it, naming the feature.
``pipelines/compile.py --min-backend VERSION`` runs that check; :data:`MIN_BACKEND` is the oldest release the
pipeline supports. Below :data:`OPTIONAL_SECRET_ENV` the pipeline is compiled without the ``optional`` flag on its
Secret keys (``pipelines.pipeline._with_secret``), so 2.14.x runs it when the Secret holds every key (the chart's
does).

Sources (checked on the release tags of github.com/kubeflow/pipelines: each change below is an ancestor of the tag
named and of no earlier release tag; the releases' CHANGELOG.md entries name the same pull requests):

- fan-in, ``dsl.Collected`` over a ``ParallelFor``: #11725 "enable dsl.Collected for parameters & artifacts",
  2.14.0 (2025-08-05). Before it, the backend refused the run at creation (kubeflow/pipelines #10035, #10050).
- ``SecretAsEnv.optional``: #12216 "Add optional field for the secret/configmap as env vars", 2.15.0
  (2025-11-21). kfp-kubernetes >= 2.15 writes the field even when false, and older backends parse the executor's
  Kubernetes config strictly (2.14.0 ``backend/src/v2/compiler/argocompiler/container.go``: ``protojson.Unmarshal``
  without ``DiscardUnknown``), so they refuse it: "unknown field "optional" in kfp_kubernetes.SecretAsEnv"
  (kubeflow/pipelines #12495).
- Secret as environment variables: #9178, 2.0.0; the name as a task parameter (``secretNameParameter``, which
  kfp-kubernetes 2.17 always writes): #11621, 2.5.0.
- memory-backed ``emptyDir`` (``medium``, ``sizeLimit``): #10913 (with the #10892 proto), 2.3.0.
- node selector: #9132, 2.0.0. Toleration: #10471, 2.1.0. Task timeout (``activeDeadlineSeconds``): #10481, 2.1.0.
- ``ParallelFor`` parallelism limit: #10798, 2.4.0. Resource requests and the accelerator as strings
  (``resourceCpuRequest``, ``accelerator.resourceCount``; kfp >= 2.4 writes them): #11501, 2.4.0.
- task retries on the Argo backend: #11673 "fix execution-level retry", 2.5.0.
- ``Pipeline`` / ``PipelineVersion`` resources (Kubernetes-native API mode) with a platform spec: #11907 and
  #12016, 2.14.0 (``--kubernetes-manifest``).

KFP's versioning policy (RELEASE.md, "Versioning Policy in KFP", from 2.14): SDK features of a minor release may
need a backend of that minor release or newer. A field-by-field comparison of the compiled package (default
options) with the 2.14.0 and 2.15.0 protos (``api/v2alpha1/pipeline_spec.proto``,
``kubernetes_platform/proto/kubernetes_executor_config.proto``) found ``SecretAsEnv.optional`` the only field
2.14.0 lacks, and none that 2.15.0 lacks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Version = tuple[int, int, int]
VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")
SOURCE = "https://github.com/kubeflow/pipelines/pull/{}"


def parse_version(text: str) -> Version:
    """``2.14``, ``2.14.0`` or ``v2.14.0`` → ``(2, 14, 0)``; ``ValueError`` naming the value otherwise."""
    m = VERSION.fullmatch(str(text).strip())
    if not m:
        raise ValueError(f"expected a KFP backend release such as 2.14.0, got {text!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def format_version(version: Version) -> str:
    return ".".join(map(str, version))


# ------------------------------------------------------------------------------------------ the compiled package
def _dags(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(name, dag) of the root and of every component with a DAG."""
    yield "root", spec.get("root", {}).get("dag", {})
    for name, comp in spec.get("components", {}).items():
        if "dag" in comp:
            yield name, comp["dag"]


def _tasks(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for _, dag in _dags(spec):
        yield from dag.get("tasks", {}).items()


def _executors(platform: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})


def _fan_in(spec, platform) -> list[str]:
    """Loops whose outputs are collected outside them (``dsl.Collected``): the loop's DAG has outputs."""
    comps = spec.get("components", {})
    return sorted(name for name, task in _tasks(spec)
                  if ("parameterIterator" in task or "artifactIterator" in task)
                  and comps.get(task.get("componentRef", {}).get("name", ""), {}).get("dag", {}).get("outputs"))


def _executor_key(key: str) -> Callable[[Mapping, Mapping], list[str]]:
    return lambda spec, platform: sorted(name for name, cfg in _executors(platform).items() if cfg.get(key))


def _optional_secrets(spec, platform) -> list[str]:
    return sorted(name for name, cfg in _executors(platform).items()
                  if any("optional" in mount for mount in cfg.get("secretAsEnv", [])))


def _secret_name_parameter(spec, platform) -> list[str]:
    return sorted(name for name, cfg in _executors(platform).items()
                  if any("secretNameParameter" in mount for mount in cfg.get("secretAsEnv", [])))


def _task_key(*path: str) -> Callable[[Mapping, Mapping], list[str]]:
    def found(spec, platform) -> list[str]:
        hits = []
        for name, task in _tasks(spec):
            node: Any = task
            for key in path:
                node = node.get(key) if isinstance(node, Mapping) else None
            if node:
                hits.append(name)
        return sorted(hits)
    return found


def _string_resources(spec, platform) -> list[str]:
    keys = ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit")
    hits = []
    for name, ex in spec.get("deploymentSpec", {}).get("executors", {}).items():
        res = ex.get("container", {}).get("resources", {})
        if any(k in res for k in keys) or "resourceCount" in res.get("accelerator", {}):
            hits.append(name)
    return sorted(hits)


@dataclass(frozen=True)
class Feature:
    """A backend feature the compiled pipeline may use: what it is, the first release that runs it, the pull
    request(s) that added it, how to find it in a compiled package (pipeline spec, platform spec) → where, and its
    short name (the chart's NOTES list ``<short> <release>``)."""

    name: str
    since: Version
    pulls: tuple[int, ...]
    found: Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]]
    short: str

    @property
    def sources(self) -> str:
        return ", ".join(f"kubeflow/pipelines #{n}" for n in self.pulls)


FAN_IN = Feature("fan-in of the grid loop (dsl.Collected)", (2, 14, 0), (11725,), _fan_in, "fan-in (dsl.Collected)")
OPTIONAL_SECRET_ENV = Feature("optional Secret keys as environment variables (SecretAsEnv.optional)", (2, 15, 0),
                              (12216,), _optional_secrets, "optional Secret keys")
FEATURES: tuple[Feature, ...] = (
    FAN_IN,
    OPTIONAL_SECRET_ENV,
    Feature("Secret keys as environment variables, the Secret named by a task parameter (secretNameParameter)",
            (2, 5, 0), (9178, 11621), _secret_name_parameter, "Secret keys as env"),
    Feature("memory-backed emptyDir at /dev/shm (medium Memory, sizeLimit)", (2, 3, 0), (10913,),
            _executor_key("emptyDirMounts"), "/dev/shm emptyDir (Memory)"),
    Feature("node selector", (2, 0, 0), (9132,), _executor_key("nodeSelector"), "node selector"),
    Feature("toleration", (2, 1, 0), (10471,), _executor_key("tolerations"), "toleration"),
    Feature("task timeout (activeDeadlineSeconds)", (2, 1, 0), (10481,), _executor_key("activeDeadlineSeconds"),
            "task timeout"),
    Feature("ParallelFor parallelism limit", (2, 4, 0), (10798,), _task_key("iteratorPolicy", "parallelismLimit"),
            "loop parallelism"),
    Feature("task retries (retryPolicy)", (2, 5, 0), (11673,), _task_key("retryPolicy", "maxRetryCount"),
            "task retries"),
    Feature("resource requests and GPU count as strings (resourceCpuRequest, accelerator.resourceCount)",
            (2, 4, 0), (11501,), _string_resources, "GPU and resource requests"),
)
"""Every backend feature the pipeline uses, in the README's order."""
KUBERNETES_NATIVE = Feature("Pipeline and PipelineVersion resources with a platform spec (Kubernetes-native API "
                            "mode)", (2, 14, 0), (11907, 12016), lambda spec, platform: [],
                            "Pipeline/PipelineVersion resources")
"""``--kubernetes-manifest`` output: the backend must run in Kubernetes-native API mode (not found in a package)."""
MIN_BACKEND: str = format_version(FAN_IN.since)
"""The oldest KFP backend release the pipeline supports (the fan-in's), and ``--min-backend``'s default."""


def supports(min_backend: str, feature: Feature) -> bool:
    """Whether every release from ``min_backend`` on runs ``feature``."""
    return parse_version(min_backend) >= feature.since


def split_package(docs: list[Mapping[str, Any]]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(pipeline spec, platform spec) of a compiled package: its YAML documents, or the ``Pipeline`` +
    ``PipelineVersion`` manifests (the spec and platform spec the ``PipelineVersion`` embeds)."""
    docs = [d for d in docs if d]
    version = next((d for d in docs if d.get("kind") == "PipelineVersion"), None)
    if version is not None:
        return version["spec"]["pipelineSpec"], version["spec"].get("platformSpec") or {}
    spec = next((d for d in docs if "pipelineInfo" in d), None)
    if spec is None:
        raise ValueError("not a compiled KFP package: no document has pipelineInfo, and none is a PipelineVersion")
    return spec, next((d for d in docs if "platforms" in d), {})


def features_used(docs: list[Mapping[str, Any]]) -> dict[Feature, list[str]]:
    """Each :data:`FEATURES` entry the package uses → where (task or executor names)."""
    spec, platform = split_package(docs)
    return {f: where for f in FEATURES if (where := f.found(spec, platform))}


class BackendError(ValueError):
    """The package uses features the given KFP backend release cannot run; the message names each one."""


def check_backend(docs: list[Mapping[str, Any]], min_backend: str, kubernetes_native: bool = False) -> None:
    """Raise :class:`BackendError` if a release ``min_backend`` cannot run the package ``docs`` (or, with
    ``kubernetes_native``, register it as ``Pipeline``/``PipelineVersion`` resources), naming every feature it
    lacks, the release that first runs it and where the package uses it."""
    release = parse_version(min_backend)
    used = features_used(docs)
    if kubernetes_native:
        used[KUBERNETES_NATIVE] = ["the Pipeline and PipelineVersion manifests"]
    missing = [f"{f.name} needs {format_version(f.since)} ({f.sources}; used by {', '.join(where)})"
               for f, where in used.items() if f.since > release]
    if missing:
        oldest = format_version(max(f.since for f in used))
        raise BackendError(f"KFP backend {format_version(release)} cannot run this pipeline: " + "; ".join(missing)
                           + f". The oldest release that runs it is {oldest}.")


def requirements_table() -> str:
    """The README's table: every feature, the first release that runs it, its sources."""
    rows = [f"| {f.name} | {format_version(f.since)} | {', '.join(f'[#{n}]({SOURCE.format(n)})' for n in f.pulls)} |"
            for f in (*FEATURES, KUBERNETES_NATIVE)]
    return "\n".join(["| feature the pipeline uses | first KFP backend release | kubeflow/pipelines |",
                      "|---|---|---|", *rows])
