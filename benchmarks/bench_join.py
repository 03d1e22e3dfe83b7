"""Join speed at MIMIC scale (≈450k ED stays, ≈380k CXR rows, 3k readings), tables only; then the same cohort in
the MIMIC-Eye layout (≈3,700 patient folders, ≈24k small files) against the four-source layout.

    python benchmarks/bench_join.py [--studies 3000] [--eye-studies 4100] [--seed 0] [--repeat 3] [--workdir DIR]

Generates the tables once per layout (not timed), then times ``mdfnet.data.join.join(..., check_images=False)``.
Targets: ≤ 10 s on a 2-core machine for the four-source layout; the MIMIC-Eye layout within 2× of the same cohort
in the four-source layout (``--eye-studies`` REFLACX images; 0 skips that part).
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import time
from pathlib import Path

import pandas as pd

from mdfnet.data import schema
from mdfnet.data.join import JoinResult, join
from mdfnet.data.synthetic import generate


def count_rows(path: Path | None) -> int:
    if path is None:
        return 0
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        return sum(1 for _ in fh) - 1


def time_join(src: Path, out: Path, repeat: int) -> tuple[list[float], JoinResult]:
    """Seconds of each of ``repeat`` joins of ``src`` (into ``out/joined<i>``) and the last result."""
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        result = join(src, out / f"joined{i}", check_images=False)
        times.append(time.perf_counter() - t0)
    return times, result


def same_output(a: Path, b: Path) -> bool:
    """Both joins gave the same instances (but for the layout's image paths), boxes and exclusion counts."""
    ia, ib = (pd.read_parquet(d / "instances.parquet").drop(columns="image_path") for d in (a, b))
    ba, bb = (pd.read_parquet(d / "boxes.parquet") for d in (a, b))
    ea, eb = (pd.read_csv(d / "exclusions.csv") for d in (a, b))
    return ia.equals(ib) and ba.equals(bb) and ea.equals(eb)


def bench_four_sources(work: Path, studies: int, seed: int, repeat: int) -> None:
    src = work / "src"
    t0 = time.perf_counter()
    generate(src, n_studies=studies, seed=seed, tables_only=True)
    t_gen = time.perf_counter() - t0
    stays = count_rows(schema.find_table(src, schema.EDSTAYS))
    cxr = count_rows(schema.find_table(src, schema.CXR_METADATA))
    print(f"generated tables in {t_gen:.1f} s: {stays} ED stays, {cxr} CXR rows, {studies} studies")
    times, result = time_join(src, work, repeat)
    print(result.summary_table())
    best, worst = min(times), max(times)
    print(f"join: best {best:.2f} s, worst {worst:.2f} s over {repeat} runs "
          f"({result.n_input} readings in, {result.n_kept} kept) — target <= 10 s: {'OK' if best <= 10 else 'SLOW'}")


def bench_mimic_eye(work: Path, studies: int, seed: int, repeat: int) -> None:
    roots = {layout: work / f"cohort-{layout}" for layout in schema.LAYOUTS}
    t0 = time.perf_counter()
    for layout, root in roots.items():
        generate(root, n_studies=studies, seed=seed, tables_only=True, layout=layout)
    eye = roots["mimic-eye"]
    folders = sum(1 for p in eye.iterdir() if p.name.startswith(schema.MIMIC_EYE_PATIENT_PREFIX))
    files = sum(1 for p in eye.rglob("*") if p.is_file())
    print(f"\nsame cohort ({studies} studies, seed {seed}) in both layouts, generated in "
          f"{time.perf_counter() - t0:.1f} s; MIMIC-Eye: {folders} patient folders, {files} files")
    best = {}
    for layout, root in roots.items():
        times, result = time_join(root, work / f"out-{layout}", repeat)
        best[layout] = min(times)
        print(f"join {layout:>9}: best {min(times):.2f} s, worst {max(times):.2f} s over {repeat} runs "
              f"({result.n_input} readings in, {result.n_kept} kept)")
    ratio = best["mimic-eye"] / best["physionet"]
    same = same_output(*(work / f"out-{layout}" / "joined0" for layout in roots))
    print(f"mimic-eye / physionet: {ratio:.2f}x — target <= 2x: {'OK' if ratio <= 2 else 'SLOW'}; "
          f"same instances, boxes and exclusions: {'yes' if same else 'NO'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=3000)
    ap.add_argument("--eye-studies", type=int, default=4100, help="≈0.9 patients per study: 4100 → ≈3,700 folders")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        bench_four_sources(work, args.studies, args.seed, args.repeat)
        if args.eye_studies:
            bench_mimic_eye(work, args.eye_studies, args.seed, args.repeat)


if __name__ == "__main__":
    main()
