"""Where the pipeline reads its sources: a local folder, or every object under ``s3://bucket/prefix``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)


class StepError(RuntimeError):
    """A step got inputs it cannot use; the message names the value and what was expected."""


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
    import boto3

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None
    s3 = boto3.client("s3", endpoint_url=endpoint)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    dest = Path(dest)
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.endswith("/"):
                continue
            target = dest / key[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(target))
            n += 1
    if n == 0:
        raise StepError(f"source {uri!r} holds no objects (bucket {bucket!r}, prefix {prefix!r})")
    log.info("downloaded %d objects from %s to %s", n, uri, dest)
    return dest
