"""``make demo``: synthetic sources → the whole KFP pipeline locally (kfp.local, grid ``demo``) → MLflow.

    python -m mdfnet.demo --out data/demo [--studies 600] [--seed 0] [--grid demo] [--parallelism 2] [--force]

Writes ``OUT/sources`` (synthetic MIMIC-Eye-shaped trees, 96 px JPEGs, from ``--seed``; reused when present with
the same studies and seed, regenerated otherwise or with ``--force``), ``OUT/kfp`` (kfp.local pipeline root),
unless ``MLFLOW_TRACKING_URI`` is set, the MLflow store ``OUT/mlflow.db`` + ``OUT/mlartifacts``, and
``OUT/report`` (the pipeline run's report, as the compare step logged it: ``report.md`` with its PNGs and
``report.html``). The pipeline runs in a child process (``pipelines/run_local.py``), so this package still never
imports kfp.

The ``demo`` grid (``pipelines/grids/demo.yaml``) trains the image-only baseline, MDF-Net and MDF-Net with
shuffled clinical data (the control) with the small-scale recipe (64 px, stride-8 MobileNetV3-small, 20
epochs, two cells at a time on one thread each), with train AP per epoch and the clinical attribution of the cells
with clinical input, so that the report is the full one (the paired Δ test AP against the baseline, FROC, the
train-vs-val figure, the champion's attribution). Its table shows the thesis: MDF-Net ahead of both on test AP
and on the look-alike pair's balanced accuracy.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger("mdfnet.demo")
RUN_LOCAL = Path(__file__).resolve().parents[1] / "pipelines" / "run_local.py"


SOURCES_STAMP = ".synthetic.json"
"""Written into ``OUT/sources`` after generation: the studies, seed and image size it was generated with."""
EXPERIMENT = "mdfnet-demo"
"""The demo's MLflow experiment and registered model."""
REPORT_DIR = "report"
"""``OUT/report``: the pipeline run's report; also its artefact folder on the pipeline run."""


def demo(out: Path, studies: int = 600, grid: str = "demo", force: bool = False, seed: int = 0,
         parallelism: int = 2) -> int:
    """Generate sources (if needed) and run the pipeline; returns the runner's exit code."""
    from mdfnet.data.synthetic import generate

    out = out.resolve()
    sources = out / "sources"
    wanted = {"studies": studies, "seed": seed, "image_size": 96}
    stamp = sources / SOURCES_STAMP
    if sources.exists() and (force or not stamp.is_file() or json.loads(stamp.read_text()) != wanted):
        shutil.rmtree(sources)
    if not stamp.is_file():
        t0 = time.perf_counter()
        summary = generate(sources, n_studies=studies, seed=seed, image_size=96)
        stamp.write_text(json.dumps(wanted))
        log.info("synthetic sources (seed %d): %d images, %d readings in %s (%.1f s)", seed, summary["images"],
                 summary["readings"], sources, time.perf_counter() - t0)
    if not RUN_LOCAL.is_file():
        raise FileNotFoundError(f"{RUN_LOCAL} not found: the demo runs from a source checkout")
    env = dict(os.environ)
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    cmd = [sys.executable, str(RUN_LOCAL), "--source", str(sources), "--workdir", str(out), "--grid", grid,
           "--experiment", EXPERIMENT, "--model-name", EXPERIMENT, "--parallelism", str(parallelism)]
    log_path = out / "pipeline.log"
    log.info("running %s (full task logs: %s)", " ".join(cmd), log_path)
    return _run_condensed(cmd, env, log_path)


def write_example(out: Path) -> tuple[Path, Path] | None:
    """A test-split study of the demo's run for ``mdfnet predict``: ``OUT/example/<reading>.jpg`` and
    ``clinical.json`` with its raw triage values (as typed in the source tables). Picks the first test reading
    with a Consolidation or Pulmonary edema box (the look-alike pair that only the triage tells apart)."""
    import pandas as pd

    from mdfnet.data import schema
    from mdfnet.data.join import image_root

    pre = [p.parent for p in sorted((out / "kfp").rglob("preprocessing.json"))]
    joined = [p.parent for p in sorted((out / "kfp").rglob("join_meta.json")) if p.parent not in pre]
    if not pre or not joined:
        log.warning("no preprocessed/joined output under %s: no example written", out / "kfp")
        return None
    inst = pd.read_parquet(pre[-1] / "instances.parquet")
    boxes = pd.read_parquet(pre[-1] / "boxes.parquet")
    pair = boxes.loc[boxes["label"].isin(["Consolidation", "Pulmonary edema"]), "reflacx_id"]
    test = inst[inst["split"] == "test"]
    row = test[test["reflacx_id"].isin(pair)].head(1)
    row = (row if len(row) else test.head(1)).iloc[0]
    folder = out / "example"
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / f"{row['reflacx_id']}.jpg"
    image.write_bytes((image_root(joined[-1]) / row["image_path"]).read_bytes())
    values = {f: _typed(f, row[f"raw_{f}"]) for f in schema.ALL_FEATURES}
    clinical = folder / "clinical.json"
    clinical.write_text(json.dumps(values, indent=2))
    return image, clinical


def write_report(out: Path, tracking_uri: str) -> Path | None:
    """Copy the latest pipeline run's report (logged under ``report/`` by the compare step) to ``OUT/report``;
    return its ``report.html``, or None (logged) when the run has none."""
    from mlflow import MlflowClient

    from mdfnet.tracking_names import TAG_REPORT_ERROR, TAG_ROLE

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = [] if exp is None else client.search_runs([exp.experiment_id], f"tags.`{TAG_ROLE}` = 'pipeline'",
                                                     order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        log.warning("no pipeline run in experiment %s at %s: no report copied", EXPERIMENT, tracking_uri)
        return None
    run = runs[0]
    if not client.list_artifacts(run.info.run_id, REPORT_DIR):
        log.warning("pipeline run %s has no report (%s)", run.info.run_id,
                    run.data.tags.get(TAG_REPORT_ERROR, "no report/ artefacts"))
        return None
    dest = out / REPORT_DIR
    if dest.exists():
        shutil.rmtree(dest)
    client.download_artifacts(run.info.run_id, REPORT_DIR, str(out))
    return dest / "report.html"


def _typed(field: str, value):
    """A raw source value as a person would type it in JSON: numbers as numbers (triage tables are read as
    text), pain and gender as text, missing as null."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if field in ("pain", "gender"):
        return str(value)
    try:
        number = float(value)
    except ValueError:
        return str(value)
    return int(number) if number.is_integer() and field in ("age", "acuity") else number


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STATUS = re.compile(r"(Executing task|Task .* finished with status|Pipeline .* finished with status)")
SUMMARY_START = "MLflow experiment:"


def _run_condensed(cmd: list[str], env: dict[str, str], log_path: Path) -> int:
    """Run ``cmd``; all output goes to ``log_path``; the console gets task status lines and the final summary.

    kfp.local streams every task's full log (≈1,000 lines for the tiny grid), which buries the outcome."""
    with log_path.open("w") as sink, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                      text=True, bufsize=1) as proc:
        in_summary = False
        for line in proc.stdout:  # type: ignore[union-attr]
            sink.write(line)
            plain = _ANSI.sub("", line).rstrip("\n")
            in_summary = in_summary or plain.startswith(SUMMARY_START)
            if in_summary or _STATUS.search(plain) or "Traceback" in plain or "ERROR" in plain:
                typer.echo(plain)
        code = proc.wait()
    if code != 0:
        log.error("pipeline failed (exit code %d); see %s", code, log_path)
    return code


def main(
    out: Annotated[Path, typer.Option("--out", help="Demo folder (sources, kfp root, MLflow store).")] = Path("data/demo"),
    studies: Annotated[int, typer.Option("--studies", help="Synthetic REFLACX images to generate.")] = 600,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic data.")] = 0,
    grid: Annotated[str, typer.Option("--grid", help="Ablation grid (pipelines/grids/<name>.yaml).")] = "demo",
    parallelism: Annotated[int, typer.Option("--parallelism", help="Cells trained at once (kfp.local: ≤ 2).")] = 2,
    force: Annotated[bool, typer.Option("--force", help="Regenerate the synthetic sources.")] = False,
) -> None:
    """Run the MDF-Net demo end to end."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    code = demo(out, studies=studies, grid=grid, force=force, seed=seed, parallelism=parallelism)
    log.info("demo finished in %.0f s (exit code %d)", time.perf_counter() - t0, code)
    example = write_example(out.resolve()) if code == 0 else None
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{out.resolve() / 'mlflow.db'}"
    report = write_report(out.resolve(), tracking_uri) if code == 0 else None
    if report is not None:
        typer.echo(f"report (paired Δ test AP, FROC, train vs val AP, the champion's clinical attribution):\n  "
                   f"{report} (and {report.with_suffix('.md').name} with its PNGs beside it)")
    if example is not None:
        typer.echo(f"predict on a test-split study with the champion:\n  .venv/bin/mdfnet predict --model "
                   f"models:/{EXPERIMENT}@champion --tracking-uri {tracking_uri} --image {example[0]} "
                   f"--clinical {example[1]} --score-threshold 0.3 --out {example[0].parent / 'prediction.png'}")
    if code == 0 and grid == "demo":
        log.info("reading the table: `mdf` uses the triage data, `baseline` does not, and `mdf-shuffled` is MDF-Net "
                 "fed another study's triage (the control). The synthetic Consolidation and Pulmonary edema look "
                 "the same in the image and differ in the triage, so lookalike_bacc (their balanced accuracy) "
                 "shows whether a model uses it: ≈0.5 is a guess. MDF-Net ahead of both is the clinical data "
                 "at work; 64 px CPU models, so compare the rows, not the paper's numbers")
    raise typer.Exit(code)


if __name__ == "__main__":
    typer.run(main)
