"""``make chart-check``: the Helm chart (charts/mdfnet) linted, rendered, validated and scanned, with no cluster
and no helm binary. Runs in ``.venv-chart`` (helm-python-sdk, kubernetes-validate, checkov, pinned in
charts/requirements.txt).

For each scenario (the default values, values-production.yaml, SeaweedFS + GPU serving + pull secrets + the
pipeline's Kubernetes manifests so that every template renders, the values of the README's "First run on a
cluster" ``helm install`` line, read by charts/guide.py, and serving as a KServe InferenceService):

1. ``helm lint --strict`` (Helm 4's SDK, Kubernetes ``KUBE_VERSION``) and values.schema.json;
2. render, and validate every manifest against the Kubernetes ``KUBE_VERSION`` schemas (strict: unknown fields
   are errors), KFP's ``Pipeline``/``PipelineVersion`` against the ``spec`` fields of KFP's CRDs, KServe's
   ``InferenceService`` against KServe's CRD schemas (charts/kserve_check.py, strict);
3. assert what the pipeline relies on: the credentials Secret has exactly the keys the compiled pipeline mounts
   (read from ``pipelines/mdfnet_pipeline.yaml``), the serving Deployment serves ``models:/mdfnet@champion`` by
   default, GPU scheduling equals the compiled train task's, every pod and container has the security settings,
   every object has a namespace and the standard labels, NOTES prints the compile/upload/runs-page commands (the
   compile one for ``kfp.backendVersion``), the ``PipelineVersion`` embeds the committed package's spec, the
   served model's torch threads follow the CPU limit, and the InferenceService's predictor runs the Deployment's
   pod.

Value combinations the chart must refuse (``fail`` in templates/_helpers.tpl, or the schema) are rendered and
must fail with their message. Then checkov: the rendered manifests (framework kubernetes) and the Dockerfiles
(images/*/Dockerfile, charts/images/*/Dockerfile; framework dockerfile). Every finding must be explained: a
``checkov.io/skipN`` annotation on the resource, an inline ``# checkov:skip=`` in a Dockerfile, or an entry of
charts/checkov-skips.yaml — each with a reason. The manifests are also scanned with the annotations stripped, so
an annotation that no longer matches a finding fails too (as does a stale skip-list entry).

Exit status 0 only if everything holds; a summary line per step either way.
"""

from __future__ import annotations

import copy
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import guide
import helm_python as helm
import kubernetes_validate
import yaml
from kfp_manifest import KFP_API, check_pipeline_manifest, validate_kfp
from kserve_check import (
    KSERVE_API,
    SCHEMAS,
    check_inference_service,
    check_same_pod,
    scanned,
    serving_pod,
    validate_kserve,
)

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "mdfnet"
PIPELINE = ROOT / "pipelines" / "mdfnet_pipeline.yaml"
SKIP_LIST = ROOT / "charts" / "checkov-skips.yaml"
KUBE_VERSION = "1.30.0"
RELEASE, NAMESPACE = "mdfnet", "kubeflow"
SKIP_PREFIX = "checkov.io/skip"

SCENARIOS: dict[str, dict] = {
    "default": {},
    "production": yaml.safe_load((CHART / "values-production.yaml").read_text()),
    # renders the templates the other two leave out (SeaweedFS, GPU serving, PDB, pull secrets, extra ingress);
    # placeholder credentials: the chart refuses SeaweedFS without an access key
    "seaweedfs-gpu": {
        "credentials": {"awsAccessKeyId": "ci-placeholder-key", "awsSecretAccessKey": "ci-placeholder-secret"},
        "seaweedfs": {"enabled": True},
        "serving": {"gpu": True, "replicas": 2},
        "image": {"pullSecrets": ["regcred"]},
        "networkPolicy": {"extraIngressFrom": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "ingress-nginx"}}}]},
        "kfp": {"backendVersion": "2.15.0", "pipelineManifest": {"enabled": True}},
    },
    "first-run": guide.helm_values(guide.commands("helm install")[0]),
    # the champion as a KServe InferenceService (GPU, 2 workers on 3.5 CPUs: 1 torch thread each, HPA to 3)
    "kserve": {"serving": {"kserve": {"enabled": True, "maxReplicas": 3}, "gpu": True, "replicas": 2, "workers": 2,
                           "resources": {"limits": {"cpu": "3500m", "memory": "8Gi"}}}},
}

# values the chart must refuse, and a fragment of the message it must give
MUST_FAIL: list[tuple[dict, str]] = [
    ({"seaweedfs": {"enabled": True}}, "seaweedfs.enabled needs credentials.awsAccessKeyId"),
    ({"mlflow": {"enabled": False}}, "set credentials.mlflowTrackingUri"),
    ({"mlflow": {"persistence": {"enabled": False}}}, "SQLite but mlflow.persistence.enabled=false"),
    ({"mlflow": {"replicas": 2}}, "needs a database backend"),
    ({"mlflow": {"persistence": {"enabled": False}, "backendStore": {"existingSecret": "db"}}},
     "mlflow.artifactsDestination is required"),
    ({"serving": {"replicas": "two"}}, "/serving/replicas"),
    ({"gpu": {"nodeSelector": {"a": "b"}}}, "/gpu/nodeSelector"),
    ({"securityContext": {"allowPrivilegeEscalation": True}}, "/securityContext/allowPrivilegeEscalation"),
    ({"mlfow": {"enabled": False}}, "additional properties 'mlfow'"),
    ({"serving": {"kserve": {"enabled": True, "deploymentMode": "Serverless"}}}, "/serving/kserve/deploymentMode"),
    ({"kfp": {"backendVersion": "2.5.0"}}, "needs a KFP backend >= 2.14.0"),
    ({"kfp": {"pipelineManifest": {"enabled": True}}, "image": {"registry": "registry.example.com/mdfnet"}},
     "the manifests run no step image of image.registry=registry.example.com/mdfnet"),
    ({"kfp": {"pipelineManifest": {"enabled": True, "content": "image: ghcr.io/mdfnet/mdfnet-x\n---\nkind: Pod"}}},
     "expected the Pipeline and PipelineVersion"),
]

CONTAINER_SECURITY = {
    "runAsNonRoot": True, "runAsUser": 1000, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
    "privileged": False, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
}
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
          "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart")


class Failures(list):
    def check(self, ok: bool, message: str) -> bool:
        if not ok:
            self.append(message)
        return ok


def pipeline_mounts() -> tuple[set[str], set[str], dict, list]:
    """(secret keys, secret names) every executor of the compiled pipeline mounts, and the train task's node
    selector labels and tolerations."""
    docs = [d for d in yaml.safe_load_all(PIPELINE.read_text()) if d]
    executors = next(d for d in docs if "platforms" in d)["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    keys, names = set(), set()
    for spec in executors.values():
        for mount in spec.get("secretAsEnv", []):
            names.add(mount["secretName"])
            keys.update(k["secretKey"] for k in mount["keyToEnv"])
    train = executors["exec-train"]
    return keys, names, train.get("nodeSelector", {}).get("labels", {}), train.get("tolerations", [])


def merged_values(values: dict) -> dict:
    base = yaml.safe_load((CHART / "values.yaml").read_text())

    def merge(a: dict, b: dict) -> dict:
        out = copy.deepcopy(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    return merge(base, values)


def render(chart, values: dict) -> tuple[list[tuple[str, dict]], str]:
    """(template file, object) for every rendered manifest, and NOTES.txt."""
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects, notes = [], ""
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects += [(Path(path).name, doc) for doc in yaml.safe_load_all(text) if doc]
    return objects, notes


def pod_specs(obj: dict) -> list[dict]:
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [obj["spec"]["template"]["spec"]]
    if obj["kind"] == "InferenceService":
        return [obj["spec"]["predictor"]]
    return [obj["spec"]] if obj["kind"] == "Pod" else []


def check_scenario(name: str, values: dict, objects: list[tuple[str, dict]], notes: str, bad: Failures) -> None:
    """The pipeline contract, labels, security settings, serving, MLflow and NOTES of one rendered values set."""
    v = merged_values(values)
    keys, secret_names, train_selector, train_tolerations = pipeline_mounts()
    by_kind = Counter(o["kind"] for _, o in objects)
    find = {(o["kind"], o["metadata"]["name"]): o for _, o in objects}
    secret_name = v["credentials"]["existingSecret"] or v["credentials"]["secretName"]
    bad.check(secret_names == {v["credentials"]["secretName"]},
              f"{name}: the compiled pipeline mounts Secret(s) {sorted(secret_names)}, the chart's is "
              f"{v['credentials']['secretName']!r}")
    _check_secret(name, v, find, keys, secret_name, bad)
    _check_objects(name, find, bad)
    if v["serving"]["enabled"]:
        _check_serving(name, v, find, secret_name, train_selector, train_tolerations, bad)
    _check_mlflow_and_notes(name, v, find, notes, secret_name, bad)
    check_pipeline_manifest(name, v, find, PIPELINE, bad)
    check_inference_service(name, v, find, notes, RELEASE, bad)
    print(f"  {name}: {len(objects)} manifests ({', '.join(f'{n} {k}' for k, n in sorted(by_kind.items()))})")


def _check_secret(name: str, v: dict, find: dict, keys: set, secret_name: str, bad: Failures) -> None:
    secret = find.get(("Secret", v["credentials"]["secretName"]))
    if v["credentials"]["existingSecret"]:
        bad.check(secret is None, f"{name}: credentials.existingSecret is set but the chart renders a Secret")
    elif bad.check(secret is not None, f"{name}: no Secret {secret_name!r} rendered"):
        got = set(secret.get("stringData", {})) | set(secret.get("data", {}))
        bad.check(got == keys, f"{name}: Secret {secret_name} keys {sorted(got)} != the pipeline's {sorted(keys)}")


def _check_objects(name: str, find: dict, bad: Failures) -> None:
    """Namespace, labels, checkov skip annotations and security/resources of every pod and container."""
    for (kind, obj_name), obj in find.items():
        meta = obj["metadata"]
        bad.check(meta.get("namespace") == NAMESPACE, f"{name}: {kind}/{obj_name} has no namespace {NAMESPACE}")
        missing = [label for label in LABELS if label not in meta.get("labels", {})]
        bad.check(not missing, f"{name}: {kind}/{obj_name} lacks labels {missing}")
        for reason in (a for k, a in (meta.get("annotations") or {}).items() if k.startswith(SKIP_PREFIX)):
            check_id, sep, text = reason.partition("=")
            # checkov splits the annotation on '=' (a second one crashes its parser)
            bad.check(bool(sep and text.strip()) and "=" not in text,
                      f"{name}: {kind}/{obj_name} skip annotation {reason!r}: expected CHECK_ID=reason")
        for spec in pod_specs(obj):
            bad.check(spec.get("automountServiceAccountToken") is False,
                      f"{name}: {kind}/{obj_name} mounts a service account token")
            psc = spec.get("securityContext", {})
            bad.check(all(psc.get(k) == want for k, want in POD_SECURITY.items()),
                      f"{name}: {kind}/{obj_name} pod securityContext {psc} lacks {POD_SECURITY}")
            for c in spec.get("initContainers", []) + spec["containers"]:
                sc = c.get("securityContext", {})
                wrong = {k: sc.get(k) for k, want in CONTAINER_SECURITY.items() if sc.get(k) != want}
                bad.check(not wrong, f"{name}: {kind}/{obj_name} container {c['name']} securityContext {wrong}")
                bad.check(bool(c.get("resources", {}).get("limits")) and bool(c.get("resources", {}).get("requests")),
                          f"{name}: {kind}/{obj_name} container {c['name']} without resource requests/limits")


def _check_serving(name: str, v: dict, find: dict, secret_name: str, train_selector: dict, train_tolerations: list,
                   bad: Failures) -> None:
    """The champion's URI, credentials, device, threads and GPU scheduling (as the compiled train task's), in the
    Deployment or the InferenceService."""
    pod, container = serving_pod(find, RELEASE)
    uri = v["serving"]["modelUri"] or f"models:/{v['serving']['registeredModel']}@{v['serving']['alias']}"
    bad.check(f"--model-uri={uri}" in container["args"], f"{name}: serving args {container['args']}")
    if name == "default":
        bad.check(uri == "models:/mdfnet@champion", f"default serving model URI is {uri}")
    refs = [e["secretRef"]["name"] for e in container.get("envFrom", [])]
    bad.check(refs == [secret_name], f"{name}: serving takes env from {refs}, not {secret_name}")
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    device = env.get("MDFNET_SERVING_DEVICE")
    threads = serving_threads(v["serving"])
    got = (env.get("MDFNET_SERVING_THREADS"), env.get("OMP_NUM_THREADS"), env.get("MDFNET_SERVING_MAX_BATCH"))
    bad.check(got == (str(threads), str(threads), str(v["serving"]["maxBatch"])),
              f"{name}: serving threads/OMP/max batch {got}, expected {threads} from the CPU limit "
              f"{v['serving']['resources']['limits'].get('cpu')!r} / {v['serving']['workers']} worker(s)")
    bad.check(device == ("cuda" if v["serving"]["gpu"] else "cpu"),
              f"{name}: MDFNET_SERVING_DEVICE={device!r} with serving.gpu={v['serving']['gpu']}")
    if v["serving"]["gpu"]:
        # the same scheduling as the compiled train task (pipelines/compile.py defaults)
        bad.check(pod.get("nodeSelector") == train_selector,
                  f"{name}: serving nodeSelector {pod.get('nodeSelector')} != train task's {train_selector}")
        tolerations = [{k: t[k] for k in ("key", "operator", "effect") if k in t} for t in pod.get("tolerations", [])]
        bad.check(tolerations == train_tolerations,
                  f"{name}: serving tolerations {tolerations} != train task's {train_tolerations}")
        bad.check(container["resources"]["limits"].get(v["gpu"]["resourceName"]) == 1,
                  f"{name}: GPU serving without a {v['gpu']['resourceName']} limit")
    else:
        bad.check("nodeSelector" not in pod and v["gpu"]["resourceName"] not in container["resources"]["limits"],
                  f"{name}: serving.gpu is off but the pod asks for GPU nodes")


def serving_threads(s: dict) -> int:
    """What the chart sets MDFNET_SERVING_THREADS to: serving.threads, else limits.cpu / workers (at least 1)."""
    cpu = str(s["resources"]["limits"]["cpu"])
    millicores = int(cpu[:-1]) if cpu.endswith("m") else int(float(cpu) * 1000)
    return s["threads"] or max(1, millicores // (1000 * s["workers"]))


def _check_mlflow_and_notes(name: str, v: dict, find: dict, notes: str, secret_name: str, bad: Failures) -> None:
    if v["mlflow"]["enabled"]:
        dep = find[("Deployment", f"{RELEASE}-mlflow")]
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        bad.check("--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in args and "--serve-artifacts" in args,
                  f"{name}: mlflow args {args}")
        env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        bad.check(env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", {}).get("value") == "false",
                  f"{name}: MLFLOW_SERVER_ENABLE_JOB_EXECUTION is not false")
        hosts = env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
        bad.check(f"{RELEASE}-mlflow.{NAMESPACE}.svc.cluster.local:*" in hosts and "localhost:*" in hosts,
                  f"{name}: MLflow would refuse its own service name or port-forwarding: {hosts}")
    register = (f"kubectl -n {NAMESPACE} get pipelines.pipelines.kubeflow.org,pipelineversions.pipelines.kubeflow.org"
                if v["kfp"]["pipelineManifest"]["enabled"] else
                "kfp --endpoint http://localhost:8080 pipeline create -p mdfnet pipelines/mdfnet_pipeline.yaml")
    for needle in (f"python pipelines/compile.py --registry {v['image']['registry']} --secret {secret_name} "
                   f"--min-backend {v['kfp']['backendVersion']}", register,
                   f'service_account="{v["pipelineRunner"]["serviceAccount"]["name"]}"'):
        bad.check(needle in notes, f"{name}: NOTES.txt lacks {needle!r}")
    if v["mlflow"]["enabled"]:
        bad.check("/runs?workflowType=machine_learning" in notes, f"{name}: NOTES.txt lacks the runs-page link")


def validate(name: str, objects: list[tuple[str, dict]], bad: Failures) -> int:
    for template, obj in objects:
        if obj["apiVersion"] == KFP_API:
            bad.extend(f"{name}: {template} {obj['kind']}/{obj['metadata']['name']}: {e}" for e in validate_kfp(obj))
            continue
        if obj["apiVersion"] == KSERVE_API:
            bad.extend(f"{name}: {template} {obj['kind']}/{obj['metadata']['name']}: {e}"
                       for e in validate_kserve(obj, KUBE_VERSION))
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            bad.append(f"{name}: {template} {obj['kind']}/{obj['metadata']['name']}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            bad.append(f"{name}: {template}: no Kubernetes {KUBE_VERSION} schema for {obj['apiVersion']} {obj['kind']}")
    return sum(obj["apiVersion"] not in (KFP_API, KSERVE_API) for _, obj in objects)


def checkov_manifests(rendered: dict[str, list[tuple[str, dict]]], work: Path, bad: Failures) -> Counter:
    """Scan the manifests as rendered and with the skip annotations stripped; every finding of the bare scan must
    be annotated (with a reason) on that resource, every annotation must match a finding, and the annotated scan
    must have no failure."""
    from checkov.kubernetes.runner import Runner
    from checkov.runner_filter import RunnerFilter

    files = {"annotated": [], "bare": []}
    annotations: dict[tuple[str, str, str], str] = {}
    for scenario, objects in rendered.items():
        docs, bare_docs = [], []
        for _, obj in objects:
            docs.append(obj)
            stripped = copy.deepcopy(obj)
            meta = stripped["metadata"]
            for key, value in list((meta.get("annotations") or {}).items()):
                if key.startswith(SKIP_PREFIX):
                    check_id, _, reason = value.partition("=")
                    resource = f"{obj['kind']}.{meta.get('namespace', 'default')}.{meta['name']}"
                    annotations[(scenario, resource, check_id)] = reason
                    del meta["annotations"][key]
            bare_docs.append(stripped)
        for kind, content in (("annotated", docs), ("bare", bare_docs)):
            path = work / kind / f"{scenario}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump_all(content, sort_keys=False))
            files[kind].append(str(path))
    reports = {kind: Runner().run(root_folder=None, files=paths, runner_filter=RunnerFilter(framework=["kubernetes"]))
               for kind, paths in files.items()}
    findings = {(Path(c.file_abs_path).stem, c.resource, c.check_id) for c in reports["bare"].failed_checks}
    for scenario, resource, check_id in sorted(findings - set(annotations)):
        title = next(c.check_name for c in reports["bare"].failed_checks if c.check_id == check_id)
        bad.append(f"checkov {check_id} ({title}) fails on {scenario}: {resource}, with no skip annotation")
    for scenario, resource, check_id in sorted(set(annotations) - findings):
        bad.append(f"checkov: stale annotation {check_id} on {scenario}: {resource} (the check passes without it)")
    for c in reports["annotated"].failed_checks:  # e.g. an annotation checkov could not parse
        key = (Path(c.file_abs_path).stem, c.resource, c.check_id)
        if key not in findings - set(annotations):  # (reported above)
            bad.append(f"checkov {c.check_id} ({c.check_name}) fails on {key[0]}: {c.resource} despite its annotation")
    summary = reports["annotated"].get_summary()
    return Counter(passed=summary["passed"], failed=summary["failed"], skipped=summary["skipped"])


def checkov_dockerfiles(bad: Failures) -> tuple[Counter, list[str]]:
    from checkov.dockerfile.runner import Runner
    from checkov.runner_filter import RunnerFilter

    dockerfiles = sorted([*ROOT.glob("images/*/Dockerfile"), *ROOT.glob("charts/images/*/Dockerfile")])
    report = Runner().run(root_folder=None, files=[str(p) for p in dockerfiles],
                          runner_filter=RunnerFilter(framework=["dockerfile"]))
    allowed = {}
    for entry in yaml.safe_load(SKIP_LIST.read_text()):
        bad.check(bool(str(entry.get("reason", "")).strip()), f"{SKIP_LIST.name}: {entry['check']} without a reason")
        allowed.update({(entry["check"], f): entry["reason"] for f in entry["files"]})
    used = set()
    listed = 0
    for c in report.failed_checks:
        key = (c.check_id, str(Path(c.file_abs_path).relative_to(ROOT)))
        if key in allowed:
            used.add(key)
            listed += 1
        else:
            bad.append(f"checkov {c.check_id} ({c.check_name}) fails on {key[1]}: fix it, add an inline "
                       f"`# checkov:skip={c.check_id}:<reason>` or an entry with a reason to {SKIP_LIST.name}")
    for check_id, path in sorted(set(allowed) - used):
        bad.append(f"{SKIP_LIST.name}: stale entry {check_id} for {path} (no such finding)")
    for c in report.skipped_checks:
        bad.check(bool((c.check_result.get("suppress_comment") or "").strip()),
                  f"checkov {c.check_id} skipped in {c.file_path} without a reason")
    summary = report.get_summary()
    counts = Counter(passed=summary["passed"], failed=summary["failed"] - listed,
                     skipped=summary["skipped"] + listed)
    return counts, [str(p.relative_to(ROOT)) for p in dockerfiles]


def main() -> int:
    logging.disable(logging.WARNING)  # checkov logs parser chatter at WARNING; findings are collected below
    t0 = time.monotonic()
    bad = Failures()
    print(f"chart {CHART.relative_to(ROOT)} (Helm SDK {helm.helm_sdk_version()}, Kubernetes {KUBE_VERSION})")
    lint_msgs = 0
    rendered: dict[str, list[tuple[str, dict]]] = {}
    with helm.Chart.load(CHART) as chart:
        for name, values in SCENARIOS.items():
            report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
            for m in report["messages"]:
                # info-level findings (severity 1, e.g. "icon is recommended") are advice, not defects
                if m["severity"] >= 2:
                    bad.append(f"helm lint {name}: {m['path']}: {m['error'].strip()}")
                lint_msgs += 1
            bad.extend(f"helm lint {name}: {e.strip()}" for e in report["errors"])
            try:
                chart.validate_schema(values)
                rendered[name], notes = render(chart, values)
            except helm.HelmError as e:
                bad.append(f"render {name}: {e}")
                continue
            check_scenario(name, values, rendered[name], notes, bad)
            if merged_values(values)["serving"]["kserve"]["enabled"]:
                check_same_pod(name, values, rendered[name], lambda vals: render(chart, vals), RELEASE, bad)
        refused = 0
        for values, message in MUST_FAIL:
            try:
                render(chart, values)
                bad.append(f"the chart renders {values}, which it must refuse ({message!r})")
            except helm.HelmError as e:
                refused += bad.check(message in str(e), f"{values} refused, but without {message!r}: {e}")
    print(f"helm lint + schema: {len(SCENARIOS)} values sets, {lint_msgs} info message(s); "
          f"{refused}/{len(MUST_FAIL)} bad value sets refused with their message")
    validated = sum(validate(name, objects, bad) for name, objects in rendered.items())
    kfp = sum(obj["apiVersion"] == KFP_API for objects in rendered.values() for _, obj in objects)
    isvc = sum(obj["apiVersion"] == KSERVE_API for objects in rendered.values() for _, obj in objects)
    print(f"kubernetes-validate {kubernetes_validate.__version__} (strict, {KUBE_VERSION}): {validated} resources; "
          f"{kfp} KFP Pipeline/PipelineVersion against KFP's CRD fields; {isvc} KServe InferenceService against "
          f"KServe {' and '.join(SCHEMAS)}'s CRD schemas (strict)")
    with tempfile.TemporaryDirectory(prefix="mdfnet-chart-") as work:
        k8s = checkov_manifests({n: scanned(o, SKIP_PREFIX) for n, o in rendered.items()}, Path(work), bad)
    docker, dockerfiles = checkov_dockerfiles(bad)
    print(f"checkov kubernetes: passed {k8s['passed']}, failed {k8s['failed']}, skipped {k8s['skipped']} "
          f"(annotated with reasons)")
    print(f"checkov dockerfile ({', '.join(dockerfiles)}): passed {docker['passed']}, failed {docker['failed']}, "
          f"skipped {docker['skipped']} (inline or {SKIP_LIST.name}, with reasons)")
    for message in bad:
        print(f"FAIL {message}")
    print(f"chart-check: {'FAILED, ' + str(len(bad)) + ' problem(s)' if bad else 'ok'} "
          f"in {time.monotonic() - t0:.1f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
