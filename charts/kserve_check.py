"""KServe's ``InferenceService`` as the chart renders it (``serving.kserve.enabled``), checked by
``charts/check.py``: kubernetes-validate has no schema for KServe's kinds, so the object is validated against the
``openAPIV3Schema`` of KServe's CRD, offline and strictly (a field the CRD does not define is an error, where
the API server would silently prune it), for the oldest and the newest KServe release we support
(:data:`SCHEMAS`); its ``metadata`` against Kubernetes' ObjectMeta. The predictor must run the same pod as the
Deployment path would (image, command, args, env, probes, resources, GPU scheduling, security), carry the serving
labels (NetworkPolicy, PodDisruptionBudget) and leave no serving Deployment or Service beside it.

The schemas are extracted from ``config/crd/full/serving.kserve.io_inferenceservices.yaml`` of kserve/kserve at
each release tag and stored gzipped in ``charts/schemas/`` (the ``source`` field says which). To add a release::

    git -C kserve show v0.20.0:config/crd/full/serving.kserve.io_inferenceservices.yaml > isvc.yaml
    python charts/kserve_check.py isvc.yaml v0.20.0 <commit>
"""

from __future__ import annotations

import copy
import gzip
import json
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

KSERVE_API = "serving.kserve.io/v1beta1"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SCHEMAS = {"v0.14.1": SCHEMA_DIR / "kserve-v0.14.1-inferenceservice.json.gz",
           "v0.20.0": SCHEMA_DIR / "kserve-v0.20.0-inferenceservice.json.gz"}
"""KServe 0.14.1 (shipped with Kubeflow 1.10) and 0.20.0 (the newest release when this was written)."""
CONTAINER = "kserve-container"
"""The name KServe's webhook gives a custom predictor's first container (it renames any other)."""


def _strict(schema: dict) -> dict:
    """``schema`` with ``additionalProperties: false`` on every object that lists its properties and does not
    preserve unknown fields (kubectl's --validate=strict)."""
    out = copy.deepcopy(schema)
    stack = [out]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            stack.extend(node if isinstance(node, list) else [])
            continue
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        stack.extend(v for v in node.values() if isinstance(v, dict | list))
    return out


@cache
def _validator(version: str):
    import jsonschema

    stored = json.loads(gzip.decompress(SCHEMAS[version].read_bytes()))
    return jsonschema.Draft7Validator(_strict(stored["openAPIV3Schema"]))


def validate_kserve(obj: dict, kube_version: str) -> list[str]:
    """Errors of an InferenceService against every stored KServe schema, and of its metadata against
    Kubernetes' ObjectMeta (checked as a ConfigMap's)."""
    import kubernetes_validate

    errors = []
    for version in SCHEMAS:
        for e in sorted(_validator(version).iter_errors(obj), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in e.absolute_path)
            errors.append(f"KServe {version}: {path}: {e.message}")
    try:
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]},
                                     kube_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        errors.append(f"{'.'.join(str(p) for p in e.path)}: {e.message}")
    return errors


def serving_pod(find: dict, release: str) -> tuple[dict, dict]:
    """(pod spec, model container) of the served model: the Deployment's, else the InferenceService's predictor."""
    name = f"{release}-serving"
    if ("InferenceService", name) in find:
        pod = find[("InferenceService", name)]["spec"]["predictor"]
    else:
        pod = find[("Deployment", name)]["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def check_inference_service(name: str, v: dict, find: dict, notes: str, release: str, bad) -> None:
    """With serving.kserve.enabled: one InferenceService in the chosen mode, scaled as set, its pods labelled as
    the chart's serving pods, its container named as KServe names it, no serving Deployment or Service, and NOTES
    port-forwarding KServe's Service."""
    isvcs = {n: o for (kind, n), o in find.items() if kind == "InferenceService"}
    serving = f"{release}-serving"
    if not (v["serving"]["enabled"] and v["serving"]["kserve"]["enabled"]):
        bad.check(not isvcs, f"{name}: serving.kserve.enabled is off but the chart renders {sorted(isvcs)}")
        return
    if not bad.check(list(isvcs) == [serving], f"{name}: InferenceService(s) {sorted(isvcs)}, expected [{serving}]"):
        return
    isvc, k = isvcs[serving], v["serving"]["kserve"]
    predictor = isvc["spec"]["predictor"]
    mode = isvc["metadata"]["annotations"].get("serving.kserve.io/deploymentMode")
    bad.check(mode == k["deploymentMode"], f"{name}: deploymentMode {mode!r} != {k['deploymentMode']!r}")
    replicas = (predictor.get("minReplicas"), predictor.get("maxReplicas"))
    want = (v["serving"]["replicas"], max(v["serving"]["replicas"], k["maxReplicas"]))
    bad.check(replicas == want, f"{name}: predictor min/max replicas {replicas} != {want}")
    selector = {key: isvc["metadata"]["labels"][key] for key in
                ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component")}
    bad.check(selector.items() <= predictor.get("labels", {}).items(),
              f"{name}: the predictor's pods lack the serving labels {selector} (NetworkPolicy, PDB)")
    bad.check([c["name"] for c in predictor["containers"]] == [CONTAINER],
              f"{name}: predictor containers {[c['name'] for c in predictor['containers']]} != [{CONTAINER}]")
    leftovers = [key for key in (("Deployment", serving), ("Service", serving)) if key in find]
    bad.check(not leftovers, f"{name}: {leftovers} rendered beside the InferenceService")
    forward = f"port-forward svc/{serving}-predictor 8081:80 &"  # KServe's Service: <name>-predictor, port 80
    bad.check(forward in notes, f"{name}: NOTES.txt lacks {forward!r}")


def check_same_pod(name: str, values: dict, objects: list[tuple[str, dict]], render: Callable, release: str,
                   bad) -> None:
    """The predictor's pod equals the Deployment's for the same values with serving.kserve.enabled off (but
    for the container's name)."""
    off = copy.deepcopy(values)
    off.setdefault("serving", {}).setdefault("kserve", {})["enabled"] = False
    deployment_objects, _ = render(off)
    find = {(o["kind"], o["metadata"]["name"]): o for _, o in objects}
    pod, _ = serving_pod(find, release)
    dep_pod, _ = serving_pod({(o["kind"], o["metadata"]["name"]): o for _, o in deployment_objects}, release)
    shared = {key: val for key, val in pod.items() if key in dep_pod}
    shared["containers"] = [{**c, "name": dep_pod["containers"][0]["name"]} for c in pod["containers"]]
    bad.check(shared == dep_pod and set(pod) - set(dep_pod) == {"minReplicas", "maxReplicas", "labels"},
              f"{name}: the InferenceService's predictor pod differs from the Deployment's "
              f"(keys only in one: {sorted(set(pod) ^ set(dep_pod))})")


def scanned(objects: list[tuple[str, dict]], skip_prefix: str) -> list[tuple[str, dict]]:
    """``objects`` for checkov, which has no checks for KServe's kinds: each InferenceService also as the Pod its
    predictor runs (``<name>-predictor``), which carries the InferenceService's checkov skip annotations (so the
    findings are those of the pod, and each annotation must still match one)."""
    out = []
    for template, obj in objects:
        if obj["kind"] != "InferenceService":
            out.append((template, obj))
            continue
        meta = copy.deepcopy(obj["metadata"])
        skips = {key: val for key, val in meta.get("annotations", {}).items() if key.startswith(skip_prefix)}
        meta["annotations"] = {key: val for key, val in meta.get("annotations", {}).items() if key not in skips}
        pod_fields = {key: val for key, val in obj["spec"]["predictor"].items()
                      if key not in ("minReplicas", "maxReplicas", "labels")}
        pod = {"apiVersion": "v1", "kind": "Pod", "spec": copy.deepcopy(pod_fields),
               "metadata": {"name": f"{meta['name']}-predictor", "namespace": meta.get("namespace"),
                            "labels": obj["spec"]["predictor"].get("labels", {}), "annotations": skips}}
        out += [(template, {**obj, "metadata": meta}), (template, pod)]
    return out


def store(crd_path: Path, version: str, commit: str) -> Path:
    """Write the v1beta1 ``openAPIV3Schema`` of an InferenceService CRD file as ``SCHEMA_DIR/…json.gz``."""
    import yaml

    crd = yaml.safe_load(crd_path.read_text())
    served = next(ver for ver in crd["spec"]["versions"] if ver["name"] == "v1beta1")
    stored = {"source": f"kserve/kserve {version} ({commit}) config/crd/full/serving.kserve.io_inferenceservices.yaml",
              "openAPIV3Schema": served["schema"]["openAPIV3Schema"]}
    out = SCHEMA_DIR / f"kserve-{version}-inferenceservice.json.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(gzip.compress(json.dumps(stored, sort_keys=True, separators=(",", ":")).encode(), mtime=0))
    return out


if __name__ == "__main__":
    print(store(Path(sys.argv[1]), sys.argv[2], sys.argv[3]))
