"""The champion, kept in the MLflow Model Registry: a model logged into its cell run
(:func:`mdfnet.serving.pyfunc.log_served_model`) is registered as a version, and the ``champion`` alias moved only
for a better validation AP. Tag and alias names: :mod:`mdfnet.tracking_names`."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mdfnet.tracking_names import (
    CHAMPION_ALIAS,
    SELECTION_METRIC,
    TAG_CHAMPION_DECISION,
    TAG_CHAMPION_REASON,
    TAG_METRIC,
    TAG_VAL_AP,
)

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChampionDecision:
    """Outcome of :func:`register_champion` (recorded on the model version as tags and description)."""

    model_name: str
    version: str
    run_id: str
    promoted: bool
    reason: str
    candidate_val_ap: float
    champion_version: str | None
    champion_val_ap: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metric_of_run(client: MlflowClient, run_id: str | None, key: str) -> float | None:
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    try:
        value = client.get_run(run_id).data.metrics.get(key)
    except MlflowException:
        return None
    return float(value) if value is not None else None


def register_champion(client: MlflowClient, model_name: str, model_uri: str, run_id: str, val_ap: float,
                      alias: str = CHAMPION_ALIAS, metric: str = SELECTION_METRIC) -> ChampionDecision:
    """Register ``model_uri`` as a new version of ``model_name``; move ``alias`` to it only if its validation
    AP is strictly higher than the current alias holder's (read from that version's run, metric ``metric``).

    Ties keep the current champion; a non-finite candidate AP never wins; a champion without a recorded AP
    loses. The decision and its reason become tags :data:`~mdfnet.tracking_names.TAG_CHAMPION_DECISION` /
    :data:`~mdfnet.tracking_names.TAG_CHAMPION_REASON` and the description of the new version (which the register
    step then replaces by the version's model card, :mod:`mdfnet.model_card`, the reason included).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(client.tracking_uri)
    mlflow.set_registry_uri(client.tracking_uri)
    val_ap = float(val_ap)
    try:
        current = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        current = None
    cur_ap = None
    if current is not None:
        cur_ap = _metric_of_run(client, current.run_id, metric)
        if cur_ap is None and current.tags.get(TAG_VAL_AP) is not None:
            cur_ap = float(current.tags[TAG_VAL_AP])

    again = _registered(client, model_name, model_uri, run_id)
    if again is not None:  # a retried register task: the version exists and its decision was taken
        log.info("register %s: %s of run %s is already v%s; nothing added", model_name, model_uri, run_id,
                 again.version)
        holder = champion_version(client, model_name, alias)
        return ChampionDecision(model_name, str(again.version), run_id, holder == str(again.version),
                                again.tags.get(TAG_CHAMPION_REASON, "registered before"), val_ap,
                                holder if holder != str(again.version) else None, cur_ap)
    mv = mlflow.register_model(model_uri, model_name, tags={TAG_VAL_AP: repr(val_ap), TAG_METRIC: metric})
    if not math.isfinite(val_ap):
        promoted, reason = False, f"candidate {metric} is {val_ap}: not comparable, {alias} unchanged"
    elif current is None:
        promoted, reason = True, f"no '{alias}' yet: v{mv.version} becomes {alias} ({metric} {val_ap:.4f})"
    elif cur_ap is None or not math.isfinite(cur_ap):
        promoted, reason = True, f"'{alias}' v{current.version} has no {metric}: v{mv.version} replaces it ({val_ap:.4f})"
    elif val_ap > cur_ap:
        promoted, reason = True, (f"v{mv.version} {metric} {val_ap:.4f} > {alias} v{current.version} "
                                  f"{cur_ap:.4f}: alias moved")
    else:
        promoted, reason = False, (f"v{mv.version} {metric} {val_ap:.4f} <= {alias} v{current.version} "
                                   f"{cur_ap:.4f}: alias kept")
    if promoted:
        client.set_registered_model_alias(model_name, alias, mv.version)
    client.set_model_version_tag(model_name, mv.version, TAG_CHAMPION_DECISION, "promoted" if promoted else "kept")
    client.set_model_version_tag(model_name, mv.version, TAG_CHAMPION_REASON, reason)
    client.update_model_version(model_name, mv.version, description=reason)
    log.info("register %s v%s: %s", model_name, mv.version, reason)
    return ChampionDecision(model_name, str(mv.version), run_id, promoted, reason, val_ap,
                            str(current.version) if current is not None else None, cur_ap)


def _registered(client: MlflowClient, model_name: str, model_uri: str, run_id: str) -> Any | None:
    """The version of ``model_name`` already registered from ``model_uri`` of run ``run_id``, if any."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    except MlflowException:
        return None
    model_id = model_uri.removeprefix("models:/")
    same = [v for v in versions if v.source in (model_uri, f"models:/{model_id}") or getattr(v, "model_id", None)
            == model_id]
    return min(same, key=lambda v: int(v.version)) if same else None


def champion_version(client: MlflowClient, model_name: str, alias: str = CHAMPION_ALIAS) -> str | None:
    """Version number currently holding ``alias`` (``None`` if the model or alias does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None
