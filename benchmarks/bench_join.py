"""Join speed at MIMIC scale (≈450k ED stays, ≈380k CXR rows, 3k readings), tables only.

    python benchmarks/bench_join.py [--studies 3000] [--seed 0] [--repeat 3] [--workdir DIR]

Generates the tables once (not timed), then times ``mdfnet.data.join.join(..., check_images=False)``.
Target: ≤ 10 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import time
from pathlib import Path

from mdfnet.data import schema
from mdfnet.data.join import join
from mdfnet.data.synthetic import generate


def count_rows(path: Path | None) -> int:
    if path is None:
        return 0
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        return sum(1 for _ in fh) - 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        src = work / "src"
        t0 = time.perf_counter()
        generate(src, n_studies=args.studies, seed=args.seed, tables_only=True)
        t_gen = time.perf_counter() - t0
        stays = count_rows(schema.find_table(src, schema.EDSTAYS))
        cxr = count_rows(schema.find_table(src, schema.CXR_METADATA))
        print(f"generated tables in {t_gen:.1f} s: {stays} ED stays, {cxr} CXR rows, {args.studies} studies")
        times = []
        for i in range(args.repeat):
            t0 = time.perf_counter()
            result = join(src, work / f"joined{i}", check_images=False)
            times.append(time.perf_counter() - t0)
        print(result.summary_table())
        best, worst = min(times), max(times)
        print(f"join: best {best:.2f} s, worst {worst:.2f} s over {args.repeat} runs "
              f"({result.n_input} readings in, {result.n_kept} kept) — target <= 10 s: {'OK' if best <= 10 else 'SLOW'}")


if __name__ == "__main__":
    main()
