"""End to end in containers: the step images, built by a real Docker engine, run the whole tiny pipeline.

``make e2e`` (``MDFNET_E2E_CONTAINERS=1``; skipped otherwise, so ``make test`` never needs Docker):

1. a Docker engine: ``DOCKER_HOST`` if it answers, else a private ``dockerd`` (own process group, data root in
   the cache dir ``MDFNET_E2E_CACHE``, default ``/var/tmp/mdfnet-e2e``, so a second run reuses its layers;
   stopped by pid at the end; needs root);
2. the Python base ``local/debian-python:bookworm`` from ``debootstrap`` (no public image registry is reachable
   here; made once, then reused from the engine) and all 10 images by ``images/build.sh --registry local``;
3. a moto S3 server and an ``mlflow server`` (artefact store: a bucket of it) on loopback (``tests/servers.py``);
   32 synthetic studies (80 px) uploaded to ``s3://<bucket>/sources``;
4. :func:`pipelines.run_local.run_local` with ``runner="docker"``: every task of grid ``tiny`` (1 seed, 3
   optimiser steps) in its ``local/mdfnet-<step>:<version>`` image (``kfp.local.DockerRunner``, host network),
   the join step reading the sources from S3 with boto3.

The tests then check what only that path produces: MLflow runs, metrics and the champion alias on the server,
the cell runs' model and evaluation artefacts as objects in the bucket, the image tags on the pipeline run, and
proof that the tasks ran in the images (the engine's container start events per image; the git commit baked
into the images by ``build.sh``, while this process holds another ``MDFNET_GIT_SHA``; outputs owned by the
images' uid 1000), and the run's champion served by ``mdfnet-serve`` as the Helm chart runs it (uid 1000,
read-only root filesystem). If ``MDFNET_E2E_CONTAINERS=1`` and the engine cannot be had (no root, no ``dockerd``, it
fails to start) the tests FAIL with the reason and the engine's log: they never skip silently.

The tests without the ``containers`` marker are fast unit tests of the docker runner's inputs (part of
``make test``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import S3_CREDS, Service, bucket_objects, file_tail, mlflow_with_s3, no_proxy_for_loopback, upload_tree

import components
import mdfnet

ROOT = Path(__file__).resolve().parents[1]

ENABLED = os.environ.get("MDFNET_E2E_CONTAINERS") == "1"
CACHE = Path(os.environ.get("MDFNET_E2E_CACHE") or "/var/tmp/mdfnet-e2e")
REGISTRY = "local"
BASE_IMAGE = "local/debian-python:bookworm"
BUCKET = "mdfnet-e2e"
HOST_SHA = "host-process-sha-not-in-any-image"
"""``MDFNET_GIT_SHA`` of this process during the run: the runner does not pass it on, so a run tagged with the
images' commit was tagged inside an image."""
GRID, SEEDS = "tiny", (0,)



def in_containers(test):
    """Marks of the container tests: ``containers``, opt-in skip, a generous time limit."""
    for mark in (
        pytest.mark.containers,
        pytest.mark.timeout(3600),  # cold: debootstrap + 10 image builds + pipeline ≈ 10 min on 2 busy cores
        pytest.mark.skipif(not ENABLED, reason="container end-to-end check is opt-in: run `make e2e` (sets "
                           "MDFNET_E2E_CONTAINERS=1; needs root or a working DOCKER_HOST; ~10 min cold, ~2 min "
                           "warm)"),
    ):
        test = mark(test)
    return test


# ------------------------------------------------------------------------------------------ helpers
def _docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """The docker CLI against ``DOCKER_HOST`` of this process; a failure fails the test with the CLI's output."""
    out = subprocess.run([shutil.which("docker") or "docker", *args], capture_output=True, text=True,
                         timeout=timeout, stdin=subprocess.DEVNULL)
    if check and out.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} exited with {out.returncode}:\n{out.stdout[-2000:]}{out.stderr[-2000:]}",
                    pytrace=False)
    return out


def _engine_answers(host: str) -> str | None:
    """``None`` if the engine at ``host`` answers ``docker version``, else why not."""
    try:
        out = subprocess.run([shutil.which("docker") or "docker", "version", "--format", "{{.Server.Version}}"],
                             capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL,
                             env={**os.environ, "DOCKER_HOST": host})
    except (OSError, subprocess.TimeoutExpired) as e:
        return repr(e)
    return None if out.returncode == 0 and out.stdout.strip() else (out.stderr.strip() or "no server version")[-300:]


def _run_logged(argv: list[str], log: Path, what: str, timeout: float, **kw) -> float:
    """Run ``argv`` with output to ``log``; return seconds; fail with the log's tail if it fails."""
    t0 = time.monotonic()
    with log.open("wb") as sink:
        try:
            code = subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=timeout, **kw).returncode
        except subprocess.TimeoutExpired:
            code = f"timeout after {timeout:.0f} s"
    if code != 0:
        pytest.fail(f"{what} failed ({code}); {log}:\n{file_tail(log, 4000)}", pytrace=False)
    return time.monotonic() - t0


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    return [p for p in points if p == str(path) or p.startswith(f"{path}/")]


def _debian_mirror() -> str:
    """The first Debian archive URI this machine's apt uses (deb822 or one-line format); else deb.debian.org."""
    for src in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if src.is_file():
            for line in src.read_text().splitlines():
                words = line.split()
                if words[:1] == ["URIs:"] and len(words) > 1:
                    return words[1]
                if words[:1] == ["deb"] and len(words) > 2:
                    return next(w for w in words[1:] if "://" in w)
    return "http://deb.debian.org/debian"


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def timings(request):
    """Phase → seconds; written to ``CACHE/timings.json`` and shown on the terminal when the module ends."""
    t0 = time.monotonic()
    out: dict[str, float | str] = {}
    yield out
    out["total_s"] = round(time.monotonic() - t0, 1)
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "timings.json").write_text(json.dumps(out, indent=2))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # straight to the terminal, not into the captured output
            reporter.write_line(f"\ncontainer e2e timings (s): {json.dumps(out)}")


@pytest.fixture(scope="module")
def engine(timings):
    """A Docker engine for the CLI, ``build.sh`` and kfp's DockerRunner: ``DOCKER_HOST`` if it answers, else a
    private ``dockerd`` on ``CACHE/docker/docker.sock`` (stopped by its pid at the end). Yields DOCKER_HOST."""
    t0 = time.monotonic()
    if not shutil.which("docker"):
        pytest.fail("docker CLI not found: install Docker (Debian: apt-get install -y docker.io)", pytrace=False)
    current = os.environ.get("DOCKER_HOST")
    if current and _engine_answers(current) is None:
        timings["engine"] = f"DOCKER_HOST={current}"
        yield current
        return
    dockerd = shutil.which("dockerd")
    if not dockerd:
        pytest.fail(f"no working DOCKER_HOST ({current!r}) and no dockerd to start one: install Docker "
                    "(Debian: apt-get install -y docker.io) or point DOCKER_HOST at an engine", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail(f"no working DOCKER_HOST ({current!r}) and starting a private dockerd needs root (uid "
                    f"{os.geteuid()}): run as root or point DOCKER_HOST at an engine you may use", pytrace=False)
    d = CACHE / "docker"
    d.mkdir(parents=True, exist_ok=True)
    host = f"unix://{d / 'docker.sock'}"
    argv = [dockerd, "--host", host, "--data-root", str(d / "data"), "--exec-root", str(d / "exec"),
            "--pidfile", str(d / "dockerd.pid"), "--iptables=false", "--ip6tables=false", "--bridge=none"]
    svc = Service("dockerd", argv, dict(os.environ), d / "dockerd.log")
    try:
        svc.wait_until(lambda: _engine_answers(host), f"engine answering on {host}", timeout=90)
        timings["engine_start_s"] = round(time.monotonic() - t0, 1)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DOCKER_HOST", host)
            yield host
    finally:
        svc.stop(timeout=30)
        if svc.proc.returncode not in (0, -15):  # not a clean shutdown on SIGTERM: show why
            sys.stderr.write(f"dockerd exited with {svc.proc.returncode}; log tail:\n{svc.log_tail(4000)}\n")
        for point in reversed(_mounts_under(d / "exec")):  # dockerd leaves its netns bind mount behind
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@pytest.fixture(scope="module")
def step_images(engine, timings) -> dict[str, str]:
    """All images built by ``images/build.sh --registry local`` FROM the debootstrap base (made once)."""
    if _docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        timings["debootstrap_s"] = "reused"
    else:
        timings["debootstrap_s"] = round(_make_base_image(), 1)
    build_s = _run_logged(["bash", str(ROOT / "images" / "build.sh"), "--registry", REGISTRY, "--base", BASE_IMAGE],
                          CACHE / "build.log", "images/build.sh", timeout=2400, env=dict(os.environ))
    timings["build_s"] = round(build_s, 1)
    images = components.all_images(REGISTRY)
    sizes = {}
    for name, tag in images.items():
        sizes[name] = round(int(_docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()) / 1e9, 2)
    timings["image_sizes_gb"] = sizes
    return images


def _make_base_image() -> float:
    """debootstrap a minimal bookworm with python3 + venv into ``CACHE/rootfs`` and import it as BASE_IMAGE."""
    debootstrap = shutil.which("debootstrap")
    if not debootstrap:
        pytest.fail(f"{BASE_IMAGE} is missing and debootstrap is not installed (apt-get install -y debootstrap)",
                    pytrace=False)
    if os.geteuid() != 0:
        pytest.fail(f"{BASE_IMAGE} is missing and debootstrap needs root", pytrace=False)
    t0 = time.monotonic()
    rootfs = CACHE / "rootfs"
    if rootfs.exists():
        if _mounts_under(rootfs):  # never delete through a mount a failed debootstrap left behind
            pytest.fail(f"{rootfs} has mounts ({_mounts_under(rootfs)}): unmount them, then delete it", pytrace=False)
        shutil.rmtree(rootfs)
    _run_logged([debootstrap, "--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm",
                 str(rootfs), _debian_mirror()], CACHE / "debootstrap.log", "debootstrap", timeout=1200)
    if _mounts_under(rootfs):
        pytest.fail(f"debootstrap left mounts under {rootfs}: {_mounts_under(rootfs)}", pytrace=False)
    host_ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if host_ca.is_file():  # pip inside the builds may reach the registry only through this machine's TLS proxy
        shutil.copyfile(host_ca, rootfs / "etc/ssl/certs/ca-certificates.crt")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imp = subprocess.run([shutil.which("docker") or "docker", "import", "-", BASE_IMAGE], stdin=tar.stdout,
                         capture_output=True, text=True, timeout=600)
    tar.stdout.close()
    if tar.wait() != 0 or imp.returncode != 0:
        pytest.fail(f"importing {rootfs} as {BASE_IMAGE} failed: {imp.stderr[-2000:]}", pytrace=False)
    shutil.rmtree(rootfs)
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def e2e(step_images, timings, tmp_path_factory):
    """The tiny pipeline in the images, tracked into the mlflow server; yields what the tests inspect (the
    servers stay up until the module ends)."""
    from mdfnet import tracking
    from mdfnet.data.synthetic import generate
    from pipelines.run_local import run_local

    tmp = tmp_path_factory.mktemp("containers_e2e")
    t0 = time.monotonic()
    with no_proxy_for_loopback(), pytest.MonkeyPatch.context() as mp, \
            mlflow_with_s3(tmp, BUCKET, lambda: generate(tmp / "sources", n_studies=32, seed=0, image_size=80)) as svc:
        timings["services_and_sources_s"] = round(time.monotonic() - t0, 1)
        n_up = upload_tree(svc["s3"], tmp / "sources", BUCKET, "sources")
        for k, v in {**S3_CREDS, "AWS_ENDPOINT_URL": svc["s3_endpoint"], "OMP_NUM_THREADS": "1",
                     tracking.ENV_TRACKING_URI: svc["tracking_uri"], "MDFNET_GIT_SHA": HOST_SHA}.items():
            mp.setenv(k, v)
        for k in (tracking.ENV_RUN_ID, tracking.ENV_EXPERIMENT_ID, "MLFLOW_S3_ENDPOINT_URL"):
            mp.delenv(k, raising=False)
        since = time.time()
        t1 = time.monotonic()
        out = run_local(f"s3://{BUCKET}/sources", tmp / "w", grid=GRID, seeds=SEEDS, max_steps=3,
                        config_overrides=("train.epochs=1",), experiment="mdfnet-e2e",
                        registered_model="mdfnet-e2e", runner="docker", registry=REGISTRY)
        timings["pipeline_s"] = round(time.monotonic() - t1, 1)
        until = time.time()
        events = _docker("events", "--since", f"{since - 1:.3f}", "--until", f"{until + 1:.3f}", "--filter",
                         "type=container", "--filter", "event=start", "--format", "{{.Actor.Attributes.image}}")
        try:
            yield {"out": out, "client": tracking.configure(), "services": svc, "uploaded": n_up,
                   "started_images": events.stdout.split(), "pipeline_root": tmp / "w" / "kfp"}
        finally:
            import mlflow

            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)


def _runs(e2e) -> tuple[object, list]:
    from mdfnet import tracking

    client, out = e2e["client"], e2e["out"]
    runs = client.search_runs([out.experiment_id])
    parents = [r for r in runs if r.data.tags.get(tracking.TAG_ROLE) == "pipeline"]
    assert [p.info.run_id for p in parents] == [out.pipeline_run_id]
    return parents[0], [r for r in runs if r.data.tags.get(tracking.TAG_ROLE) == "cell"]


def _grid_cells() -> list[str]:
    from mdfnet.pipeline.grids import grid_cells, load_grids

    return [c["name"] for c in grid_cells(load_grids(ROOT / "pipelines" / "grids"), GRID)]


# ------------------------------------------------------------------------------------------ container tests
@in_containers
def test_pipeline_in_images_is_tracked_on_the_server(e2e):
    """One child run per tiny-grid cell, each FINISHED with finite metrics incl. final/val/ap; the pipeline run
    FINISHED, tagged with the step images it was compiled for; the champion alias on the registered model."""
    from mdfnet import champion, tracking

    client, out = e2e["client"], e2e["out"]
    assert out.tracking_uri == e2e["services"]["tracking_uri"]
    parent, cells = _runs(e2e)
    assert parent.info.status == "FINISHED"
    assert sorted(r.info.run_name for r in cells) == sorted(f"{c}-s{s}" for c in _grid_cells() for s in SEEDS)
    assert {r.data.tags[tracking.TAG_PARENT] for r in cells} == {parent.info.run_id}
    for r in cells:
        assert r.info.status == "FINISHED", r.info.run_name
        m = r.data.metrics
        assert {"train/loss_total", "val/ap", tracking.SELECTION_METRIC, "final/test/ap"} <= set(m), r.info.run_name
        assert all(math.isfinite(v) for v in m.values()), (r.info.run_name, m)
        assert 0.0 <= m[tracking.SELECTION_METRIC] <= 1.0
        assert r.data.params["train.epochs"] == "1" and r.data.params["seed"] == "0"
    version = mdfnet.__version__
    assert {k: v for k, v in parent.data.tags.items() if k.startswith("image.")} == {
        f"image.{step}": f"{REGISTRY}/mdfnet-{step}:{version}" for step in components.all_images()}
    champ = client.get_model_version_by_alias("mdfnet-e2e", champion.CHAMPION_ALIAS)
    assert out.champion_version == champ.version == "1"
    assert champ.run_id in {r.info.run_id for r in cells}
    assert parent.data.tags["mdfnet.champion_version"] == "1"
    assert parent.data.params["runs"] == str(len(cells))


@in_containers
def test_artifacts_are_objects_in_the_bucket(e2e):
    """The pipeline read its sources from the bucket and everything it logged went through the server into the
    same bucket: per cell run the evaluation (metrics.json equal to the run's final metrics) and config, its
    MLflow model (MLmodel + weights); the pipeline run's join/preprocessing reports and comparison table."""
    from mdfnet import tracking

    client, svc = e2e["client"], e2e["services"]
    objects = bucket_objects(svc["s3"], BUCKET)
    assert sum(k.startswith("sources/") for k in objects) == e2e["uploaded"] > 0
    parent, cells = _runs(e2e)
    logged = {m.source_run_id: m.model_id for m in client.search_logged_models(
        experiment_ids=[e2e["out"].experiment_id])}
    assert set(logged) == {r.info.run_id for r in cells}
    for r in cells:
        rid = r.info.run_id
        assert r.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied: the steps never wrote S3 directly
        mine = {k.split(f"/{rid}/artifacts/", 1)[1] for k in objects if f"/{rid}/artifacts/" in k}
        assert {"config/config.yaml", "evaluation/metrics.json", "evaluation/predictions_test.json"} <= mine, mine
        key = next(k for k in objects if k.endswith(f"/{rid}/artifacts/evaluation/metrics.json"))
        stored = json.loads(svc["s3"].get_object(Bucket=BUCKET, Key=key)["Body"].read())
        assert stored["metrics"][tracking.SELECTION_METRIC] == pytest.approx(r.data.metrics[tracking.SELECTION_METRIC])
        model = {k.rsplit("/artifacts/", 1)[1]: size for k, size in objects.items()
                 if f"/models/{logged[rid]}/artifacts/" in k}
        weights = [size for name, size in model.items() if name.endswith((".pth", ".pt", ".pkl"))]
        assert "MLmodel" in model and weights and max(weights) > 1e5, model
    pid = parent.info.run_id
    reports = {k.split(f"/{pid}/artifacts/", 1)[1] for k in objects if f"/{pid}/artifacts/" in k}
    assert {"comparison.md", "reports/exclusions.csv", "reports/preprocessing.json"} <= reports, reports


@in_containers
def test_champion_is_served_from_the_serving_image(e2e, tmp_path):
    """``mdfnet-serve`` runs ``mlflow models serve`` of ``models:/mdfnet-e2e@champion`` as the Helm chart runs it
    (uid 1000, read-only root filesystem, writable /tmp and home only), fetching the model through the tracking
    server; it answers a study with detections in the original pixels and a bad one with HTTP 400."""
    import base64
    import io
    import urllib.error
    import urllib.request

    import numpy as np
    from PIL import Image
    from servers import free_port

    image, port = components.all_images(REGISTRY)[components.SERVING_IMAGE], free_port()
    name = f"mdfnet-serve-e2e-{port}"
    _docker("run", "-d", "--rm", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
            "--tmpfs", "/home/mdfnet", "-e", f"MLFLOW_TRACKING_URI={e2e['services']['tracking_uri']}",
            "-e", "NO_PROXY=127.0.0.1,localhost", "-e", "MLFLOW_DISABLE_TELEMETRY=true", image,
            "mlflow", "models", "serve", "-m", "models:/mdfnet-e2e@champion", "--env-manager", "local",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1")
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            state = _docker("inspect", "--format", "{{.State.Running}}", name, check=False).stdout.strip()
            if state != "true" or time.monotonic() - t0 > 180:
                pytest.fail(f"serving container not ready ({state}):\n{_docker('logs', name, check=False).stderr[-3000:]}")
            time.sleep(1)
        buf = io.BytesIO()
        Image.fromarray(np.tile(np.linspace(30, 220, 120).astype(np.uint8), (90, 1))).save(buf, "PNG")
        study = {"study": "e2e", "image": base64.b64encode(buf.getvalue()).decode(), "age": 70, "gender": "M",
                 "temperature": 101.2, "heartrate": 104, "resprate": 24, "o2sat": 91, "sbp": 128, "dbp": 76,
                 "pain": "0", "acuity": 2}

        def post(record: dict) -> tuple[int, dict]:
            req = urllib.request.Request(f"{url}/invocations", json.dumps({"dataframe_records": [record]}).encode(),
                                         {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read() or b"{}")

        status, body = post(study)
        assert status == 200, body
        for det in body["predictions"]:
            assert 0 <= det["xmin"] <= det["xmax"] <= 120 and 0 <= det["ymin"] <= det["ymax"] <= 90, det
        status, body = post({**study, "sbp": 900})
        assert status == 400 and "sbp=900.0 is outside the plausible range" in body["message"], body
    finally:
        _docker("rm", "-f", name, check=False)

@in_containers
def test_steps_ran_in_the_step_images(e2e):
    """Proof that the tasks ran in containers of the built images, not in this Python: the engine started one
    container per task, each from the task's image; the pipeline run carries the commit baked into the images
    (this process's MDFNET_GIT_SHA differs and is not passed on); the task outputs belong to the images' user."""
    started = e2e["started_images"]
    img = components.all_images(REGISTRY)
    n_cells = len(_grid_cells()) * len(SEEDS)
    per_loop_item = {"train", "evaluate"}  # the ParallelFor's tasks; every other step runs once
    per_task = {row.image: n_cells if row.image in per_loop_item else 1 for row in components.step_images().values()}
    assert sorted(started) == sorted(img[step] for step, n in per_task.items() for _ in range(n)), started

    config = json.loads(_docker("image", "inspect", "--format", "{{json .Config}}", img["expand-grid"]).stdout)
    baked = dict(e.split("=", 1) for e in config["Env"])["MDFNET_GIT_SHA"]
    assert len(baked) == 40 and baked != HOST_SHA
    parent, _ = _runs(e2e)
    assert parent.data.tags["mdfnet.git_sha"] == baked

    uid = int(str(config["User"]).split(":")[0])
    run_infos = sorted(e2e["pipeline_root"].rglob("run.json"))
    assert len(run_infos) == n_cells
    assert {p.stat().st_uid for p in run_infos} == {uid} == {1000}


# ------------------------------------------------------------------------------------------ unit tests (make test)
def test_container_environment_passes_only_set_tracking_and_s3_names():
    from pipelines.run_local import container_environment

    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5001", "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "s",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_DEFAULT_REGION": "us-east-1", "OMP_NUM_THREADS": "1",
           "MLFLOW_TRACKING_TOKEN": "", "NO_PROXY": "127.0.0.1", "HOME": "/root", "PATH": "/usr/bin",
           "MDFNET_GIT_SHA": "abc", "AWS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt", "MLFLOW_RUN_ID": "r1"}
    assert container_environment(env) == {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5001", "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_DEFAULT_REGION": "us-east-1", "OMP_NUM_THREADS": "1",
        "NO_PROXY": "127.0.0.1"}
    assert container_environment({}) == {}


def test_docker_runner_needs_inputs_the_containers_can_reach(tmp_path):
    from pipelines.run_local import check_container_inputs

    root = tmp_path / "w" / "kfp"
    check_container_inputs("http://127.0.0.1:5000", "s3://bucket/sources", root)
    check_container_inputs("https://mlflow.example", str(root / "sources"), root)
    with pytest.raises(ValueError, match="tracking URI 'sqlite:///.*mlflow.db' is a store on this machine"):
        check_container_inputs(f"sqlite:///{tmp_path}/mlflow.db", "s3://bucket/sources", root)
    with pytest.raises(ValueError, match="source .*/elsewhere' is not visible in the containers"):
        check_container_inputs("http://127.0.0.1:5000", str(tmp_path / "elsewhere"), root)


def test_run_local_rejects_an_unknown_runner(tmp_path):
    from pipelines.run_local import run_local

    with pytest.raises(ValueError, match="runner 'k8s': expected one of \\('subprocess', 'docker'\\)"):
        run_local(tmp_path, tmp_path / "w", runner="k8s")
    assert not (tmp_path / "w").exists()


def test_components_are_built_for_the_registry_asked():
    """No import-time state: the same process builds the pipeline for two registries, each with its images."""
    from pipelines.pipeline import CompileOptions, build_pipeline

    def images_of(registry: str) -> set[str]:
        from google.protobuf.json_format import MessageToDict

        spec = MessageToDict(build_pipeline(CompileOptions(registry=registry, secret_name="")).pipeline_spec)
        return {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}

    def step_images(registry: str) -> set[str]:  # every image but the serving one, which no task runs
        return {ref for name, ref in components.all_images(registry).items() if name != components.SERVING_IMAGE}

    assert images_of("reg.example:5000/team") == step_images("reg.example:5000/team")
    assert images_of("other") == step_images("other")
    assert components.build_components("r/")["train"].component_spec.implementation.container.image == \
        f"r/mdfnet-train:{mdfnet.__version__}"
