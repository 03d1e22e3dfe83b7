"""``mdfnet report``: a small experiment with known metrics and evaluation artefacts in a sqlite MLflow store; the
right numbers land in the right cells (means, sds, seeds, bootstrap intervals, paired Δ test AP against the baseline
and its verdict, FROC, the paper's column), the figures are made and inlined, one pipeline run can be selected.
Plus the pure table rules."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pandas as pd
import pytest
from stand_in_model import log_stand_in_model

from mdfnet.cells import CellStats, RunResult, cell_stats
from mdfnet.data import schema
from mdfnet.evaluation import PairedDelta, Scored, bootstrap, froc, paired_bootstrap
from mdfnet.evaluation.paired import delta_text
from mdfnet.report.tables import PAPER_DEFAULTS, delta_verdict, pct, section

N_IMAGES = 20
CELLS = {  # cell → (labels, {seed: test AP}); val AP = test AP + 0.05; detections: "all" or "half" of the boxes
    "baseline": ({"variant": "baseline", "fusion": "none"}, {0: 0.20, 1: 0.30}, "half"),
    "mdf": ({"variant": "mdf", "fusion": "sum"}, {0: 0.60, 1: 0.70}, "all"),
    "msf1d": ({"variant": "msf1d", "fusion": "none"}, {0: 0.22}, "all"),
    "fusion-hadamard": ({"variant": "mdf", "fusion": "hadamard"}, {0: 0.50}, "half"),
}
COMMON = {"backbone": "mobilenet_v3_small", "feature_set": "all"}
N_BOOT = 50


def _coco(kind: str) -> tuple[dict, list]:
    """``N_IMAGES`` images with one 10×10 box each (classes in turn); detections on every box or every other."""
    gt = {"images": [{"id": i, "width": 64, "height": 64} for i in range(1, N_IMAGES + 1)],
          "categories": [{"id": k + 1, "name": n} for k, n in enumerate(schema.CLASSES)],
          "annotations": [{"id": i, "image_id": i, "category_id": (i % 5) + 1, "bbox": [10, 10, 10, 10],
                           "area": 100, "iscrowd": 0} for i in range(1, N_IMAGES + 1)]}
    dets = [{"image_id": i, "category_id": (i % 5) + 1, "bbox": [11, 11, 8, 8], "score": 0.9}
            for i in range(1, N_IMAGES + 1) if kind == "all" or i % 2 == 0]
    return gt, dets


def _log_cell_run(client, parent, cell: str, labels: dict, seed: int, ap: float, kind: str, tmp) -> str:
    from mdfnet import tracking
    from mdfnet.evaluation.evaluator import metric_key

    run_id = tracking.open_cell_run(client, parent, f"{cell}-s{seed}", {tracking.TAG_CELL: cell})
    log = tracking.MlflowLogger(run_id, client)
    log.log_params({"cell": cell, "seed": seed, **COMMON, **labels, "model.box_detections_per_img": 10,
                    "model.box_score_thresh": 0.05})
    for epoch in (1, 2, 3):
        log.log_metrics({"epoch": float(epoch), "val/ap": ap * epoch / 3, "train/ap": min(1.0, 0.4 * epoch)},
                        step=10 * epoch)
    per_class = {f"final/test/ap/{metric_key(c)}": ap + 0.01 * k for k, c in enumerate(schema.CLASSES)}
    gt, dets = _coco(kind)
    log.log_metrics({"final/test/ap": ap, "final/test/ar": ap + 0.2, "final/val/ap": ap + 0.05,
                     "final/val/ar": ap + 0.25, "final/test/lookalike_bacc": 0.5 + ap / 2, **per_class,
                     **froc(gt, dets).metrics("final/test")}, step=30)  # as the evaluate step logs it
    folder = tmp / run_id / "evaluation"
    folder.mkdir(parents=True)
    for split in ("test", "val"):
        (folder / f"gt_{split}.json").write_text(json.dumps(gt))
        (folder / f"predictions_{split}.json").write_text(json.dumps(dets))
    if cell == "mdf" and seed == 1:
        att = {"split": "val", "repeats": 3, "ap": ap + 0.05, "ap_train_medians": 0.41,
               "features": {"temperature": {"importance_mean": 0.12, "importance_sd": 0.02, "ap_permuted": []},
                            "age": {"importance_mean": 0.01, "importance_sd": 0.005, "ap_permuted": []}}}
        (folder / "attribution.json").write_text(json.dumps(att))
    log.log_artifact(folder, "evaluation")
    tracking.finish_run(client, run_id)
    return run_id


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    from mdfnet import registry, tracking

    tmp = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        client = tracking.configure()
        parent = tracking.start_pipeline_run(client, "report-exp", "first", {})
        corr = pd.DataFrame([[0.1 * (i - j) for j in range(5)] for i in range(10)], index=list(schema.ALL_FEATURES),
                            columns=list(schema.CLASSES))
        corr.to_csv(tmp / "correlation.csv")
        client.log_artifact(parent.run_id, str(tmp / "correlation.csv"), "reports")
        ids = {(cell, seed): _log_cell_run(client, parent.run_id, cell, labels, seed, ap, kind, tmp)
               for cell, (labels, seeds, kind) in CELLS.items() for seed, ap in seeds.items()}
        uri = log_stand_in_model(client, ids[("mdf", 1)])
        registry.register_champion(client, "report-model", uri, ids[("mdf", 1)], 0.75)
        other = tracking.start_pipeline_run(client, "report-exp", "second", {})
        _log_cell_run(client, other.run_id, "late", {"variant": "msf3d", "fusion": "sum"}, 0, 0.9, "all", tmp)
        yield {"client": client, "parent": parent.run_id, "tmp": tmp}


@pytest.fixture(scope="module")
def built(experiment, tmp_path_factory):
    """The report of the first pipeline run (built once for the tests that read it)."""
    from mdfnet.report import build_report

    return build_report(experiment["client"], "report-exp", tmp_path_factory.mktemp("built"),
                        pipeline_run=experiment["parent"], n_boot=N_BOOT, model_name="report-model")


def _row(md: str, section_title: str, cell: str) -> list[str]:
    part = md.split(f"## {section_title}\n", 1)[1].split("\n## ", 1)[0]
    for line in part.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 1 and cells[1] == cell:
            return cells
    raise AssertionError(f"no row for {cell} in {section_title}:\n{part}")


def _interval(kind: str) -> tuple[float, float]:
    gt, dets = _coco(kind)
    b = bootstrap(gt, dets, n=N_BOOT, seed=0, overlap="iobb", thresholds=(0.5,), max_dets=10, score_threshold=0.05)
    return b.ap


def _delta(kind: str, ref_kind: str, seeds: int) -> str:
    """The paired Δ test AP text of ``seeds`` seed pairs (every seed's detections are the same here)."""
    pairs = [(Scored(*_coco(kind)), Scored(*_coco(ref_kind)))] * seeds
    return delta_text(paired_bootstrap(pairs, n=N_BOOT, seed=0))


def test_numbers_land_in_the_right_cells(built):
    rep = built
    assert [c.cell for c in rep.cells] == ["mdf", "fusion-hadamard", "baseline", "msf1d"]  # by mean val AP
    md = rep.markdown
    header = next(line for line in md.split("## Variants\n")[1].splitlines() if line.startswith("| variant"))
    assert header.endswith("| Δ test AP vs baseline [95 % CI] (points) | test AP vs baseline |")
    mdf = _row(md, "Variants", "mdf")
    assert mdf[2] == "2" and mdf[3] == f"65.00 ± {100 * statistics.stdev([0.6, 0.7]):.2f}"
    assert mdf[7] == f"70.00 ± {100 * statistics.stdev([0.65, 0.75]):.2f}"  # val AP
    lo, hi = _interval("all")
    assert mdf[4] == f"[{100 * lo:.1f}, {100 * hi:.1f}]" and mdf[10] == "31.69 / 54.76"  # per-cell interval kept
    # against the baseline (the reference row), paired over seeds 0 and 1: every box found vs every other box
    assert mdf[11] == _delta("all", "half", 2) and mdf[11].startswith("+") and mdf[12] == "higher"
    base = _row(md, "Variants", "baseline")
    blo, bhi = _interval("half")  # each seed's interval is the same here: their mean is that interval
    assert base[3] == f"25.00 ± {100 * statistics.stdev([0.2, 0.3]):.2f}" and base[4] == f"[{100 * blo:.1f}, {100 * bhi:.1f}]"
    assert base[10] == "19.61 / 53.90" and base[11] == "—" and base[12] == "reference"
    msf1d = _row(md, "Variants", "msf1d")  # one seed: paired with the baseline's seed 0 only
    assert msf1d[3] == "22.00 (1 seed)" and msf1d[11] == _delta("all", "half", 1) and msf1d[12] == "higher"
    assert "fusion-hadamard" not in md.split("## Variants\n")[1].split("\n## ")[0]  # not the modal fusion
    fusion = _row(md, "Fusion methods (3D fusion)", "fusion-hadamard")  # no baseline there: the top cell is the reference
    assert fusion[0] == "hadamard" and fusion[11] == _delta("half", "all", 1) and fusion[12] == "lower"
    assert _row(md, "Fusion methods (3D fusion)", "mdf")[10] == "—"  # fusion numbers are not in the paper's text
    lesion = next(line for line in md.splitlines() if line.startswith("| Consolidation |")).split("|")
    assert lesion[2].strip() == f"{100 * statistics.fmean([0.63, 0.73]):.2f}"  # mdf, per-class AP, mean of seeds
    cons = froc(*_coco("half")).rows()["Consolidation"][-1]  # baseline's FROC mean for the lesion
    assert lesion[4].strip() == "100.00" and lesion[7].strip() == f"{100 * cons:.2f}"  # mdf, baseline
    assert "late" not in md  # the other pipeline run is left out


def test_froc_table_and_figure(built):
    """The FROC table holds the logged pooled sensitivities (mean over seeds); the curve is drawn."""
    rep = built
    part = rep.markdown.split("## FROC (test split)\n", 1)[1].split("\n## ", 1)[0]
    assert "| cell | seeds | 0.125 FP/img % | 0.25 FP/img % | 0.5 FP/img % | 1 FP/img % | 2 FP/img % | 4 FP/img % | " \
           "8 FP/img % | mean % |" in part and "![FROC (test split)](froc.png)" in part
    half = froc(*_coco("half")).rows()["all"]  # 10 of 20 lesions found, no false positive: 50 % at every rate
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in part.splitlines()
            if line.startswith("| ") and not line.startswith("| cell")}
    assert rows["baseline"] == ["baseline", "2", *[f"{100 * v:.2f}" for v in half[:-1]], "50.00 ± 0.00"]
    assert rows["mdf"][2:4] == ["100.00", "100.00"] and set(rows) == {"mdf", "baseline", "msf1d"}


def test_figures_attribution_and_html(built):
    rep = built
    names = {p.name for p in rep.files}
    assert {"report.md", "report.html", "sweep.png", "froc.png", "generalisation.png", "correlation.png",
            "attribution.png"} <= names
    assert all(p.is_file() and p.stat().st_size > 1000 for p in rep.files)
    assert rep.html.count("data:image/png;base64,") == 5 and "<table>" in rep.html
    assert "`report-model@champion` (v1)" in rep.markdown and "train medians 41.00 %" in rep.markdown
    rows = [line for line in rep.markdown.splitlines() if line.startswith(("| temperature", "| age"))]
    assert rows == ["| temperature | 12.00 ± 2.00 |", "| age | 1.00 ± 0.50 |"]


def test_all_pipeline_runs_and_errors(experiment, tmp_path):
    from mdfnet.report import ReportError, build_report

    rep = build_report(experiment["client"], "report-exp", tmp_path, n_boot=0)
    assert rep.cells[0].cell == "late" and "2 pipeline run(s)" in rep.markdown
    assert "n/a" in _row(rep.markdown, "Variants", "mdf")[4]  # no bootstrap asked: no interval, said so
    assert _row(rep.markdown, "Variants", "mdf")[11:] == ["n/a", "n/a (no paired comparison)"]
    with pytest.raises(ReportError, match="experiment 'nope' not found"):
        build_report(experiment["client"], "nope", tmp_path)
    with pytest.raises(ReportError, match="no finished cell run"):
        build_report(experiment["client"], "report-exp", tmp_path, pipeline_run="0" * 32)


# ------------------------------------------------------------------------------------------ pure rules
def _run(cell: str, seed: int, ap: float, iv=(0.4, 0.6), **labels) -> RunResult:
    full = {"variant": "mdf", "fusion": "sum", "backbone": "b", "feature_set": "all", **labels}
    return RunResult(f"{cell}{seed}", f"{cell}-s{seed}", cell, seed, full,
                     {"final/test/ap": ap, "final/val/ap": ap}, {"test/ap": iv})


def test_sections_keep_cells_that_differ_only_in_their_label():
    cells = cell_stats([_run("mdf", 0, 0.6), _run("base", 0, 0.3, variant="baseline", fusion="none"),
                        _run("had", 0, 0.5, fusion="hadamard"), _run("res", 0, 0.4, backbone="resnet"),
                        _run("shuf", 0, 0.2, feature_set="all-shuffled")])
    names = {k: [c.cell for c in section(cells, k)] for k in ("variant", "fusion", "backbone", "feature_set")}
    assert names == {"variant": ["mdf", "base"], "fusion": ["mdf", "had"], "backbone": ["mdf", "res"],
                     "feature_set": ["mdf", "shuf"]}
    assert section(cell_stats([_run("mdf", 0, 0.6)]), "variant") == []  # one value: no comparison to show


def test_verdicts_come_from_the_paired_interval_only():
    """Higher/lower only when the paired interval of Δ excludes 0, whatever the per-cell intervals do."""
    from mdfnet.cells import reference_cell

    a, b, c, d = cell_stats([_run("a", 0, 0.7, (0.6, 0.8)), _run("b", 0, 0.5, (0.4, 0.61), variant="baseline"),
                             _run("c", 0, 0.3, (0.2, 0.4)), _run("d", 0, 0.2)])
    assert reference_cell([a, b, c]) is b and reference_cell([a, c]) is a  # the baseline, else the top cell

    def paired(delta, lo, hi):
        return PairedDelta(delta, (lo, hi), 1, 100, 0, 0.95, np.zeros(0))

    deltas = {"a": paired(0.2, 0.01, 0.4), "c": paired(-0.2, -0.35, 0.02), "d": None}
    # a's and b's own intervals overlap, yet the paired Δ excludes 0: higher; c's are disjoint, Δ includes 0
    assert [delta_verdict(x, b, deltas) for x in (a, b, c, d)] == [
        "higher", "reference", "not different (paired CI includes 0)", "n/a (no paired comparison)"]
    assert delta_verdict(c, b, {"c": paired(-0.2, -0.35, -0.05)}) == "lower"
    assert delta_text(deltas["a"]) == "+20.00 [+1.00, +40.00]" and delta_text(None) == "n/a"
    assert delta_text(paired(math.nan, math.nan, math.nan)) == "n/a"
    assert pct(0.5, None, 1) == "50.00 (1 seed)" and pct(0.5, 0.1, 3) == "50.00 ± 10.00" and pct(math.nan, None, 0) == "n/a"
    assert isinstance(a, CellStats) and a.seeds == [0]


def test_comparison_table_shows_the_paired_delta():
    """The compare step's table and ranking rows: Δ against the reference with its interval and verdict."""
    from mdfnet.report.comparison import comparison_markdown, comparison_table, ranking_rows

    cells = cell_stats([_run("m", 0, 0.7), _run("b", 0, 0.5, variant="baseline")])
    ref = cells[1]
    deltas = {"m": PairedDelta(0.085, (0.03, 0.14), 1, 200, 0, 0.95, np.zeros(0)), "b": None}
    headers, rows = comparison_table(cells, ref, deltas)
    assert headers[-2:] == ["Δ test AP vs b [95 % CI] (points)", "test AP vs b"]
    assert rows[0][-2:] == ["+8.50 [+3.00, +14.00]", "higher"] and rows[1][-2:] == ["—", "reference"]
    ranking = ranking_rows(cells, ref, deltas)
    assert ranking[0]["delta_test_ap"]["interval"] == [0.03, 0.14] and ranking[0]["test_ap_vs_reference"] == "higher"
    assert ranking[1]["delta_test_ap"] is None and ranking[1]["reference"] == "b"
    assert "paired bootstrap against **b**" in comparison_markdown(cells, cells[0].runs[0], ref, deltas)
    assert len(comparison_table(cells)[0]) == len(headers) - 2  # without Δ (no tracked predictions): no columns


def test_ranking_and_best_run_are_one_rule():
    """Cells by mean validation AP (ties: name; no finite AP: last); the best run is the best seed of the best
    cell (ties: the lower seed). The compare step and the report both rank with these."""
    from mdfnet.cells import best_run

    runs = [_run("b", 1, 0.5), _run("b", 0, 0.5), _run("a", 0, 0.5), _run("n", 0, math.nan), _run("c", 0, 0.7),
            _run("c", 1, 0.1)]
    cells = cell_stats(runs)
    assert [c.cell for c in cells] == ["a", "b", "c", "n"] and cells[-1].score == -math.inf
    assert [r.seed for r in cells[1].runs] == [0, 1] and best_run(cells[1:]).seed == 0
    assert cells[2].mean["val/ap"] == pytest.approx(0.4) and cells[2].sd["val/ap"] == pytest.approx(0.4243, abs=1e-4)


def test_paper_defaults_are_the_config_defaults():
    from mdfnet.model.config import ModelConfig

    assert PAPER_DEFAULTS == {"variant": "mdf", "fusion": "sum", "backbone": "mobilenet_v3_small", "feature_set": "all"}
    assert PAPER_DEFAULTS["backbone"] == ModelConfig().backbone
