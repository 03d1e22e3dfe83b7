"""Serving under load: the real ``mlflow models serve`` on loopback, a bounded number of requests at several
concurrency levels, throughput, latency percentiles, status codes and the server's resident memory.

    python benchmarks/bench_serve.py --model models:/mdfnet-demo@champion \\
        --tracking-uri sqlite:///$PWD/data/demo/mlflow.db --image data/demo/example/*.jpg \\
        --clinical data/demo/example/clinical.json --requests 400 --concurrency 1,2,4,8 --json serve.json

For each level the clients (threads, one keep-alive HTTP connection each) first send ``--warmup`` untimed
requests, then the server's resident memory is read (``rss_before_mb``: the server process and every process it
started, i.e. what a pod running the same command holds), then ``--requests`` requests are sent and timed, then
the memory is read again (``rss_after_mb``). Every ``--invalid-every``-th request is invalid, as in practice (an
implausible o2sat, an undecodable image, a missing field in turn): it must get HTTP 400, the rest 200.

The valid request is ``--image`` with ``--clinical`` (a JSON object of the ten triage fields), by default the
model's own input example (a grey gradient at the model's size and the train medians).

``--url http://127.0.0.1:PORT`` measures a server that is already running instead (e.g. a cluster's through
``kubectl port-forward``; memory then only with ``--pid``). The benchmark talks to 127.0.0.1 only, and stops
the server it started (its process group) when done.

Targets (issue 25; exit status 1 when one is missed): the highest level's throughput ≥ one client's; its p99 ≤
level × one client's p50; resident memory of every level grows by ≤ 5 % after warm-up.

Server settings: ``--workers`` (uvicorn worker processes, ``mlflow models serve --workers``) and ``--threads``
(``MDFNET_SERVING_THREADS``: torch threads per worker) as the Helm chart sets them.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

LOOPBACK = "127.0.0.1"
MAX_RSS_GROWTH = 0.05
"""Issue 25: resident memory may grow by at most 5 % over a level's requests after warm-up."""


@dataclass
class Row:
    """One concurrency level: the JSON row (issue 25's fields, then the p50/p99 of the valid requests only and
    the server's CPU time per request: user + system of all its processes, which shared load does not inflate)."""

    concurrency: int
    requests: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    codes: dict[str, int]
    rss_before_mb: float | None
    rss_after_mb: float | None
    valid_p50_ms: float = 0.0
    valid_p99_ms: float = 0.0
    server_cpu_ms: float | None = None
    errors: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- requests
def request_bodies(example: dict) -> tuple[bytes, list[bytes]]:
    """The valid request as JSON and the three invalid ones (implausible value, undecodable image, missing
    field), each ``dataframe_records`` of one study."""
    bad_value = {**example, "o2sat": 250}
    bad_image = {**example, "image": base64.b64encode(b"not an image").decode()}
    no_age = {k: v for k, v in example.items() if k != "age"}
    encode = lambda record: json.dumps({"dataframe_records": [record]}).encode()  # noqa: E731
    return encode(example), [encode(r) for r in (bad_value, bad_image, no_age)]


def model_example(model: str) -> dict:
    """The logged input example of ``model`` (first row) as a JSON-able record."""
    import mlflow

    frame = mlflow.models.Model.load(model).load_input_example(mlflow.artifacts.download_artifacts(model))
    record = frame.iloc[0].to_dict()
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()}


def file_example(image: Path, clinical: Path) -> dict:
    values = json.loads(clinical.read_text())
    if not isinstance(values, dict):
        raise SystemExit(f"--clinical {clinical}: expected a JSON object of triage fields, got {type(values).__name__}")
    return {"image": base64.b64encode(image.read_bytes()).decode(), **values}


# ---------------------------------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class Server:
    """``mlflow models serve`` in its own process group on 127.0.0.1; ``stop`` ends the group by its pid."""

    def __init__(self, model: str, tracking_uri: str | None, workers: int, threads: int | None, log: Path) -> None:
        self.port = free_port()
        bin_dir = Path(sys.executable).parent  # mlflow starts uvicorn by name: the venv's bin goes first on PATH
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        if tracking_uri:
            env["MLFLOW_TRACKING_URI"] = tracking_uri
        if threads:
            env["MDFNET_SERVING_THREADS"] = str(threads)
        mlflow_bin = bin_dir / "mlflow" if (bin_dir / "mlflow").exists() else "mlflow"
        argv = [str(mlflow_bin), "models", "serve", "-m", model, "--env-manager", "local", "--host", LOOPBACK,
                "--port", str(self.port), "--workers", str(workers)]
        self.log = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def wait_ready(self, timeout: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited with code {self.proc.returncode}:\n{self.tail()}")
            try:
                conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=2)
                conn.request("GET", "/ping")
                if conn.getresponse().status == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise SystemExit(f"no answer from {self.url}/ping within {timeout:.0f} s:\n{self.tail()}")

    def tail(self, n: int = 3000) -> str:
        self._log.flush()
        return self.log.read_bytes()[-n:].decode("utf-8", "replace")

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers that outlived their parent
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()


def usage(pid: int | None) -> tuple[float, float] | None:
    """(resident MB, CPU seconds user + system) of process ``pid`` and all its descendants; ``None`` without a
    pid."""
    if pid is None:
        return None
    import psutil

    root = psutil.Process(pid)
    rss = cpu = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            with p.oneshot():
                rss += p.memory_info().rss
                times = p.cpu_times()
                cpu += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return rss / 1e6, cpu


# ---------------------------------------------------------------------------------------------- load
def run_level(host: str, port: int, valid: bytes, invalid: list[bytes], n: int, clients: int, invalid_every: int,
              timeout: float) -> tuple[list[float], list[bool], list[str], float]:
    """``n`` requests from ``clients`` threads (one keep-alive connection each); the i-th request is invalid when
    ``invalid_every`` divides i+1. Returns latencies (s), whether each was valid, status codes, wall time (s)."""
    latencies = [0.0] * n
    is_valid = [not (invalid_every and (i + 1) % invalid_every == 0) for i in range(n)]
    codes = [""] * n
    counter = iter(range(n))
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            body = valid if is_valid[i] else invalid[(i // max(invalid_every, 1)) % len(invalid)]
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                codes[i] = str(resp.status)
            except (OSError, http.client.HTTPException) as e:
                codes[i] = f"error:{type(e).__name__}"
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            latencies[i] = time.perf_counter() - t0
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, is_valid, codes, time.perf_counter() - t0


def measure(host: str, port: int, pid: int | None, valid: bytes, invalid: list[bytes], args) -> list[Row]:
    rows = []
    for clients in args.concurrency:
        if args.warmup:
            run_level(host, port, valid, invalid, args.warmup, clients, args.invalid_every, args.timeout)
        before = usage(pid)
        lat, ok, codes, wall = run_level(host, port, valid, invalid, args.requests, clients, args.invalid_every,
                                         args.timeout)
        after = usage(pid)
        ms = np.asarray(lat) * 1e3
        valid_ms = ms[np.asarray(ok)]
        wrong = [f"request {i}: {'valid' if v else 'invalid'} got {c}" for i, (v, c) in enumerate(zip(ok, codes,
                 strict=True)) if c != ("200" if v else "400")]
        pct = lambda a, q: round(float(np.percentile(a, q)), 1) if len(a) else float("nan")  # noqa: E731
        cpu = round((after[1] - before[1]) / args.requests * 1e3, 1) if before and after else None
        rows.append(Row(clients, args.requests, round(args.requests / wall, 2), pct(ms, 50), pct(ms, 95), pct(ms, 99),
                        dict(sorted(Counter(codes).items())), _round(before and before[0]), _round(after and after[0]),
                        pct(valid_ms, 50), pct(valid_ms, 99), cpu, wrong[:5]))
        r = rows[-1]
        print(f"  {clients} client(s): {r.rps:.1f} req/s, p50 {r.p50_ms} ms, p95 {r.p95_ms} ms, p99 {r.p99_ms} ms, "
              f"codes {r.codes}, RSS {r.rss_before_mb} -> {r.rss_after_mb} MB, server CPU {r.server_cpu_ms} ms/request",
              flush=True)
    return rows


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


# ---------------------------------------------------------------------------------------------- verdict
def verdict(rows: list[Row]) -> list[str]:
    """The targets of the module docstring that the rows miss (empty: all hold)."""
    missed = [f"{r.concurrency} client(s): {len(r.errors)}+ unexpected status codes, e.g. {r.errors[0]}"
              for r in rows if r.errors]
    for r in rows:
        if r.rss_before_mb and r.rss_after_mb and r.rss_after_mb > r.rss_before_mb * (1 + MAX_RSS_GROWTH):
            missed.append(f"{r.concurrency} client(s): RSS {r.rss_before_mb} -> {r.rss_after_mb} MB "
                          f"(> {MAX_RSS_GROWTH:.0%} growth)")
    one = next((r for r in rows if r.concurrency == 1), None)
    top = max(rows, key=lambda r: r.concurrency)
    if one is not None and top.concurrency > 1:
        if top.rps < one.rps:
            missed.append(f"{top.concurrency} clients: {top.rps} req/s < 1 client's {one.rps}")
        if top.p99_ms > top.concurrency * one.p50_ms:
            missed.append(f"{top.concurrency} clients: p99 {top.p99_ms} ms > {top.concurrency} x 1 client's p50 "
                          f"{one.p50_ms} ms")
    return missed


def markdown(rows: list[Row]) -> str:
    lines = ["| clients | requests | req/s | p50 ms | p95 ms | p99 ms | status codes | RSS before → after MB | "
             "server CPU ms/request |", "|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    for r in rows:
        codes = ", ".join(f"{k}: {v}" for k, v in r.codes.items())
        lines.append(f"| {r.concurrency} | {r.requests} | {r.rps:.1f} | {r.p50_ms:.0f} | {r.p95_ms:.0f} | "
                     f"{r.p99_ms:.0f} | {codes} | {r.rss_before_mb} → {r.rss_after_mb} | {r.server_cpu_ms} |")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", help="model URI to serve (models:/NAME@alias, runs:/..., a local path)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ and runs:/ URIs")
    p.add_argument("--url", help="measure this running server instead (http://127.0.0.1:PORT)")
    p.add_argument("--pid", type=int, help="with --url: the server's pid, for its resident memory")
    p.add_argument("--requests", type=int, default=200, help="timed requests per concurrency level")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8],
                   help="comma-separated client counts (default 1,2,4,8)")
    p.add_argument("--warmup", type=int, default=20, help="untimed requests before each level")
    p.add_argument("--invalid-every", type=int, default=10, help="every k-th request is invalid (0: none)")
    p.add_argument("--image", type=Path, help="the valid request's image (default: the model's input example)")
    p.add_argument("--clinical", type=Path, help="JSON object of the ten triage fields (with --image)")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (mlflow models serve --workers)")
    p.add_argument("--threads", type=int, help="torch threads per worker (MDFNET_SERVING_THREADS; default: unset)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds for the server to answer /ping")
    p.add_argument("--json", type=Path, help="write the rows here")
    p.add_argument("--markdown", type=Path, help="write the table here")
    args = p.parse_args(argv)
    if bool(args.model) == bool(args.url):
        p.error("give exactly one of --model (start a server) and --url (a running one)")
    if bool(args.image) != bool(args.clinical):
        p.error("--image and --clinical go together")
    if args.url and not args.image:
        p.error("--url needs --image and --clinical (the model's input example is read from --model)")
    if args.url and urlparse(args.url).hostname != LOOPBACK:
        p.error(f"--url {args.url}: only {LOOPBACK} (use kubectl port-forward for a cluster's server)")
    if args.requests < 1 or min(args.concurrency) < 1:
        p.error("--requests and every --concurrency must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    example = file_example(args.image, args.clinical) if args.image else model_example(args.model)
    valid, invalid = request_bodies(example)
    server = None
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        try:
            if args.model:
                server = Server(args.model, args.tracking_uri, args.workers, args.threads, Path(tmp) / "serve.log")
                print(f"serving {args.model} on {server.url} (workers {args.workers}, threads "
                      f"{args.threads or 'default'}): ready in {server.wait_ready(args.start_timeout):.1f} s",
                      flush=True)
                host, port, pid = LOOPBACK, server.port, server.proc.pid
            else:
                parsed = urlparse(args.url)
                host, port, pid = LOOPBACK, parsed.port or 80, args.pid
            rows = measure(host, port, pid, valid, invalid, args)
        finally:
            if server is not None:
                server.stop()
    table = markdown(rows)
    print(table)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(table + "\n")
    missed = verdict(rows)
    for m in missed:
        print(f"MISSED {m}")
    print("targets: " + ("all hold" if not missed else f"{len(missed)} missed"))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
