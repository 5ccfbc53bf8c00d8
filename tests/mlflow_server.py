"""A real `mlflow server` on loopback for the tests that need the cluster's shape (REST store, proxied
artifacts): started in its own process group, waited for on /health, stopped with its workers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.server import free_port


@contextlib.contextmanager
def mlflow_server(work: Path, db: Path | None = None, timeout_s: float = 180.0) -> Iterator[str]:
    """`mlflow server` with its sqlite store (`work`/server.db, a copy of `db` when given: a migrated schema
    skips the 10-15 s build), artifacts in `work`/artifacts and its log in `work`/server.log; -> its URL.
    Skips when the mlflow CLI is not installed; fails naming the log's tail when it does not come up."""
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    if not mlflow_bin.exists():
        pytest.skip("mlflow CLI not installed in this environment")
    work.mkdir(parents=True, exist_ok=True)
    if db is not None:
        shutil.copyfile(db, work / "server.db")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [
        str(mlflow_bin),
        "server",
        "--backend-store-uri",
        f"sqlite:///{work / 'server.db'}",
        "--artifacts-destination",
        str(work / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with open(work / "server.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        uri = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(uri, proc, work / "server.log", timeout_s)
            yield uri
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group (its workers too)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _wait_healthy(uri: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"mlflow server did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
