"""KFP's ``Pipeline`` and ``PipelineVersion`` as the chart renders them (``kfp.pipelineManifest.enabled``), checked
by ``charts/check.py``: kubernetes-validate has no schema for KFP's kinds, so their ``spec`` is checked against the
fields of KFP's CRDs, and the ``PipelineVersion`` must embed the committed package's spec."""

from __future__ import annotations

from pathlib import Path

import yaml

KFP_API = "pipelines.kubeflow.org/v2beta1"
KFP_SPEC_FIELDS = {"Pipeline": {"description", "displayName"},
                   "PipelineVersion": {"codeSourceURL", "description", "displayName", "pipelineName", "pipelineSpec",
                                       "pipelineSpecURI", "platformSpec"}}
"""The ``spec`` properties of KFP's CRDs (kubeflow/pipelines 2.14.0 manifests/kustomize/base/crds; pipelineSpec
required): kubernetes-validate has no schema for them."""


def check_pipeline_manifest(name: str, v: dict, find: dict, package_path: Path, bad) -> None:
    """With kfp.pipelineManifest.enabled: the Pipeline and its PipelineVersion, which embeds the committed
    package's spec (the scenarios render the manifests as shipped) and survives upgrades (resource-policy keep)."""
    kfp = {(kind, n): o for (kind, n), o in find.items() if o["apiVersion"] == KFP_API}
    if not v["kfp"]["pipelineManifest"]["enabled"]:
        bad.check(not kfp, f"{name}: kfp.pipelineManifest.enabled is off but the chart renders {sorted(kfp)}")
        return
    kinds = sorted(kind for kind, _ in kfp)
    if not bad.check(kinds == ["Pipeline", "PipelineVersion"], f"{name}: KFP objects {kinds}"):
        return
    pipeline = next(o for (kind, _), o in kfp.items() if kind == "Pipeline")
    version = next(o for (kind, _), o in kfp.items() if kind == "PipelineVersion")
    package = [d for d in yaml.safe_load_all(package_path.read_text()) if d]
    bad.check(version["spec"]["pipelineName"] == pipeline["metadata"]["name"] == "mdfnet",
              f"{name}: PipelineVersion of {version['spec']['pipelineName']!r}, Pipeline {pipeline['metadata']['name']!r}")
    bad.check([version["spec"]["pipelineSpec"], version["spec"]["platformSpec"]] == package,
              f"{name}: the PipelineVersion's spec is not {package_path.name}'s (recompile both)")
    bad.check(version["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep",
              f"{name}: an upgrade would delete PipelineVersion {version['metadata']['name']}")


def validate_kfp(obj: dict) -> list[str]:
    """A Pipeline/PipelineVersion against the ``spec`` fields of KFP's CRDs."""
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind not in KFP_SPEC_FIELDS:
        return [f"no KFP kind {kind}"]
    errors = [f"spec.{k}: not a field of {kind}" for k in sorted(set(spec) - KFP_SPEC_FIELDS[kind])]
    return errors + (["spec.pipelineSpec: required"] if kind == "PipelineVersion" and "pipelineSpec" not in spec
                     else [])
