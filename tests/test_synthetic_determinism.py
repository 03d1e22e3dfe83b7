"""The synthetic source generator: one seed gives identical bytes, another seed other tables, gzip without
timestamps, the fast CSV writer equals pandas', and ``mdfnet synth`` writes what ``generate`` writes."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mdfnet.data import schema
from mdfnet.data import synthetic as S


def file_hashes(root: Path, pattern: str = "**/*") -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.glob(pattern)) if p.is_file()}


# ----------------------------------------------------------------------------- determinism
@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    roots = {k: tmp_path_factory.mktemp(f"synth_{k}") for k in ("a", "b", "c")}
    sums = {k: S.generate(r, 30, seed=(4 if k != "c" else 5), image_size=40) for k, r in roots.items()}
    return roots, sums


TABLES = (schema.CXR_METADATA + ".gz", schema.PATIENTS_CANDIDATES[0] + ".gz", schema.EDSTAYS + ".gz",
          schema.TRIAGE, *(schema.reflacx_metadata_path(p) for p in schema.REFLACX_PHASES))


def test_same_seed_gives_identical_bytes(twins):
    roots, sums = twins
    a, b = file_hashes(roots["a"]), file_hashes(roots["b"])
    assert sums["a"] == sums["b"]
    assert set(TABLES) <= set(a)
    assert sum(k.endswith(".jpg") for k in a) == sums["a"]["jpegs"] > 0
    assert sum(k.endswith("anomaly_location_ellipses.csv") for k in a) == sums["a"]["readings"]
    assert a == b  # every table, ellipse file and JPEG


def test_different_seed_gives_different_tables(twins):
    roots, _ = twins
    a, c = file_hashes(roots["a"]), file_hashes(roots["c"])
    for rel in TABLES:
        assert a[rel] != c[rel], rel
    assert not set(k for k in a if k.endswith(".jpg")) & set(k for k in c if k.endswith(".jpg"))


def test_gzip_tables_have_no_timestamp(twins):
    roots, _ = twins
    raw = (roots["a"] / TABLES[0]).read_bytes()
    assert raw[4:8] == b"\x00\x00\x00\x00"  # gzip MTIME field = 0
    assert gzip.decompress(raw).startswith(b"dicom_id,subject_id,study_id,")


def test_csv_writer_matches_pandas():
    df = pd.DataFrame({
        "i": np.array([1, 22], np.int64), "f": [98.0, np.nan], "t": [75006.859, 512.5],
        "s": ["Fever, Cough", None], "q": ['say "hi"', "x"], "b": [True, False],
        "n": pd.array([5, None], dtype="Int64"),
    })
    assert S.csv_bytes(df) == df.to_csv(index=False, lineterminator="\n").encode()
    assert S.csv_bytes(df.iloc[:0]) == b"i,f,t,s,q,b,n\n"


# ----------------------------------------------------------------------------- CLI
def test_cli_synth_writes_the_same_tree_as_generate(tmp_path):
    from typer.testing import CliRunner

    from mdfnet.cli import app

    res = CliRunner().invoke(app, ["synth", str(tmp_path / "cli"), "--studies", "12", "--seed", "3",
                                   "--image-size", "40"])
    assert res.exit_code == 0, res.output
    summary = S.generate(tmp_path / "api", 12, seed=3, image_size=40)
    for key in ("readings", "jpegs", "ed_stays", "excl_no_cxr_metadata"):
        assert re.search(rf"^\s*{key}: {summary[key]}$", res.output, re.M), (key, res.output)
    assert file_hashes(tmp_path / "cli") == file_hashes(tmp_path / "api")
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "t"), "--studies", "10", "--tables-only"])
    assert res.exit_code == 0, res.output
    assert not list((tmp_path / "t").rglob("*.jpg")) and schema.find_table(tmp_path / "t", schema.EDSTAYS)
