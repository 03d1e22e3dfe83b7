"""``build_report``: an experiment's tracked runs → the paper's tables and figures with seeds and intervals
(``report.md`` + PNGs, and ``report.html`` with the figures inlined)."""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from mdfnet.cells import REFERENCE_VARIANT, CellStats, best_run, cell_stats, reference_cell
from mdfnet.data import schema
from mdfnet.evaluation.evaluator import metric_key
from mdfnet.report import figures
from mdfnet.report.collect import (
    N_BOOT,
    Artefacts,
    ReportError,
    download,
    download_json,
    find_runs,
    history,
    run_result,
)
from mdfnet.report.deltas import paired_deltas
from mdfnet.report.paper import PAPER, PAPER_VARIANT_CLASSES
from mdfnet.report.render import Block, to_html, to_markdown
from mdfnet.report.tables import SECTIONS, pct, section, section_rows
from mdfnet.tracking_names import CHAMPION_ALIAS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Report:
    out_dir: Path
    markdown: str
    html: str
    files: list[Path]
    cells: list[CellStats]


def _first_run(cell: CellStats) -> Any:
    return cell.runs[0]  # the lowest seed


def _baseline(cells: list[CellStats]) -> CellStats | None:
    return next((c for c in cells if c.labels.get("variant") == REFERENCE_VARIANT), None)


def _seed_mean(cell: CellStats, metric: str) -> str:
    """The mean over the cell's seeds of a metric in % (``n/a`` when no run logged it)."""
    vals = [v for r in cell.runs if math.isfinite(v := r.metrics.get(metric, math.nan))]
    return pct(statistics.fmean(vals) if vals else math.nan, None)


def _per_class(cells: list[CellStats], frocs: dict[str, list[Any]]) -> Block | None:
    """Test AP/AR and FROC mean sensitivity per lesion for the best cell and the baseline (means over seeds), with
    the paper's AP/AR."""
    shown = [c for c in dict.fromkeys([cells[0], _baseline(cells)]) if c is not None]
    headers = ["lesion"] + [f"{c.cell} {m} %" for c in shown for m in ("AP", "AR", "FROC mean")] + \
              [f"paper {c.labels.get('variant')} AP / AR %" for c in shown]
    rows = []
    for name in schema.CLASSES:
        row = [name]
        for c in shown:
            row += [_seed_mean(c, f"final/test/{m}/{metric_key(name)}") for m in ("ap", "ar")]
            row.append(_froc_mean(frocs.get(c.cell, []), name, -1)[0])
        for c in shown:
            pub = PAPER_VARIANT_CLASSES.get(str(c.labels.get("variant")), {}).get(name)
            row.append(f"{pub[0]:.2f} / {pub[1]:.2f}" if pub else "—")
        rows.append(row)
    return Block("table", headers=headers, rows=rows)


def _frocs(arts: Artefacts, cells: list[CellStats]) -> dict[str, list[Any]]:
    """Cell → the FROC (:func:`mdfnet.evaluation.froc`, as the evaluate step logs it) of each run with stored test
    predictions, computed from them (so runs evaluated before FROC was logged have it too)."""
    from mdfnet.evaluation import froc

    out: dict[str, list[Any]] = {}
    for c in cells:
        scored = [s for r in c.runs if (s := arts.scored(r.run_id)) is not None]
        out[c.cell] = [froc(s.gt, s.dets, max_dets=s.max_dets, score_threshold=s.score_threshold) for s in scored]
    return out


def _froc_mean(results: list[Any], name: str, column: int) -> tuple[str, float, float | None]:
    """(text, mean, sd) over ``results`` of row ``name`` (a class or ``all``) at ``column`` (-1: the mean)."""
    vals = [v for r in results if math.isfinite(v := float(r.rows()[name][column]))]
    mean = statistics.fmean(vals) if vals else math.nan
    sd = statistics.stdev(vals) if len(vals) > 1 else None
    return pct(mean, None), mean, sd


def _sweep(arts: Artefacts, cells: list[CellStats], out: Path) -> Path | None:
    from mdfnet.evaluation import sweep

    curves = {}
    for c in cells:
        if (s := arts.scored(_first_run(c).run_id)) is not None:
            curves[f"{c.cell} (seed {_first_run(c).seed})"] = sweep(s.gt, s.dets, overlap="iobb", max_dets=s.max_dets,
                                                                    score_threshold=s.score_threshold)
    return figures.sweep_figure(curves, out / "sweep.png") if curves else None


def _froc(cells: list[CellStats], frocs: dict[str, list[Any]], out: Path) -> list[Block]:
    """Sensitivity at the FROC rates, all lesions pooled (mean over seeds), and the curves of each cell's first seed."""
    from mdfnet.evaluation import FP_RATES
    from mdfnet.evaluation.froc import OVERALL

    headers = ["cell", "seeds", *(f"{r:g} FP/img %" for r in FP_RATES), "mean %"]
    rows = [[c.cell, str(len(frocs[c.cell])), *(_froc_mean(frocs[c.cell], OVERALL, j)[0] for j in range(len(FP_RATES))),
             pct(*_froc_mean(frocs[c.cell], OVERALL, -1)[1:])] for c in cells if frocs.get(c.cell)]
    if not rows:
        return []
    curves = {f"{c.cell} (seed {_first_run(c).seed})": frocs[c.cell][0] for c in cells if frocs.get(c.cell)}
    return [Block("h2", "FROC (test split)"),
            Block("p", "Lesion sensitivity (IoBB 0.5, all classes pooled) at 1/8 to 8 false positives per image "
                       "and their mean (mean over seeds; the mean ± sd); per lesion in the table above. The curves: "
                       "each cell's first seed."),
            Block("table", headers=headers, rows=rows),
            Block("img", "FROC (test split)", path=figures.froc_figure(curves, out / "froc.png"))]


def _generalisation(client: Any, cells: list[CellStats], out: Path) -> tuple[Path | None, str]:
    series = {c.cell: {s: history(client, _first_run(c).run_id, f"{s}/ap") for s in ("train", "val")}
              for c in cells}
    if not any(s["train"] for s in series.values()):
        return None, ("No `train/ap` was logged (set `eval.train_ap_images` > 0, as the paper grids do), so the "
                      "generalisation figure is left out.")
    return figures.generalisation_figure(series, out / "generalisation.png"), ""


def _correlation(client: Any, parents: list[str], out: Path) -> Path | None:
    """The heatmap of the first pipeline run's ``reports/correlation.csv`` (``preprocess`` wrote it)."""
    for parent in parents:
        corr = download(client, parent, "reports/correlation.csv", lambda p: pd.read_csv(p, index_col=0))
        if corr is None:
            continue
        if corr.empty:
            raise ReportError(f"reports/correlation.csv of run {parent} is empty")
        return figures.correlation_figure(corr, out / "correlation.png")
    return None


def _champion(client: Any, cells: list[CellStats], model_name: str | None) -> tuple[str, str]:
    """(run id, how it was chosen): the ``champion`` in the MLflow Model Registry when it is one of the runs, else
    the best run."""
    ids = {r.run_id for c in cells for r in c.runs}
    if model_name:
        try:
            mv = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
            if mv.run_id in ids:
                return mv.run_id, f"`{model_name}@{CHAMPION_ALIAS}` (v{mv.version})"
        except Exception as e:  # noqa: BLE001 - no such model or alias in the Model Registry: the best run
            log.debug("no champion of %s: %s", model_name, e)
    best = best_run(cells)
    return best.run_id, f"the best run by validation AP (`{best.run_name}`)"


def _attribution(client: Any, run_id: str, data_dir: Path | None, repeats: int) -> dict | None:
    """The evaluate step's ``evaluation/attribution.json``, or computed now from the run's logged model and the
    preprocessed ``data_dir`` (needs torch)."""
    att = download_json(client, run_id, "evaluation/attribution.json")
    if att is not None or data_dir is None or repeats < 1:
        return att
    import mlflow

    from mdfnet.training.attribution import clinical_attribution

    models = client.search_logged_models(experiment_ids=[client.get_run(run_id).info.experiment_id],
                                         filter_string=f"source_run_id = '{run_id}'")
    if not models:
        return None
    predictor = mlflow.pyfunc.load_model(f"models:/{models[0].model_id}").unwrap_python_model().predictor
    return clinical_attribution(predictor.model, predictor.cfg, data_dir, "val", repeats)


def _attribution_blocks(att: dict | None, how: str, out: Path) -> list[Block]:
    if att is None:
        return [Block("p", f"Champion: {how}. No attribution: the run has no `evaluation/attribution.json` "
                            "(`eval.attribution_repeats` > 0 computes it in the evaluate step; `mdfnet report "
                            "--attribution-data DIR` computes it here).")]
    if not att["features"]:
        return [Block("p", f"Champion: {how}: a model without clinical input.")]
    rows = [[f, f"{100 * v['importance_mean']:.2f} ± {100 * v['importance_sd']:.2f}"]
            for f, v in sorted(att["features"].items(), key=lambda kv: -kv[1]["importance_mean"])]
    return [Block("p", f"Champion: {how}. {att['split']} AP {100 * att['ap']:.2f} %; with every clinical input at "
                       f"the train medians {100 * att['ap_train_medians']:.2f} % (is it using the clinical data at "
                       f"all?). Permutation importance = AP drop when the feature is permuted across studies "
                       f"({att['repeats']} repeats, mean ± sd, % points):"),
            Block("table", headers=["feature", "AP drop (% points)"], rows=rows),
            Block("img", "clinical attribution", path=figures.attribution_figure(att, out / "attribution.png"))]


def _table(cells: list[CellStats], key: str, arts: Artefacts, n_boot: int) -> Block:
    """A section table with each cell's paired Δ test AP against the section's :func:`reference_cell`."""
    ref = reference_cell(cells)
    headers, rows = section_rows(cells, key, PAPER.get(key, {}), ref, paired_deltas(arts, cells, ref, n_boot))
    return Block("table", headers=headers, rows=rows)


def _section_blocks(cells: list[CellStats], arts: Artefacts, n_boot: int) -> list[Block]:
    blocks = []
    for key, title in SECTIONS.items():
        chosen = section(cells, key)
        if chosen:
            blocks += [Block("h2", title), _table(chosen, key, arts, n_boot)]
    return blocks


def _all_cells(cells: list[CellStats], arts: Artefacts, n_boot: int) -> list[Block]:
    """No section has two values (e.g. the demo grid): one table of every cell, labelled by cell name."""
    return [Block("h2", "Cells"), _table(cells, "variant", arts, n_boot)]


def build_report(client: Any, experiment: str, out_dir: str | Path, pipeline_run: str | None = None,
                 n_boot: int = N_BOOT, model_name: str | None = None, attribution_data: str | Path | None = None,
                 attribution_repeats: int = 5) -> Report:
    """Write ``out_dir/report.md`` (+ PNGs) and ``out_dir/report.html`` for ``experiment`` (one pipeline run or
    all); see :mod:`mdfnet.report`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    exp = find_runs(client, experiment, pipeline_run)
    arts = Artefacts(client)
    results = [run_result(client, r, n_boot, arts) for r in tqdm(exp.runs, desc="report: runs", unit="run", leave=False)]
    cells = cell_stats(results)
    shown = [c for c in dict.fromkeys([cells[0], _baseline(cells)]) if c is not None]
    scope = f"pipeline run `{pipeline_run}`" if pipeline_run else f"{len(exp.pipeline_run_ids)} pipeline run(s)"
    blocks = [Block("h1", f"MDF-Net report: experiment `{experiment}`"),
              Block("p", f"{len(results)} evaluated runs in {len(cells)} cells ({scope}). AP and AR at IoBB 0.5 "
                         "(COCO-style, as the paper); mean ± sd over seeds, a cell with one seed says so; 95 % "
                         f"interval = percentile bootstrap over images ({n_boot} resamples) averaged over the "
                         "cell's seeds; cells are ranked by mean validation AP. Δ test AP = paired bootstrap of the "
                         "difference to the reference (the baseline where the table has it) on the same resampled "
                         "test images, seed k paired with seed k and averaged over the seeds per resample; a cell "
                         "is called higher or lower only when that 95 % interval excludes 0. Paper: single seed, "
                         "101 test images.")]
    blocks += _section_blocks(cells, arts, n_boot) or _all_cells(cells, arts, n_boot)
    sweep_cells = section(cells, "variant") or shown
    frocs = _frocs(arts, list(dict.fromkeys([*sweep_cells, *shown])))
    blocks += [Block("h2", "Per lesion (test split)"), _per_class(cells, frocs)]
    if (p := _sweep(arts, sweep_cells, out)) is not None:
        blocks += [Block("h2", "IoBB-threshold sweep"), Block("img", "test AP over IoBB thresholds", path=p)]
    blocks += _froc(sweep_cells, frocs, out)
    gen, note = _generalisation(client, shown, out)
    blocks += [Block("h2", "Generalisation"), Block("img", "train vs validation AP", path=gen) if gen
               else Block("p", note)]
    if (p := _correlation(client, exp.pipeline_run_ids, out)) is not None:
        blocks += [Block("h2", "Clinical features vs lesions"), Block("img", "correlation (train split)", path=p)]
    run_id, how = _champion(client, cells, model_name)
    att = _attribution(client, run_id, Path(attribution_data) if attribution_data else None, attribution_repeats)
    blocks += [Block("h2", "Clinical attribution"), *_attribution_blocks(att, how, out)]
    files = [b.path for b in blocks if b.kind == "img" and b.path is not None]
    md, page = to_markdown(blocks, out), to_html(blocks, f"MDF-Net report: {experiment}")
    (out / "report.md").write_text(md, encoding="utf-8")
    (out / "report.html").write_text(page, encoding="utf-8")
    return Report(out, md, page, [out / "report.md", out / "report.html", *files], cells)
