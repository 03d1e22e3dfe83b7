"""System metrics of a training run: MLflow's own monitor, so the run page's *System metrics* tab shows whether the
GPU was busy.

:func:`monitor` runs ``mlflow.system_metrics.SystemMetricsMonitor`` on an existing run while a block runs: CPU
utilisation and memory (``psutil``), disk and network, and — where NVIDIA's management library bindings
(``nvidia-ml-py``) find a GPU — GPU utilisation, memory and power, as ``system/…`` metrics every
``interval_s`` seconds (``train.system_metrics_s``; 0 = off). A resumed task continues the metrics' steps. The
monitor never stops or slows training: it runs in a thread, and if the tracking server is away it stops itself
(MLflow's rule) and is waited for at most :data:`STOP_WAIT_S` at the end.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

STOP_WAIT_S = 20.0
"""Longest wait for the monitor's last sample at the end of the block (its thread is a daemon)."""


@contextlib.contextmanager
def monitor(client: Any, run_id: str, interval_s: float) -> Iterator[None]:
    """Log system metrics into MLflow run ``run_id`` (at ``client.tracking_uri``) every ``interval_s`` seconds
    while the block runs; ``interval_s <= 0``: nothing."""
    if interval_s <= 0:
        yield
        return
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        mon = SystemMetricsMonitor(run_id, sampling_interval=interval_s, samples_before_logging=1,
                                   resume_logging=True, tracking_uri=client.tracking_uri)
    except Exception as e:  # noqa: BLE001 - psutil missing, server away: the run trains without system metrics
        log.warning("run %s: no system metrics (%s: %s)", run_id, type(e).__name__, e)
        yield
        return
    mon.start()
    try:
        yield
    finally:
        stopper = threading.Thread(target=mon.finish, name="stop-system-metrics", daemon=True)
        stopper.start()
        stopper.join(STOP_WAIT_S)
        if stopper.is_alive():
            log.warning("run %s: the system-metrics monitor did not stop within %.0f s; left behind", run_id,
                        STOP_WAIT_S)
