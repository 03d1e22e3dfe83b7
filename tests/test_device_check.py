"""``benchmarks/device_check.py``, the check a lent GPU runs once: its CPU smoke run (``--device cpu --size 64``,
as a separate process, making its own synthetic data set) passes every part within its time, and a part or a
row that fails is reported where it failed without stopping the rest, and sets the exit code."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCH / "device_check.py"
PART_KEYS = ("environment", "train_steps", "roi_align", "train_e2e", "validation_ap", "serving", "throughput")
SMOKE_WALL_S = 30.0
"""The smoke run's own wall time (``wall_s``) on a shared 2-core machine: ~20 s measured."""


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, float]:
    """One ``--device cpu --size 64`` run: the process, its JSON and the seconds it took in all."""
    out = tmp_path_factory.mktemp("device_check")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--size", "64", "--json",
                           str(out / "check.json"), "--cache", str(out / "cache")],
                          capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, f"device check exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc, json.loads((out / "check.json").read_text()), seconds


@pytest.fixture(scope="module")
def dc():
    """The ``device_check`` module (imported from ``benchmarks/``, as the script imports its part modules)."""
    sys.path.insert(0, str(BENCH))
    try:
        import device_check

        yield device_check
    finally:
        sys.path.remove(str(BENCH))


def test_smoke_run_passes_every_part_in_time(smoke):
    proc, report, seconds = smoke
    assert report["ok"] is True
    assert report["wall_s"] <= SMOKE_WALL_S, f"smoke run took {report['wall_s']:.1f} s (process {seconds:.1f} s)"
    assert report["device"] == "cpu" and report["card"] == "cpu"
    for key in PART_KEYS:
        assert key in report, f"part {key!r} missing from the JSON"
        assert report[key]["ok"] is True, f"part {key!r} failed: {report[key]}"
        assert "error" not in report[key]
    env = report["environment"]["facts"]
    assert env["device"] == "cpu" and env["train.amp=auto"] == "fp32"
    assert env["train.device=auto"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert env["cpus_usable"] >= 1 and env["torch"]


def test_smoke_run_prints_one_table_and_progress(smoke):
    proc, report, _ = smoke
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("MDF-Net device check: cpu (device cpu)")
    for i, title in enumerate(["environment", "train steps", "RoIAlign on the device", "train() end to end",
                               "validation AP, fp32 vs autocast", "serving latency", "train throughput"], start=1):
        assert any(line.startswith(f"{i}. {title}") for line in lines), f"section {i} ({title}) not printed"
    assert "1/7 environment ..." in proc.stderr and "7/7 train throughput" in proc.stderr


def test_smoke_train_steps_rows(smoke):
    _, report, _ = smoke
    rows = report["train_steps"]["rows"]
    for variant in ("baseline", "msf3d", "msf1d", "mdf"):
        mine = [r for r in rows if r["variant"] == variant]
        fp32 = [r for r in mine if r["precision"] == "fp32"]
        assert {r["masks"] for r in fp32} == {"off", "on"}, f"{variant}: fp32 rows {fp32}"
        for r in fp32 + [r for r in mine if r["precision"] == "bf16"]:
            assert r["ok"] and r["finite"] is True and math.isfinite(r["loss"]), r
            assert r["kernel"] == "matmul" and r["ms_per_step"] > 0 and r["peak_mib"] is None, r
        fp16 = [r for r in mine if r["precision"] == "fp16"]
        assert fp16 and all(r["status"] == "n/a: fp16 needs CUDA" for r in fp16)
        assert {r["memory"] for r in mine} == {"contiguous"}  # channels_last only on CUDA


def test_smoke_roi_align_agrees(smoke):
    _, report, _ = smoke
    rows = {(r["kernel"], r["precision"]): r for r in report["roi_align"]["rows"]}
    assert set(rows) == {(k, p) for k in ("matmul", "torchvision") for p in ("fp32", "bf16")}
    assert rows[("matmul", "fp32")]["rel_diff_out"] < 1e-5 and rows[("matmul", "fp32")]["rel_diff_grad"] < 1e-4
    assert all(r["ms_fwd_bwd"] > 0 for r in rows.values())


def test_smoke_train_resume_and_cpu_load(smoke):
    _, report, _ = smoke
    part = report["train_e2e"]
    assert [r["stage"] for r in part["rows"]] == ["data", "train 2 steps", "resume to 4 steps", "load on CPU"]
    assert all(r["ok"] for r in part["rows"]), part["rows"]
    assert part["facts"]["steps_resumed"] > part["facts"]["steps_first"] == 2


def test_smoke_validation_and_serving(smoke):
    _, report, _ = smoke
    rows = report["validation_ap"]["rows"]
    assert [r["precision"] for r in rows] == ["fp32", "bf16"]
    for r in rows:
        assert r["ap"] == -1 or 0.0 <= r["ap"] <= 1.0, r
    assert "part 4" in report["validation_ap"]["facts"]["checkpoint"]
    (serve,) = report["serving"]["rows"]
    assert 0 < serve["p50_ms"] <= serve["p99_ms"] and serve["model_device"] == "cpu"
    speed = {r["variant"]: r["images_per_s"] for r in report["throughput"]["rows"]}
    assert set(speed) == {"baseline", "mdf"} and all(v > 0 for v in speed.values())


def test_a_failing_part_is_reported_in_its_row_and_the_rest_runs(dc, monkeypatch, tmp_path, capsys):
    """A required part that raises: its row says the error, later parts still run, exit code 1. An optional part
    that fails does not change the exit code by itself."""

    def boom(ctx):
        raise RuntimeError("kernel exploded")

    def quick(ctx):
        return {"ok": True, "rows": [{"stage": "quick", "seconds": 0.0, "ok": True}]}

    parts = [dc.Part("environment", "environment", dc.environment), dc.Part("roi_align", "RoIAlign", boom),
             dc.Part("train_e2e", "after the failure", quick), dc.Part("throughput", "optional", boom, required=False)]
    monkeypatch.setattr(dc, "PARTS", parts)
    out = tmp_path / "check.json"
    code = dc.main(["--device", "cpu", "--size", "64", "--json", str(out), "--cache", str(tmp_path / "cache")])
    report = json.loads(out.read_text())
    assert code == 1 and report["ok"] is False
    assert report["roi_align"]["ok"] is False and report["roi_align"]["error"] == "RuntimeError: kernel exploded"
    assert report["roi_align"]["required"] is True and report["roi_align"]["traceback"]
    assert report["environment"]["ok"] and report["train_e2e"]["ok"]
    table = capsys.readouterr().out
    assert "2. RoIAlign: FAILED" in table and "ERROR RuntimeError: kernel exploded" in table
    assert "3. after the failure: ok" in table and "4. optional: FAILED (optional)" in table

    monkeypatch.setattr(dc, "PARTS", [p for p in parts if p.key != "roi_align"])
    assert dc.main(["--device", "cpu", "--size", "64", "--json", str(out), "--cache", str(tmp_path / "cache")]) == 0
    assert json.loads(out.read_text())["throughput"]["ok"] is False


def test_a_failing_row_is_reported_and_the_part_goes_on(dc, monkeypatch, tmp_path):
    """Part 2: one combination raising (a non-finite loss) fails that row only, the others are measured."""
    import device_check_parts as parts

    from mdfnet.training.errors import NonFiniteLossError

    def fake(ctx, sc):
        if sc.variant == "msf3d":
            raise NonFiniteLossError("step 1: loss term 'loss_classifier' is nan")
        return {"variant": sc.variant, "precision": sc.precision, "masks": "on" if sc.masks else "off",
                "memory": "contiguous", "ok": True, "finite": True, "kernel": "matmul"}

    monkeypatch.setattr(parts, "measure_steps", fake)
    result = parts.train_steps(_context(dc, tmp_path))
    bad = [r for r in result["rows"] if not r["ok"]]
    assert result["ok"] is False and bad and {r["variant"] for r in bad} == {"msf3d"}
    assert all(r["finite"] is False and r["error"].startswith("NonFiniteLossError: step 1") for r in bad)
    assert len(result["rows"]) - len(bad) == 3 * 4  # the other variants: fp32/bf16/fp16 masks off + masks on


def test_no_budget_skips_part_2_rows_and_the_optional_part(dc, tmp_path):
    import device_check_parts as parts

    ctx = _context(dc, tmp_path, budget_s=0.0)
    steps = parts.train_steps(ctx)
    assert steps["ok"] and {r["status"] for r in steps["rows"]} == {"skipped: budget"}
    assert parts.throughput(ctx)["skipped"].startswith("budget")


def test_cuda_asked_for_on_a_machine_without_it_exits_2_naming_why(dc, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a GPU machine
    out = tmp_path / "check.json"
    assert dc.main(["--device", "cuda", "--json", str(out), "--cache", str(tmp_path / "cache")]) == 2
    report = json.loads(out.read_text())
    assert report["ok"] is False and "CUDA is unusable" in report["error"]
    assert "cannot be used" in capsys.readouterr().err


def _context(dc, tmp_path: Path, budget_s: float = 400.0):
    return dc.Context(device=torch.device("cpu"), amp=None, size=64, budget_s=budget_s, steps=1, warmup=0,
                      work=tmp_path, cache=tmp_path / "cache")
