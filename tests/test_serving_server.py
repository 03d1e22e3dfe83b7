"""The champion in use: a tiny model logged by the train step's code (pyfunc, models-from-code), registered as
``champion``, served by a real ``mlflow models serve`` process on loopback; ``mdfnet predict`` and the evaluation
recipe give the same detections for the same input.

Every side of every comparison runs on the CPU, also on a machine with a GPU: the reference predictor is moved
to the CPU explicitly, and ``$MDFNET_SERVING_DEVICE=cpu`` (set by ``served`` for the module, and in the
server's environment) pins the served model and the in-process ``mdfnet predict`` that would otherwise pick
CUDA when it is available (``resolve_device``'s ``auto``)."""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from servers import Service, binary, free_port, no_proxy_for_loopback

from mdfnet.data import schema
from mdfnet.serving.predictor import DEVICE_ENV

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

MODEL = "mdfnet-serve-test"
TINY = ["model.backbone=mobilenet_v3_small", "model.mask_head_channels=16", "train.batch_size=2",
        "train.epochs=1", "train.num_workers=0", "train.device=cpu", "train.progress=false", "train.lr=0.01",
        "model.use_mask=false", "model.box_score_thresh=0.0", "model.anchor_sizes=[4,8,16,32,64]"]
"""Score threshold 0: every image keeps its 10 detections, so the comparisons below compare many boxes."""
BOX = ["xmin", "ymin", "xmax", "ymax"]


def _requests(joined: Path, preprocessed: Path, split: str = "test") -> tuple[list[dict], pd.DataFrame]:
    """One request per reading of ``split``: the original JPEG and the raw source values (before cleaning)."""
    from mdfnet.data.join import image_root

    inst = pd.read_parquet(preprocessed / "instances.parquet")
    inst = inst[inst["split"] == split].reset_index(drop=True)
    root = image_root(joined)
    records = []
    for _, r in inst.iterrows():
        raw = {f: (None if pd.isna(v := r[f"raw_{f}"]) else (v.item() if hasattr(v, "item") else v))
               for f in schema.ALL_FEATURES}
        records.append({"study": r["reflacx_id"], "image": base64.b64encode((root / r["image_path"]).read_bytes())
                        .decode(), **raw})
    return records, inst


def _post(url: str, payload: dict | bytes) -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def served(tiny_joined, tiny_preprocessed, tmp_path_factory):
    """Train 2 steps, log + register as champion (sqlite store), serve ``models:/NAME@champion``; served,
    in-process and reference models all on the CPU (module docstring)."""
    from mdfnet import registry, tracking
    from mdfnet.serving.predictor import Predictor
    from mdfnet.serving.pyfunc import log_served_model
    from mdfnet.training import config_from_sources, train

    tmp = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp, no_proxy_for_loopback():
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv(DEVICE_ENV, "cpu")  # the in-process pyfunc loads and `mdfnet predict` of the tests below
        client = tracking.configure()
        result = train(config_from_sources(None, TINY), tiny_preprocessed, tmp / "run", max_steps=2)
        run_id = client.create_run(tracking.get_or_create_experiment(client, "serving")).info.run_id
        predictor = Predictor.from_checkpoint(result.last_checkpoint).to("cpu")
        model_uri = log_served_model(client, run_id, predictor)
        client.log_metric(run_id, tracking.SELECTION_METRIC, 0.1)
        registry.register_champion(client, MODEL, model_uri, run_id, 0.1)
        port = free_port()
        # mlflow starts uvicorn by name: the venv's bin must be on PATH (it is in the images)
        # the server computes with this process's thread count (one_torch_thread): other float sums would rank
        # the near-equal scores of a 2-step model differently, and the comparisons below are exact to 1e-5
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true", DEVICE_ENV: "cpu",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        argv = [binary("mlflow", "mlflow>=3.17,<4"), "models", "serve", "-m", f"models:/{MODEL}@champion",
                "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        server = Service("mlflow models serve", argv, env, tmp / "serve.log")
        try:
            server.wait_http(f"http://127.0.0.1:{port}/ping", timeout=120)
            yield {"url": f"http://127.0.0.1:{port}", "server": server, "run_dir": tmp / "run",
                   "checkpoint": result.last_checkpoint, "predictor": predictor, "uri": uri, "tmp": tmp,
                   "env": env}
        finally:
            server.stop()


def test_every_compared_model_is_on_the_cpu_even_when_cuda_is_available(served, monkeypatch):
    """The pins of the module docstring, checked without a GPU: with ``torch.cuda.is_available`` forced to
    True, the champion loaded as ``mdfnet predict`` and the server load it (pyfunc ``load_context``) is on the
    CPU, as is the reference predictor; the server process gets ``MDFNET_SERVING_DEVICE=cpu``."""
    import mlflow
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    mlflow.set_tracking_uri(served["uri"])
    loaded = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").unwrap_python_model().predictor
    for model in (loaded.model, served["predictor"].model):
        assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert served["env"][DEVICE_ENV] == os.environ[DEVICE_ENV] == "cpu"


def test_served_champion_answers_with_boxes_inside_the_image(served, tiny_joined, tiny_preprocessed):
    records, inst = _requests(tiny_joined, tiny_preprocessed)
    status, body = _post(f"{served['url']}/invocations", {"dataframe_records": records[:1]})
    assert status == 200, body
    det = pd.DataFrame(body["predictions"])
    assert list(det.columns) == ["study", "label", "score", *BOX] and len(det) > 0
    assert set(det["study"]) == {records[0]["study"]} and set(det["label"]) <= set(schema.CLASSES)
    width, height = int(inst.loc[0, "image_width"]), int(inst.loc[0, "image_height"])
    assert (det["xmin"] >= 0).all() and (det["xmax"] <= width + 1e-6).all()
    assert (det["ymin"] >= 0).all() and (det["ymax"] <= height + 1e-6).all()
    assert ((det["xmax"] >= det["xmin"]) & (det["ymax"] >= det["ymin"])).all()
    assert det["score"].is_monotonic_decreasing and det["score"].between(0, 1).all()


def test_bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving(served, tiny_joined, tiny_preprocessed,
                                                                            monkeypatch):
    records, _ = _requests(tiny_joined, tiny_preprocessed)
    good = records[0]
    no_age = {k: v for k, v in good.items() if k != "age"}
    big = np.zeros((2, 20_000), np.uint8)  # 20,000 px wide: beyond the 16,384 px limit, yet a tiny PNG
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "PNG")
    cases = {
        "missing field": ({"dataframe_records": [no_age]}, "age"),
        "wrong type": ({"dataframe_records": [{**good, "heartrate": [88]}]}, "heartrate"),
        "implausible value": ({"dataframe_records": [{**good, "o2sat": 250}]}, "o2sat=250.0 is outside"),
        "undecodable image": ({"dataframe_records": [{**good, "image": base64.b64encode(b"garbage").decode()}]},
                              "cannot decode image"),
        "not base64": ({"dataframe_records": [{**good, "image": "%%%"}]}, "not valid base64"),
        "oversize image": ({"dataframe_records": [{**good, "image": base64.b64encode(buf.getvalue()).decode()}]},
                           "20000x2 px"),
        "not json": (b"{", ""),
    }
    for name, (payload, needle) in cases.items():
        status, body = _post(f"{served['url']}/invocations", payload)
        assert 400 <= status < 500, (name, status, body)
        assert needle in body.get("message", ""), (name, body)
    assert served["server"].proc.poll() is None
    status, body = _post(f"{served['url']}/invocations", {"dataframe_records": [good]})
    assert status == 200 and len(body["predictions"]) > 0


def test_served_cli_and_evaluation_agree(served, tiny_joined, tiny_preprocessed, tmp_path):
    """The same test-split readings: HTTP answer == ``mdfnet predict`` (registry URI and checkpoint) == the
    evaluate step's predictions (``score_split``, cached pixels scaled back to the original image), to 1e-5."""
    from typer.testing import CliRunner

    from mdfnet.cli import app
    from mdfnet.training.inference import score_split

    records, inst = _requests(tiny_joined, tiny_preprocessed)
    status, body = _post(f"{served['url']}/invocations", {"dataframe_split": pd.DataFrame(records).to_dict("split")})
    assert status == 200, body
    http = pd.DataFrame(body["predictions"])

    scored = score_split(served["predictor"].model, served["predictor"].cfg, tiny_preprocessed, "test")
    size = served["predictor"].image_size
    rows = []
    for d in scored.dets:
        i = d["image_id"] - 1
        sx, sy = inst.loc[i, "image_width"] / size, inst.loc[i, "image_height"] / size
        x, y, w, h = d["bbox"]
        rows.append((inst.loc[i, "reflacx_id"], schema.CLASSES[d["category_id"] - 1], d["score"],
                     x * sx, y * sy, (x + w) * sx, (y + h) * sy))
    evaluated = pd.DataFrame(rows, columns=http.columns)
    per_image = served["predictor"].cfg.model.box_detections_per_img
    assert len(http) == len(evaluated) == per_image * len(records)
    np.testing.assert_allclose(http[["score", *BOX]].to_numpy(), evaluated[["score", *BOX]].to_numpy(), atol=1e-5)
    assert http[["study", "label"]].equals(evaluated[["study", "label"]])

    image = tmp_path / "study.jpg"
    image.write_bytes(base64.b64decode(records[1]["image"]))
    clinical = tmp_path / "clinical.json"
    clinical.write_text(json.dumps({k: v for k, v in records[1].items() if k not in ("image", "study")}))
    ours = http[http["study"] == records[1]["study"]].reset_index(drop=True)
    for model in (f"models:/{MODEL}@champion", str(served["run_dir"]), str(served["checkpoint"])):
        res = CliRunner().invoke(app, ["predict", "--model", model, "--image", str(image), "--clinical",
                                       str(clinical), "--tracking-uri", served["uri"],
                                       "--out", str(tmp_path / "drawn.png")])
        assert res.exit_code == 0, res.output
        cli = pd.DataFrame(json.loads(res.stdout))
        np.testing.assert_allclose(cli[["score", *BOX]].to_numpy(), ours[["score", *BOX]].to_numpy(), atol=1e-5)
        assert cli["label"].tolist() == ours["label"].tolist()
    from PIL import Image

    from mdfnet.serving.draw import MIN_SIDE

    width, height = int(inst.loc[1, "image_width"]), int(inst.loc[1, "image_height"])
    k = max(1, MIN_SIDE // max(width, height))  # small images are enlarged by a whole factor for legible labels
    with Image.open(tmp_path / "drawn.png") as im:
        assert im.size == (width * k, height * k) and im.mode == "RGB" and k > 1
        pixels = np.asarray(im)
    colour = {"Enlarged cardiac silhouette": (230, 25, 75), "Atelectasis": (60, 180, 75),
              "Pleural abnormality": (255, 225, 25), "Consolidation": (0, 130, 200), "Pulmonary edema": (245, 130, 48)}
    top = ours.iloc[0]  # the best box's outline is drawn in its class colour at its scaled corner
    x, y = int(round(top["xmin"] * k)), int(round(top["ymax"] * k))
    patch = pixels[max(0, y - 2):y + 3, max(0, x - 2):x + 3].reshape(-1, 3)
    assert any(tuple(px) == colour[top["label"]] for px in patch), (top.to_dict(), patch)


def test_cli_errors_name_the_problem(served, tiny_joined, tiny_preprocessed, tmp_path):
    from typer.testing import CliRunner

    from mdfnet.cli import app

    records, _ = _requests(tiny_joined, tiny_preprocessed)
    image = tmp_path / "study.jpg"
    image.write_bytes(base64.b64decode(records[0]["image"]))
    values = {k: v for k, v in records[0].items() if k not in ("image", "study")}

    def run(clinical: dict, img: Path = image) -> str:
        path = tmp_path / "clinical.json"
        path.write_text(json.dumps(clinical))
        res = CliRunner().invoke(app, ["predict", "--model", str(served["checkpoint"]), "--image", str(img),
                                       "--clinical", str(path)])
        assert res.exit_code == 2, res.output
        return res.output

    assert "missing field(s) ['acuity']" in run({k: v for k, v in values.items() if k != "acuity"})
    assert "resprate=500.0 is outside the plausible range 4-80" in run({**values, "resprate": 500})
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(image.read_bytes()[:200])
    assert "cannot decode image" in run(values, bad)
    assert "cannot read image" in run(values, tmp_path / "absent.jpg")


def _pandas_frames(records: list[dict]) -> dict[str, pd.DataFrame]:
    """The same readings as pandas reads source tables: ``float`` (float64 numbers, ``NaN`` gaps), ``int``
    (integral gap-free columns int64, as pandas reads MIMIC's ``anchor_age``) and ``str`` (numbers as text, gaps
    ``""`` or ``None``); pain as text in all three. Row 0 has gaps in heartrate and pain."""
    from mdfnet.serving.inputs import FIELDS, TEXT_FIELDS

    numeric = [f for f in FIELDS if f not in TEXT_FIELDS]
    base = pd.DataFrame(records)
    floats = base.copy()
    for f in numeric:
        floats[f] = pd.to_numeric(base[f]).astype("float64")
    floats["age"] = floats["age"].round()
    floats.loc[0, "heartrate"] = np.nan
    floats["pain"] = floats["pain"].astype(object)
    floats.loc[0, "pain"] = None
    ints = floats.copy()
    for f in numeric:
        if floats[f].notna().all() and (floats[f] == floats[f].round()).all():
            ints[f] = floats[f].astype("int64")
    texts = floats.copy()
    for f in numeric:
        texts[f] = [("" if np.isnan(v) else str(v)) for v in floats[f]]
    texts.loc[0, "heartrate"] = None
    assert ints["age"].dtype == np.int64 and floats["temperature"].dtype == np.float64
    return {"float": floats, "int": ints, "str": texts}


def _split(frame: pd.DataFrame) -> dict:
    """``frame`` as MLflow's ``dataframe_split`` JSON (gaps as ``null``)."""
    return {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}


def _same_detections(got: pd.DataFrame, want: pd.DataFrame, what: str) -> None:
    assert len(got) == len(want) > 0, what
    np.testing.assert_allclose(got[["score", *BOX]].to_numpy(), want[["score", *BOX]].to_numpy(), atol=1e-5,
                               err_msg=what)
    assert got["study"].astype(str).tolist() == want["study"].tolist(), what
    assert got["label"].tolist() == want["label"].tolist(), what


def test_pyfunc_takes_a_dataframe_as_pandas_reads_it_in_python_cli_and_http(served, tiny_joined,
                                                                           tiny_preprocessed, tmp_path):
    """Issue 21: int64, float, numbers as text and NaN/None columns give the same detections in
    ``load_model(...).predict``, ``mlflow models predict -i studies.csv`` / ``.json`` and over HTTP, and an
    implausible value is refused in each path naming row, field, value and range."""
    import subprocess

    import mlflow
    from mlflow.exceptions import MlflowException

    records, _ = _requests(tiny_joined, tiny_preprocessed)
    frames = _pandas_frames(records)
    bad = frames["int"].copy()
    bad["o2sat"] = bad["o2sat"].astype(object)
    bad.loc[1, "o2sat"] = 250
    refusal = "row 1: o2sat=250.0 is outside the plausible range 50-100"

    # the CLI in subprocesses (started first: they run while the in-process checks below do)
    frames["int"].to_csv(tmp_path / "studies.csv", index=False)
    (tmp_path / "studies.json").write_text(json.dumps(_split(frames["int"])))
    bad.to_csv(tmp_path / "bad.csv", index=False)
    mlflow_bin = binary("mlflow", "mlflow>=3.17,<4")
    procs = {}
    try:
        for name, kind in (("studies.csv", "csv"), ("studies.json", "json"), ("bad.csv", "csv")):
            argv = [mlflow_bin, "models", "predict", "-m", f"models:/{MODEL}@champion", "-i",
                    str(tmp_path / name), "-t", kind, "-o", str(tmp_path / f"{name}.out"), "--env-manager", "local"]
            procs[name] = subprocess.Popen(argv, env=served["env"], stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True)

        mlflow.set_tracking_uri(served["uri"])
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
        want = model.predict(frames["float"])
        assert set(want["study"]) == {r["study"] for r in records}
        for kind in ("int", "str"):
            _same_detections(model.predict(frames[kind]), want, f"python {kind}")
        for kind in ("int", "str"):
            status, body = _post(f"{served['url']}/invocations", _split(frames[kind]))
            assert status == 200, (kind, body)
            _same_detections(pd.DataFrame(body["predictions"]), want, f"http {kind}")
        with pytest.raises(MlflowException, match=refusal):
            model.predict(bad)
        text_bad = frames["str"].copy()
        text_bad.loc[1, "o2sat"] = "250"
        with pytest.raises(MlflowException, match=refusal):  # the value as parsed: 250.0
            model.predict(text_bad)
        status, body = _post(f"{served['url']}/invocations", _split(bad))
        assert status == 400 and refusal in body.get("message", ""), body

        outputs = {name: p.communicate(timeout=300)[0] for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for name in ("studies.csv", "studies.json"):
        assert procs[name].returncode == 0, outputs[name]
        got = json.loads((tmp_path / f"{name}.out").read_text())
        _same_detections(pd.DataFrame(got["predictions"] if isinstance(got, dict) else got), want, name)
    assert procs["bad.csv"].returncode != 0 and refusal in outputs["bad.csv"], outputs["bad.csv"]


def test_load_benchmark_smoke_against_the_served_champion(served, tiny_joined, tiny_preprocessed, tmp_path,
                                                          monkeypatch):
    """``benchmarks/bench_serve.py`` (issue 25) at smoke size against the running server (``--url``, ``--pid``):
    a row per level with the issue's fields, every 4th request invalid and answered 400, the others 200, the
    server's memory and CPU read."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_serve

    records, _ = _requests(tiny_joined, tiny_preprocessed)
    (tmp_path / "study.jpg").write_bytes(base64.b64decode(records[0]["image"]))
    (tmp_path / "clinical.json").write_text(json.dumps({k: v for k, v in records[0].items()
                                                        if k not in ("image", "study")}))
    out = tmp_path / "serve.json"
    with no_proxy_for_loopback():
        bench_serve.main(["--url", served["url"], "--pid", str(served["server"].proc.pid), "--image",
                          str(tmp_path / "study.jpg"), "--clinical", str(tmp_path / "clinical.json"), "--requests",
                          "12", "--concurrency", "1,3", "--warmup", "2", "--invalid-every", "4", "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [r["concurrency"] for r in rows] == [1, 3]
    for r in rows:
        assert {"concurrency", "requests", "rps", "p50_ms", "p95_ms", "p99_ms", "codes", "rss_before_mb",
                "rss_after_mb"} <= set(r)
        assert r["requests"] == 12 and r["codes"] == {"200": 9, "400": 3} and r["errors"] == []
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] and r["rps"] > 0
        assert r["rss_before_mb"] > 100 and r["rss_after_mb"] > 100 and r["server_cpu_ms"] > 0


def test_load_benchmark_verdict_and_loopback_only(monkeypatch):
    """The benchmark's targets (issue 25) on constructed rows, and its refusal of anything but 127.0.0.1."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_serve import Row, parse, verdict

    def row(c, rps, p50, p99, rss=(1000.0, 1010.0)):
        return Row(c, 100, rps, p50, p50, p99, {"200": 90, "400": 10}, *rss)

    assert verdict([row(1, 27.0, 37.0, 41.0), row(8, 30.0, 250.0, 290.0)]) == []
    missed = verdict([row(1, 27.0, 37.0, 41.0), row(8, 18.0, 400.0, 680.0, (1064.0, 1128.0))])
    assert missed == ["8 client(s): RSS 1064.0 -> 1128.0 MB (> 5% growth)",
                      "8 clients: 18.0 req/s < 1 client's 27.0",
                      "8 clients: p99 680.0 ms > 8 x 1 client's p50 37.0 ms"]
    with pytest.raises(SystemExit):
        parse(["--url", "http://10.0.0.5:8080", "--image", "a", "--clinical", "b"])
    with pytest.raises(SystemExit):
        parse(["--model", "models:/m@champion", "--url", "http://127.0.0.1:1"])
    assert parse(["--model", "models:/m@champion", "--concurrency", "1,8"]).concurrency == [1, 8]
