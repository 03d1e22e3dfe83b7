"""The model card of a registered model version: what a reviewer needs before using it, in Markdown, as the
version's description (its page in the MLflow UI) and as ``model_card.md`` on the version's run, with the headline
facts as version tags (searchable; names in :mod:`mdfnet.tracking_names`).

The card is read back from MLflow, never from the step's memory, so it says what a reviewer can check there:

- **data**: the run's dataset inputs (:mod:`mdfnet.tracking_datasets`: name, digest, readings, patients, boxes,
  source) and whether they were synthetic (the run's ``mdfnet.synthetic`` tag; the generator's seed and size from
  the train dataset's profile): a card of a model trained on synthetic data says so at the top and in its
  limitations;
- **metrics** of the best checkpoint (IoBB 0.5): test and val AP/AR with 95 % percentile-bootstrap intervals over
  images (:func:`mdfnet.report.collect.intervals`, from the run's stored COCO predictions), the look-alike pair's
  balanced accuracy and misses;
- **the other cells of its pipeline run** (mean over seeds), the shuffled-clinical control's result (a run whose
  ``data.shuffle_clinical`` param is ``True``) and its difference from this model;
- **intended use**, **limitations** and the champion decision.

:func:`collect` reads the facts, :func:`render` and :func:`card_tags` are pure, :func:`write_card` stores them.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from mdfnet.cells import RunResult, cell_stats
from mdfnet.data import schema
from mdfnet.evaluation.paired import PairedDelta, delta_text
from mdfnet.evaluation.pairs import LOOKALIKE_PAIR
from mdfnet.report.render import markdown_table
from mdfnet.tracking_datasets import SPLITS
from mdfnet.tracking_names import (
    DATASET_CONTEXTS,
    INPUT_CONTEXT,
    LABEL_KEYS,
    PARAM_CELL,
    PARAM_SEED,
    SELECTION_METRIC,
    TAG_CELL,
    TAG_CONTROL_TEST_AP,
    TAG_DATA_SOURCE,
    TAG_DATASET_PREFIX,
    TAG_GIT_COMMIT,
    TAG_GIT_SHA,
    TAG_LOOKALIKE_BACC,
    TAG_PARENT,
    TAG_ROLE,
    TAG_SYNTHETIC,
    TAG_TEST_AP,
)

log = logging.getLogger(__name__)

SHUFFLE_PARAM = "data.shuffle_clinical"
"""The resolved ``TrainConfig``'s ``data.shuffle_clinical`` as every cell run logs it: ``True`` marks the control."""
CARD_ARTIFACT = "model_card.md"
"""The whole card on the version's run (the description holds it up to :data:`MAX_DESCRIPTION` characters)."""
MAX_CELLS = 8
"""Rows of the card's table of its pipeline run's cells (its own, the control and the baseline always among them)."""
MAX_DESCRIPTION = 5000
"""MLflow's SQL stores keep a model version's description in a ``VARCHAR(5000)``."""
INTENDED_USE = (
    "Research and teaching: reproducing MDF-Net (lesion detection on frontal chest X-rays with the emergency "
    "department's triage data fused in) and comparing it with the image-only baseline on your own data. Input: one "
    "frontal chest X-ray and the triage values taken at the visit; output: boxes of the five lesion classes with "
    "scores. **Not a medical device**: not for diagnosis, triage or any decision about a patient.")
FIXED_LIMITATIONS = (
    f"Five classes only ({', '.join(schema.CLASSES)}): anything else on the image is not reported. Boxes are the "
    "REFLACX radiologists' ellipses made rectangular; detections are scored at IoBB 0.5 (overlap over the detected "
    "box, MDF-Net's metric), more lenient than IoU.",
    "Triage values outside plausible ranges are refused at prediction time; missing ones are replaced by the train "
    "split's medians, so a prediction without triage values is the model's guess at a typical visit.",
)


@dataclass(frozen=True)
class DatasetFact:
    """One dataset input of the run (``split`` from its context tag)."""

    split: str
    name: str
    digest: str
    source: str
    profile: dict[str, Any]

    @classmethod
    def of(cls, dataset_input: Any) -> DatasetFact:
        ds = dataset_input.dataset
        context = {t.key: t.value for t in dataset_input.tags}.get(INPUT_CONTEXT, "")
        split = {v: k for k, v in DATASET_CONTEXTS.items()}.get(context, context)
        try:
            source = str(json.loads(ds.source).get("uri", ds.source))
        except (ValueError, AttributeError):
            source = str(ds.source)
        return cls(split, ds.name, ds.digest, source, json.loads(ds.profile or "{}"))


@dataclass(frozen=True)
class CellFact:
    """A cell of the version's pipeline run: mean over its seeds of ``final/<key>`` (:data:`mdfnet.cells.KEYS`)."""

    cell: str
    labels: dict[str, str]
    seeds: int
    mean: dict[str, float]
    control: bool
    this: bool
    paired: PairedDelta | None = None
    """Test AP of the version's cell − this cell, paired bootstrap over the same test images seed by
    seed (:func:`mdfnet.report.deltas.paired_delta`); for the control and the baseline, when their runs stored
    predictions."""


@dataclass(frozen=True)
class CardFacts:
    """Everything the card says (read by :func:`collect`)."""

    model_name: str
    version: str
    run_id: str
    run_name: str
    cell: str
    labels: dict[str, str]
    synthetic: bool | None
    """True / False from the run's tag; None when the run does not record it."""
    data_source: str
    git_commit: str
    datasets: list[DatasetFact]
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    n_boot: int
    cells: list[CellFact] = field(default_factory=list)
    reason: str = ""

    @property
    def control(self) -> CellFact | None:
        return next((c for c in self.cells if c.control), None)

    @property
    def generator(self) -> dict[str, Any] | None:
        """The synthetic generator's marker (seed, studies…) from the train dataset's profile."""
        train = next((d for d in self.datasets if d.split == "train"), None)
        return train.profile.get("synthetic") if train is not None else None


# ------------------------------------------------------------------------------------------ collect (MLflow)
def collect(client: Any, run_id: str, model_name: str, version: str, reason: str = "",
            n_boot: int = 200) -> CardFacts:
    """The facts of the card of version ``version`` of ``model_name``, logged from run ``run_id`` (see the module
    docstring); ``n_boot`` resamples for the intervals (0: none)."""
    from mdfnet.report.collect import Artefacts, intervals

    run, artefacts = client.get_run(run_id), Artefacts(client)  # each run's stored predictions read once
    p, tags = run.data.params, run.data.tags
    order = {s: i for i, s in enumerate(SPLITS)}
    datasets = sorted((DatasetFact.of(d) for d in run.inputs.dataset_inputs), key=lambda d: order.get(d.split, 9))
    synthetic = {"true": True, "false": False}.get(tags.get(TAG_SYNTHETIC, ""))
    metrics = {k: float(v) for k, v in run.data.metrics.items()}
    return CardFacts(model_name, str(version), run_id, run.info.run_name, p.get(PARAM_CELL, run.info.run_name),
                     {k: p[k] for k in LABEL_KEYS if k in p}, synthetic, tags.get(TAG_DATA_SOURCE, ""),
                     tags.get(TAG_GIT_COMMIT, ""), datasets, metrics,
                     intervals(client, run, n_boot, artefacts=artefacts), n_boot,
                     _cells(client, run, n_boot, artefacts), reason)


def _cells(client: Any, run: Any, n_boot: int, artefacts: Any) -> list[CellFact]:
    """The evaluated cell runs of ``run``'s pipeline run, by cell (the run alone when it has no pipeline run), the
    control and the baseline with their paired Δ test AP against ``run``'s cell (``n_boot`` resamples; stored
    predictions read through ``artefacts``, a :class:`mdfnet.report.collect.Artefacts`)."""
    from mdfnet.report.deltas import paired_delta

    parent = run.data.tags.get(TAG_PARENT)
    runs = [run]
    if parent:
        query = f"tags.`{TAG_PARENT}` = '{parent}' and tags.`{TAG_ROLE}` = 'cell'"
        runs = client.search_runs([run.info.experiment_id], filter_string=query, max_results=5000) or [run]
    runs = [r for r in runs if SELECTION_METRIC in r.data.metrics]
    results, control = [], set()
    for r in runs:
        p = r.data.params
        cell = p.get(PARAM_CELL, r.info.run_name)
        results.append(RunResult(r.info.run_id, r.info.run_name, cell, int(float(p.get(PARAM_SEED, 0))),
                                 {k: p.get(k, "") for k in LABEL_KEYS},
                                 {k: float(v) for k, v in r.data.metrics.items()}))
        if p.get(SHUFFLE_PARAM) == "True":
            control.add(cell)
    this = run.data.params.get(PARAM_CELL, run.info.run_name)
    stats = cell_stats(results)
    mine = next((c for c in stats if c.cell == this), None)

    def paired(c: Any) -> PairedDelta | None:
        if mine is None or c is mine or n_boot < 1 or not (c.cell in control or c.labels.get("variant") == "baseline"):
            return None
        return paired_delta(artefacts, mine, c, n_boot)

    return [CellFact(c.cell, c.labels, len(c.runs), dict(c.mean), c.cell in control, c.cell == this, paired(c))
            for c in stats]


# ------------------------------------------------------------------------------------------ render (pure)
def _pct(v: float | None) -> str:
    return f"{100 * v:.1f} %" if v is not None and math.isfinite(v) else "—"


def _ci(iv: tuple[float, float] | None) -> str:
    if not iv or not all(math.isfinite(x) for x in iv):
        return "—"
    return f"[{100 * iv[0]:.1f}, {100 * iv[1]:.1f}]"


def _delta(d: PairedDelta | None) -> str:
    return delta_text(d, digits=1, missing="—")


def _synthetic_line(f: CardFacts) -> str:
    g = f.generator or {}
    how = ", ".join(f"{k} {g[k]}" for k in ("seed", "studies", "image_size", "layout") if k in g)
    return (f"**Trained on synthetic data** (`mdfnet synth`{': ' + how if how else ''}): the images are drawn "
            "shapes and the triage values follow a hand-made rule, so its numbers show that the pipeline works, "
            "not how it would do on patients.")


def _data_section(f: CardFacts) -> list[str]:
    if not f.datasets:
        return ["## Data", "", "The run logged no datasets."]
    rows = [(d.split, f"`{d.name}`", f"`{d.digest}`", d.profile.get("num_rows", "—"), d.profile.get("subjects", "—"),
             d.profile.get("with_lesion", "—"), d.profile.get("boxes", "—")) for d in f.datasets]
    sources = sorted({d.source for d in f.datasets})
    origin = {True: "synthetic (the generator's marker)", False: "not synthetic (no generator marker)",
              None: "not recorded"}[f.synthetic]
    return ["## Data", "", markdown_table(["split", "dataset", "digest", "readings", "patients", "with lesion",
                                           "boxes"], rows), "",
            f"Source: {', '.join(f'`{s}`' for s in sources)}; origin: {origin}. Splits are by patient."]


def _metrics_section(f: CardFacts) -> list[str]:
    m, iv = f.metrics, f.intervals
    rows = [(f"{split} {what}", _pct(m.get(f"final/{split}/{what.lower()}")), _ci(iv.get(f"{split}/{what.lower()}")))
            for split in ("test", "val") for what in ("AP", "AR")]
    pair = f"look-alike bAcc ({LOOKALIKE_PAIR[0]} vs {LOOKALIKE_PAIR[1]}), test"
    missed = m.get("final/test/lookalike_missed")
    rows.append((pair, _pct(m.get("final/test/lookalike_bacc"))
                 + (f" ({int(missed)} missed)" if missed is not None else ""), "—"))
    how = (f"percentile bootstrap over images, {f.n_boot} resamples" if f.intervals else "no interval computed")
    return ["## Metrics", "", f"Best checkpoint, IoBB 0.5; val AP picked the checkpoint and the champion. 95 % "
            f"interval: {how}.", "", markdown_table(["metric", "value", "95 % interval"], rows)]


def _cells_section(f: CardFacts) -> list[str]:
    def role(c: CellFact) -> str:
        return ("this model" if c.this else "control: shuffled triage" if c.control
                else "image only" if c.labels.get("variant") == "baseline" else "")

    shown = [c for c in f.cells if role(c)]  # ranked by val AP: its own, the control, the baseline, then the best
    shown += [c for c in f.cells if c not in shown][:max(0, MAX_CELLS - len(shown))]
    rows = [(c.cell, role(c), c.seeds, _pct(c.mean.get("val/ap")), _pct(c.mean.get("test/ap")), _delta(c.paired),
             _pct(c.mean.get("test/lookalike_bacc"))) for c in f.cells if c in shown]
    out = ["## Its pipeline run", ""]
    if rows:
        more = len(f.cells) - len(rows)
        out += [markdown_table(["cell", "role", "seeds", "val AP", "test AP", f"paired Δ test AP, {f.cell} − row",
                                "test look-alike bAcc"], rows),
                *(["", f"{more} more cell{'s' if more > 1 else ''}: the pipeline run's comparison table."]
                  if more else []), ""]
    ctrl, ap = f.control, f.metrics.get("final/test/ap")
    if ctrl is None:
        out.append("No shuffled-triage control ran beside it: whether the model uses the triage values is not "
                   "checked here (the `demo` grid runs one; `mdfnet report --attribution-data` measures it).")
    elif ctrl.this:
        out.append("This model **is** the shuffled-triage control: every study was trained on another study's "
                   "triage values.")
    else:
        c_ap = ctrl.mean.get("test/ap", math.nan)
        if _delta(ctrl.paired) != "—":
            delta = (f"paired Δ test AP of its cell {_delta(ctrl.paired)} points on the same test images: "
                     f"{ctrl.paired.verdict_text}")
        else:
            delta = (f"{100 * (ap - c_ap):+.1f} points (difference of means, not paired)"
                     if ap is not None and math.isfinite(c_ap) else "—")
        baccs = (ctrl.mean.get("test/lookalike_bacc"), f.metrics.get("final/test/lookalike_bacc"))
        pair = (f"; look-alike bAcc {_pct(baccs[0])} vs {_pct(baccs[1])}"
                if any(b is not None and math.isfinite(b) for b in baccs) else "")
        out.append(f"Control (`{ctrl.cell}`, each study trained with another study's triage values): test AP "
                   f"{_pct(c_ap)} (mean of {ctrl.seeds} seed{'s' if ctrl.seeds > 1 else ''}); this model "
                   f"{_pct(ap)}, {delta}{pair}.")
    return out


def _limitations(f: CardFacts) -> list[str]:
    out = [_synthetic_line(f)] if f.synthetic else []
    if f.synthetic is None:
        out.append("Where the training data came from is not recorded on the run.")
    test = next((d for d in f.datasets if d.split == "test"), None)
    iv = f.intervals.get("test/ap")
    if test is not None and iv and all(math.isfinite(x) for x in iv):
        out.append(f"{test.profile.get('num_rows', '?')} test readings: the 95 % interval of test AP is "
                   f"{100 * (iv[1] - iv[0]):.1f} points wide; differences between models smaller than that need a "
                   "paired comparison on the same images (the pipeline run's report).")
    return [*out, *FIXED_LIMITATIONS]


def render(f: CardFacts) -> str:
    """The card as Markdown (see the module docstring)."""
    labels = ", ".join(f"{k} `{v}`" for k, v in f.labels.items())
    head = [f"# {f.model_name} v{f.version}: {f.cell}", ""]
    if f.synthetic:
        head += [f"> {_synthetic_line(f)}", ""]
    head += [f"Run `{f.run_name}` (`{f.run_id}`){', ' + labels if labels else ''}"
             f"{f'; code `{f.git_commit[:12]}`' if f.git_commit else ''}.", "", "## Intended use", "", INTENDED_USE, ""]
    body = [*_data_section(f), "", *_metrics_section(f), "", *_cells_section(f), "", "## Limitations", "",
            *[f"- {x}" for x in _limitations(f)]]
    if f.reason:
        body += ["", "## Champion decision", "", f.reason]
    return "\n".join([*head, *body]).replace("\n\n\n", "\n\n").rstrip() + "\n"


def card_tags(f: CardFacts) -> dict[str, str]:
    """The version's tags from the card: cell, data origin and source, code, test AP [interval], look-alike bAcc,
    the control's mean test AP and each dataset (``<name> <digest> (<readings> readings)``)."""
    tags = {TAG_CELL: f.cell}
    if f.synthetic is not None:
        tags[TAG_SYNTHETIC] = str(f.synthetic).lower()
    for key, value in ((TAG_DATA_SOURCE, f.data_source), (TAG_GIT_SHA, f.git_commit)):
        if value:
            tags[key] = value
    ap = f.metrics.get("final/test/ap")
    if ap is not None and math.isfinite(ap):
        iv = f.intervals.get("test/ap")
        tags[TAG_TEST_AP] = f"{ap:.4f}" + (f" [{iv[0]:.4f}, {iv[1]:.4f}]" if iv else "")
    bacc = f.metrics.get("final/test/lookalike_bacc")
    if bacc is not None and math.isfinite(bacc):
        tags[TAG_LOOKALIKE_BACC] = f"{bacc:.4f}"
    ctrl = f.control
    if ctrl is not None and not ctrl.this and math.isfinite(ctrl.mean.get("test/ap", math.nan)):
        tags[TAG_CONTROL_TEST_AP] = f"{ctrl.mean['test/ap']:.4f}"
    for d in f.datasets:
        tags[f"{TAG_DATASET_PREFIX}{d.split}"] = f"{d.name} {d.digest} ({d.profile.get('num_rows', '?')} readings)"
    return tags


# ------------------------------------------------------------------------------------------ store
def description(card: str, run_id: str) -> str:
    """``card`` as a version description: whole up to :data:`MAX_DESCRIPTION` characters, else cut there with a
    pointer to :data:`CARD_ARTIFACT` on run ``run_id``."""
    if len(card) <= MAX_DESCRIPTION:
        return card
    more = f"\n\n… (cut: the whole card is `{CARD_ARTIFACT}` on run `{run_id}`)\n"
    return card[:MAX_DESCRIPTION - len(more)] + more


def write_card(client: Any, model_name: str, version: str, run_id: str, reason: str = "",
               n_boot: int = 200) -> str:
    """Collect, render and store the card of ``model_name`` v``version``: the version's description (cut at
    :data:`MAX_DESCRIPTION` characters, pointing to the whole card), its tags, and :data:`CARD_ARTIFACT` on run
    ``run_id`` (skipped, with a warning, while the artefact store is away; the intervals then say none was
    computed). Returns the card."""
    facts = collect(client, run_id, model_name, version, reason, n_boot)
    card = render(facts)
    try:
        client.log_text(run_id, card, CARD_ARTIFACT)
    except Exception as e:  # noqa: BLE001 - the artefact store away: the description and tags (database) hold it
        log.warning("model card of %s v%s: %s not stored on run %s (%s: %s)", model_name, version, CARD_ARTIFACT,
                    run_id, type(e).__name__, e)
    client.update_model_version(model_name, version, description=description(card, run_id))
    for key, value in card_tags(facts).items():
        client.set_model_version_tag(model_name, version, key, value)
    log.info("model card of %s v%s: %d characters, %d tags", model_name, version, len(card), len(card_tags(facts)))
    return card


__all__ = ["CARD_ARTIFACT", "CardFacts", "CellFact", "DatasetFact", "card_tags", "collect", "description", "render",
           "write_card"]
