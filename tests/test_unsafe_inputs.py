"""Ids and keys that would leave the data root are refused: a REFLACX or dicom id that is not a plain name is an
itemised exclusion of the join; an S3 key escaping the download folder stops the fetch; an unreachable S3
endpoint is retried with backoff, then named in a clear error; an S3 server stopped and restarted during the join's
download is waited for."""

from __future__ import annotations

import threading
from pathlib import Path

import boto3
import pandas as pd
import pytest
from conftest import tiny_sources
from moto import mock_aws
from servers import free_port, upload_tree

from mdfnet.data import schema
from mdfnet.pipeline.sources import S3_MAX_ATTEMPTS_ENV, StepError, fetch_source


def test_ids_that_are_not_plain_names_are_excluded(tmp_path):
    from mdfnet.data.join import R_UNSAFE_ID, join

    src = tiny_sources(tmp_path / "src", n=8)
    meta_path = src / schema.reflacx_metadata_path(1)
    meta = pd.read_csv(meta_path)
    meta.loc[0, "id"] = "../../../etc"
    meta.loc[1, "dicom_id"] = "../escape"
    meta.to_csv(meta_path, index=False)
    res = join(src, tmp_path / "joined")
    assert res.exclusions[R_UNSAFE_ID] == 2 and res.n_kept + res.n_excluded == res.n_input
    excluded = pd.read_parquet(tmp_path / "joined" / "excluded.parquet")
    assert set(excluded.loc[excluded["reason"] == R_UNSAFE_ID, "reflacx_id"]) >= {"../../../etc"}
    assert not (tmp_path.parent / "etc").exists()


def test_s3_keys_escaping_the_download_folder_are_refused(tmp_path, fake_aws):
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bkt")
        s3.put_object(Bucket="bkt", Key="src/ok.csv", Body=b"a\n1\n")
        s3.put_object(Bucket="bkt", Key="src/../../outside.csv", Body=b"x")
        with pytest.raises(StepError, match=r"s3://bkt/src/\.\./\.\./outside\.csv: the key leaves the download folder"):
            fetch_source("s3://bkt/src", tmp_path / "dl")
    assert not (tmp_path / "outside.csv").exists()


def _watched_s3(monkeypatch, after_get=None) -> dict[str, int]:
    """Make the step's S3 client count its attempts (``attempts``; ``refused``: those that got no answer) and call
    ``after_get(n)`` after the n-th answered GetObject."""
    from mdfnet.pipeline import sources

    seen = {"attempts": 0, "refused": 0, "gets": 0}
    real_client = sources.s3_client

    def answered(exception=None, **_):
        seen["attempts"] += 1
        seen["refused"] += exception is not None

    def got(**_):
        seen["gets"] += 1
        if after_get is not None:
            after_get(seen["gets"])

    def client():
        c = real_client()
        c.meta.events.register("response-received.s3.*", answered)
        c.meta.events.register("after-call.s3.GetObject", got)
        return c

    monkeypatch.setattr(sources, "s3_client", client)
    return seen


def test_unreachable_s3_is_retried_then_named(tmp_path, monkeypatch, fake_aws):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for k, v in {"AWS_ENDPOINT_URL": endpoint, S3_MAX_ATTEMPTS_ENV: "3"}.items():
        monkeypatch.setenv(k, v)
    seen = _watched_s3(monkeypatch)
    with pytest.raises(StepError, match=rf"S3 at {endpoint} failed after retries: EndpointConnectionError"):
        fetch_source("s3://bkt/src", tmp_path / "dl")
    assert seen == {"attempts": 3, "refused": 3, "gets": 0}  # $MDFNET_S3_MAX_ATTEMPTS attempts, then the error

def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.integration
def test_join_from_s3_outlives_the_server_stopped_and_restarted(tmp_path, monkeypatch, seaweed_env):
    """The S3 endpoint is killed in the middle of the join's download and comes back 0.5 s later on the same
    store: the default retries (backoff) wait for it, and the join equals the join of the local folder."""
    from mdfnet.pipeline import steps

    store = seaweed_env
    src = tiny_sources(tmp_path / "src", n=8)
    store.s3.create_bucket(Bucket="outage")
    n_files = upload_tree(store.s3, src, "outage", "mimic")
    restart = threading.Timer(0.5, store.start_endpoint)

    def outage(n_got: int) -> None:
        if n_got == 3:  # the pod's S3 goes away in the middle of the download …
            store.stop_endpoint()
            restart.start()  # … and is back 0.5 s later (+ its start-up), same store

    seen = _watched_s3(monkeypatch, after_get=outage)
    res = steps.join_step("s3://outage/mimic", tmp_path / "joined", download_dir=tmp_path / "dl")
    restart.join()
    assert seen["refused"] >= 1  # the endpoint really was away: attempts were refused, and retried
    assert seen["gets"] >= n_files  # (a body cut off mid-stream is fetched again)
    assert _files(tmp_path / "dl") == _files(src)
    local = steps.join_step(str(src), tmp_path / "joined_local")
    assert {k: res[k] for k in ("n_input", "n_kept", "n_boxes", "exclusions")} \
        == {k: local[k] for k in ("n_input", "n_kept", "n_boxes", "exclusions")}
    for table in ("instances.parquet", "boxes.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "joined" / table),
                                      pd.read_parquet(tmp_path / "joined_local" / table))
