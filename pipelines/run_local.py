"""Run the whole pipeline on this machine with ``kfp.local`` (SubprocessRunner, no containers, no cluster).

    python pipelines/run_local.py --source data/demo/sources [--grid tiny] [--seeds 0 --seeds 1]
    python pipelines/run_local.py --synth 48 --workdir data/local      # generate synthetic sources first

MLflow: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<cwd>/mlflow.db`` with artefacts in ``<cwd>/mlartifacts``.
At the end it prints the experiment, the comparison table, the champion version, the ``mlflow ui`` command and
the link to the experiment's runs table.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mdfnet import tracking  # noqa: E402

log = logging.getLogger("mdfnet.run_local")
TINY_PREPROCESS = ("image_size=64", "workers=1")


@dataclass
class LocalRun:
    tracking_uri: str
    experiment: str
    experiment_id: str
    pipeline_run_id: str
    comparison: str
    decision: str
    champion_version: str | None

    def summary(self) -> str:
        return "\n".join([
            f"MLflow experiment: {self.experiment} (id {self.experiment_id}), pipeline run {self.pipeline_run_id}",
            f"tracking URI: {self.tracking_uri}", "", self.comparison, "",
            f"registration: {self.decision}", f"champion version: {self.champion_version}", "",
            f"MLflow UI: {tracking.ui_command(self.tracking_uri)}",
            f"runs: {tracking.runs_page_url(self.tracking_uri, self.experiment_id)}",
        ])


def run_local(source: str | Path, workdir: str | Path, grid: str = "tiny", seeds: tuple[int, ...] = (0,),
              config_overrides: tuple[str, ...] = (), preprocess_overrides: tuple[str, ...] = TINY_PREPROCESS,
              experiment: str = "mdfnet-local", registered_model: str = "mdfnet-local", max_steps: int = 0,
              tracking_uri: str | None = None) -> LocalRun:
    """Run the pipeline with kfp.local (pipeline root ``workdir/kfp``) and read the outcome back from MLflow."""
    import kfp.local

    from pipelines.pipeline import CompileOptions, build_pipeline

    uri = tracking_uri or tracking.resolve_tracking_uri()
    os.environ[tracking.ENV_TRACKING_URI] = uri  # task subprocesses inherit it
    # tiny local models gain nothing from intra-op threads; busy-waiting OpenMP threads on a small shared
    # machine make them several times slower (set OMP_NUM_THREADS yourself to override)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    workdir = Path(workdir).resolve()
    (workdir / "kfp").mkdir(parents=True, exist_ok=True)
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(workdir / "kfp"),
                   raise_on_error=True)
    pipeline = build_pipeline(CompileOptions(parallelism=1, secret_name=""))
    pipeline(source_uri=str(Path(source).resolve()) if "://" not in str(source) else str(source), grid=grid,
             seeds=list(seeds), config_overrides=list(config_overrides),
             preprocess_overrides=list(preprocess_overrides), experiment=experiment,
             registered_model=registered_model, max_steps=max_steps)
    return read_outcome(uri, experiment, registered_model)


def read_outcome(uri: str, experiment: str, registered_model: str) -> LocalRun:
    """The newest pipeline run of ``experiment``: its comparison table, registration decision, champion."""
    os.environ[tracking.ENV_TRACKING_URI] = uri
    client = tracking.configure()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise RuntimeError(f"MLflow experiment {experiment!r} not found at {uri}")
    runs = client.search_runs([exp.experiment_id], f"tags.`{tracking.TAG_ROLE}` = 'pipeline'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise RuntimeError(f"no pipeline run in experiment {experiment!r}")
    run = runs[0]
    table = client.download_artifacts(run.info.run_id, "comparison.md")
    return LocalRun(uri, experiment, exp.experiment_id, run.info.run_id, Path(table).read_text(),
                    run.data.tags.get("mdfnet.champion_decision", "n/a"),
                    tracking.champion_version(client, registered_model))


def main(
    source: Annotated[Path | None, typer.Option("--source", help="Folder with the four source trees.")] = None,
    synth: Annotated[int, typer.Option("--synth", help="Generate N synthetic studies into WORKDIR/sources first.")] = 0,
    workdir: Annotated[Path, typer.Option("--workdir", help="Pipeline root and generated data.")] = Path("data/local"),
    grid: Annotated[str, typer.Option("--grid")] = "tiny",
    seeds: Annotated[list[int] | None, typer.Option("--seeds", help="Repeat for several seeds.")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="TrainConfig override for every cell.")] = None,
    pre_overrides: Annotated[list[str] | None, typer.Option("--preprocess-set", help="PreprocessConfig override "
                                                            "(default image_size=64 workers=1).")] = None,
    experiment: Annotated[str, typer.Option("--experiment")] = "mdfnet-local",
    model_name: Annotated[str, typer.Option("--model-name")] = "mdfnet-local",
    max_steps: Annotated[int, typer.Option("--max-steps", help="0 = the configured epochs.")] = 0,
) -> None:
    """Run the MDF-Net pipeline locally with kfp.local and print the MLflow outcome."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if synth:
        from mdfnet.data.synthetic import generate

        source = workdir / "sources"
        generate(source, n_studies=synth, seed=0, image_size=96)
    if source is None:
        raise typer.BadParameter("give --source DIR (or --synth N to generate synthetic sources)")
    out = run_local(source, workdir, grid=grid, seeds=tuple(seeds or (0,)), config_overrides=tuple(overrides or ()),
                    preprocess_overrides=tuple(pre_overrides) if pre_overrides else TINY_PREPROCESS,
                    experiment=experiment, registered_model=model_name, max_steps=max_steps)
    typer.echo(out.summary())


if __name__ == "__main__":
    typer.run(main)
