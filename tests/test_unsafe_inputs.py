"""Ids and keys that would leave the data root are refused: a REFLACX or dicom id that is not a plain name is an
itemised exclusion of the join; an S3 key escaping the download folder stops the fetch; an unreachable S3
endpoint is retried with backoff, then named in a clear error."""

from __future__ import annotations

import time

import boto3
import pandas as pd
import pytest
from conftest import tiny_sources
from moto import mock_aws
from servers import free_port

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


def test_unreachable_s3_is_retried_then_named(tmp_path, monkeypatch, fake_aws):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for k, v in {"AWS_ENDPOINT_URL": endpoint, S3_MAX_ATTEMPTS_ENV: "3"}.items():
        monkeypatch.setenv(k, v)
    t0 = time.monotonic()
    with pytest.raises(StepError, match=rf"S3 at {endpoint} failed after retries: EndpointConnectionError"):
        fetch_source("s3://bkt/src", tmp_path / "dl")
    assert time.monotonic() - t0 > 0.2  # it waited between attempts (exponential backoff with jitter)
