"""From the KFP UI to MLflow: links to the pipeline's MLflow run and to every cell run for the compare step's
Markdown and HTML outputs, and the best run's final metrics for its KFP ``Metrics`` artefact (which KFP's run
comparison shows). MLflow already points back: the pipeline run carries tag ``kfp.run_id``.

Links need an MLflow UI address: the pipeline's ``mlflow_ui`` parameter, else the tracking URI when it is
``http(s)://`` (in a cluster that is often a service name only the pods resolve: then pass the address users
open, e.g. ``http://localhost:5000`` behind ``kubectl port-forward``). Credentials in the URI are never copied
into a link. In the KFP UI the Markdown links open in a new tab; the HTML page is shown in an iframe sandboxed with
``allow-scripts`` only (kubeflow/pipelines ``frontend/src/components/viewers/HTMLViewer.tsx``), where a link does
not open, so the HTML carries them for the page opened on its own (e.g. from MLflow's ``report/`` artefacts).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from mdfnet.cells import headline_metrics

HEADING = "MLflow runs"
BODY = re.compile(r"<body[^>]*>", re.I)


def ui_base(tracking_uri: str, mlflow_ui: str = "") -> str | None:
    """The MLflow UI address to link to: ``mlflow_ui`` if given, else ``tracking_uri`` if it is ``http(s)://``,
    else None (no links). User and password in the address are dropped; ``ValueError`` for an ``mlflow_ui``
    that is not ``http(s)://host…``."""
    uri = mlflow_ui or tracking_uri
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        if mlflow_ui:
            raise ValueError(f"mlflow_ui: expected the MLflow UI address as http(s)://host[:port][/path], "
                             f"got {mlflow_ui!r}")
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # an IPv6 address keeps its brackets
    host = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of one run."""
    return f"{base}/#/experiments/{quote(str(experiment_id))}/runs/{quote(str(run_id))}"


def run_links(base: str, summaries: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(label, URL): the pipeline run, then every cell run by run name (evaluate-step summaries: ``run_id``,
    ``run_name``, ``parent_run_id``, ``experiment_id``)."""
    links: list[tuple[str, str]] = []
    parents = sorted({(str(s["experiment_id"]), str(s["parent_run_id"])) for s in summaries
                      if s.get("parent_run_id") and s.get("experiment_id")})
    for experiment_id, parent in parents:
        links.append((f"pipeline run {parent}", run_url(base, experiment_id, parent)))
    for s in sorted(summaries, key=lambda s: (str(s.get("run_name")), str(s.get("run_id")))):
        if s.get("run_id") and s.get("experiment_id"):
            links.append((str(s.get("run_name") or s["run_id"]), run_url(base, str(s["experiment_id"]),
                                                                         str(s["run_id"]))))
    return links


def links_markdown(links: Sequence[tuple[str, str]]) -> str:
    """A Markdown section listing ``links``."""
    def text(label: str) -> str:
        return re.sub(r"([\[\]\\`*_])", r"\\\1", label)

    return "\n".join([f"## {HEADING}", "", *(f"- [{text(label)}]({url})" for label, url in links)])


def links_html(links: Sequence[tuple[str, str]]) -> str:
    """An HTML ``<nav>`` listing ``links`` (escaped; each opens in a new tab)."""
    items = "".join(f'<li><a href="{html.escape(url)}" target="_blank" rel="noopener">{html.escape(label)}</a></li>'
                    for label, url in links)
    return f'<nav class="mlflow-links"><h2>{HEADING}</h2><ul>{items}</ul></nav>'


def with_links(compared: Mapping[str, Any], summaries: Sequence[Mapping[str, Any]], base: str | None
               ) -> dict[str, Any]:
    """:func:`mdfnet.pipeline.steps.compare_step`'s result with :func:`run_links` appended to its ``markdown`` and
    put at the top of its ``html`` page; unchanged when ``base`` is None or there is nothing to link."""
    out = dict(compared)
    links = run_links(base, summaries) if base else []
    if not links:
        return out
    out["markdown"] = f"{compared['markdown'].rstrip()}\n\n{links_markdown(links)}\n"
    page, nav = str(compared["html"]), links_html(links)
    m = BODY.search(page)
    out["html"] = f"{page[:m.end()]}{nav}{page[m.end():]}" if m else nav + page
    return out


def best_metrics(best: Mapping[str, Any]) -> dict[str, float]:
    """The best run's headline final metrics (``final/<key>`` for :data:`mdfnet.cells.KEYS`: AP, AR and the
    look-alike pair's balanced accuracy on val and test), the finite ones, for a KFP ``Metrics`` artefact: KFP's
    run comparison shows one column per metric, so the ~100 per-class and FROC values stay in MLflow."""
    return headline_metrics(best.get("metrics") or {})
