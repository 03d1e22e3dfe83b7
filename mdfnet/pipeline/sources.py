"""Where the pipeline reads its sources: a local folder, or every object under ``s3://bucket/prefix``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse

from mdfnet.pipeline.errors import StepError

log = logging.getLogger(__name__)

S3_MAX_ATTEMPTS_ENV = "MDFNET_S3_MAX_ATTEMPTS"


def s3_endpoint() -> str | None:
    """The S3 endpoint of the environment: ``AWS_ENDPOINT_URL``, else ``MLFLOW_S3_ENDPOINT_URL``, else None (AWS)."""
    return os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None


def s3_client():
    """boto3 S3 client for :func:`s3_endpoint`, with retries and exponential backoff (standard mode;
    ``$MDFNET_S3_MAX_ATTEMPTS``, default 8 attempts) and short connect timeouts, so an endpoint that is briefly
    away is waited for, not failed on."""
    import boto3
    from botocore.config import Config

    attempts = int(os.environ.get(S3_MAX_ATTEMPTS_ENV) or 8)
    return boto3.client("s3", endpoint_url=s3_endpoint(), config=Config(
        retries={"total_max_attempts": attempts, "mode": "standard"}, connect_timeout=5, read_timeout=60))


def _download_prefix(s3, bucket: str, prefix: str, dest: Path) -> int:
    """Every object under ``prefix`` into ``dest``; a key that would land outside ``dest`` is refused."""
    root, n = dest.resolve(), 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.endswith("/"):
                continue
            target = (dest / key[len(prefix):]).resolve()
            if not target.is_relative_to(root):
                raise StepError(f"s3://{bucket}/{key}: the key leaves the download folder; refused")
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(target))
            n += 1
    return n


def fetch_source(uri: str, dest: str | Path) -> Path:
    """Local folder → itself; ``s3://bucket/prefix`` → every object under the prefix downloaded to ``dest``.

    The S3 endpoint is ``AWS_ENDPOINT_URL`` or ``MLFLOW_S3_ENDPOINT_URL`` (else AWS); credentials come from the
    usual boto3 environment (a Kubernetes Secret in the cluster).
    """
    parsed = urlparse(str(uri))
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme == "file" else str(uri))
        if not path.is_dir():
            raise StepError(f"source {uri!r} is not an existing folder (expected a local path or s3://bucket/prefix)")
        return path
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StepError(f"source {uri!r}: unsupported scheme {parsed.scheme!r}; expected a local path or s3://bucket/prefix")
    endpoint = s3_endpoint()
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    dest = Path(dest)
    try:
        n = _download_prefix(s3_client(), bucket, prefix, dest)
    except StepError:
        raise
    except Exception as e:  # noqa: BLE001 - botocore's errors: unreachable endpoint, denied, no such bucket …
        raise StepError(f"source {uri!r}: S3 at {endpoint or 'AWS (default endpoint)'} failed after retries: "
                        f"{type(e).__name__}: {e}") from e
    if n == 0:
        raise StepError(f"source {uri!r} holds no objects (bucket {bucket!r}, prefix {prefix!r})")
    log.info("downloaded %d objects from %s to %s", n, uri, dest)
    return dest
