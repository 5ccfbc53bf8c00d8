"""Run the gateway as its own process beside a local tritonserver (make demo, bench-serve, the e2e tests):
the same `python -m serving.gateway` the cluster runs, on loopback, with a generated API key."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from serving.server import PROJECT_ROOT, free_port, stop_process_group


@dataclass
class GatewayProcess:
    """`python -m serving.gateway` in front of `triton_grpc` (host:port). Use as a context manager."""

    triton_grpc: str
    log_file: str | os.PathLike
    grpc_port: int = 0
    http_port: int = 0
    api_key: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    args: list[str] = field(default_factory=list)  #: more CLI flags (e.g. --rollout FILE)
    startup_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        self.grpc_port = self.grpc_port or free_port()
        self.http_port = self.http_port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def grpc_addr(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> GatewayProcess:
        env = dict(os.environ, GATEWAY_API_KEYS=self.api_key)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
        cmd = [
            sys.executable,
            "-m",
            "serving.gateway",
            "--triton-grpc",
            self.triton_grpc,
            "--grpc-port",
            str(self.grpc_port),
            "--http-port",
            str(self.http_port),
            *self.args,
        ]
        Path(self.log_file).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                cmd,
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.startup_timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}: see {self.log_file}")
            try:
                with urllib.request.urlopen(f"{self.http_url}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gateway not ready after {self.startup_timeout_s:.0f}s: see {self.log_file}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process.pid, 10.0, self.process)
            self.process = None

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
