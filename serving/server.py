"""Start and stop the real `tritonserver` binary bundled in the nvidia-pytriton wheel, on our model repository.

No Docker here: the wheel ships Triton 2.51 with the python backend only (docs/SERVING.md). Three things make its models load:
* a backend directory holding the python backend *and* the backend stub built for this Python (3.11);
* `LD_LIBRARY_PATH` = this interpreter's LIBDIR first (else the stub picks the system libpython and dies with
  `'_thread.RLock' object has no attribute '_recursion_count'`), then the wheel's vendored libs;
* `PATH` = this environment's bin first, so the stub's embedded Python finds this environment's site-packages
  (torch, NeMo, numpy<2), and `PYTHONPATH` = the project root, so model.py can import `components.*` (the
  production Triton image installs the project package instead).
The server runs in its own process group: stop() sends SIGTERM to the group (the stubs exit with it), then
SIGKILL after a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STATE_DIR = PROJECT_ROOT / ".cache" / "serving"
DEFAULT_MODELS = ("asr_offline", "asr_streaming")


class ServerError(RuntimeError):
    """The server did not start or its models did not load; the message carries the log tail."""


def pytriton_dir() -> Path:
    """site-packages/pytriton/tritonserver (found without importing pytriton, which is slow)."""
    for base in map(Path, {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path}):
        cand = base / "pytriton" / "tritonserver"
        if (cand / "bin" / "tritonserver").is_file():
            return cand
    raise ServerError(
        "tritonserver binary not found: install nvidia-pytriton==0.7.0 (the 'serve' dependency)"
    )


def tritonserver_available() -> bool:
    try:
        pytriton_dir()
        return True
    except ServerError:
        return False


def prepare_backends(dst: str | os.PathLike) -> Path:
    """A backend dir with the wheel's python backend plus the stub for this interpreter's Python version."""
    src = pytriton_dir()
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = src / "python_backend_stubs" / pyver / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"{stub}: no python backend stub for Python {pyver} in the nvidia-pytriton wheel")
    out = Path(dst) / "backends" / "python"
    out.mkdir(parents=True, exist_ok=True)
    for f in (
        src / "backends" / "python" / "libtriton_python.so",
        src / "backends" / "python" / "triton_python_backend_utils.py",
        stub,
    ):
        target = out / f.name
        if not target.exists() or target.stat().st_size != f.stat().st_size:
            tmp = out / f".{f.name}.tmp"
            shutil.copy2(f, tmp)
            os.replace(tmp, target)
    return out.parent


def server_env(base: dict[str, str] | None = None, n_models: int = 2) -> dict[str, str]:
    """The environment tritonserver and its python stubs need (see the module docstring)."""
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    vendored = pytriton_dir().parents[1] / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, str(vendored), env.get("LD_LIBRARY_PATH")) if p
    )
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH")) if p)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUTF8", "1")  # belt and braces with model.py's setlocale
    # Each model instance is its own stub process running torch: on a small shared CPU box, torch's default
    # (threads = cores, in every stub) oversubscribes the cores and was 5x slower here. AsrModel.load reads it.
    env.setdefault("ASR_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, n_models))))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_json(url: str, method: str = "GET", body: dict | None = None, timeout: float = 2.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
        return r.status, (json.loads(raw) if raw else None)


def repository_index(http_url: str) -> list[dict]:
    """Triton's view of the repository: [{name, version, state, reason}]."""
    return _http_json(f"{http_url}/v2/repository/index", "POST", {})[1] or []


def is_ready(http_url: str) -> bool:
    try:
        return _http_json(f"{http_url}/v2/health/ready")[0] == 200
    except (OSError, urllib.error.URLError):
        return False


@dataclass
class TritonServer:
    """One tritonserver process on `repo`. Use as a context manager, or start()/stop().

    Ports default to free ones. `models` are loaded at start (explicit model control); start() returns when
    the server is ready and every model is READY, and raises ServerError with the log tail otherwise.
    """

    repo: str | os.PathLike
    http_port: int | None = None
    grpc_port: int | None = None
    metrics_port: int | None = None
    models: Sequence[str] = DEFAULT_MODELS
    state_dir: str | os.PathLike | None = None  # backend dir + log live here
    log_file: str | os.PathLike | None = None
    startup_timeout_s: float = 300.0
    stop_timeout_s: float = 45.0  # tritonserver itself waits up to 30 s for models to unload
    log_verbose: int = 0
    # loopback only by default: the local server is for this machine (the cluster image binds 0.0.0.0 itself)
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.repo = Path(self.repo).resolve()
        self.state_dir = Path(self.state_dir or DEFAULT_STATE_DIR)
        self.log_file = Path(self.log_file or self.state_dir / "tritonserver.log")
        self.http_port = self.http_port or free_port()
        self.grpc_port = self.grpc_port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        self.process: subprocess.Popen | None = None
        self.start_seconds: float | None = None

    @property
    def client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    @property
    def http_url(self) -> str:
        return f"http://{self.client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.client_host}:{self.grpc_port}"

    def command(self) -> list[str]:
        src = pytriton_dir()
        cmd = [
            str(src / "bin" / "tritonserver"),
            f"--model-repository={self.repo}",
            f"--backend-directory={prepare_backends(self.state_dir)}",
            f"--cache-directory={src / 'caches'}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--exit-on-error=false",
            "--model-control-mode=explicit",
            f"--log-verbose={self.log_verbose}",
        ]
        return cmd + [f"--load-model={m}" for m in self.models]

    def start(self) -> TritonServer:
        if not self.repo.is_dir():
            raise ServerError(f"{self.repo}: model repository not found (run export_triton first)")
        for m in self.models:
            if not (self.repo / m / "config.pbtxt").is_file():
                raise ServerError(f"{self.repo / m}/config.pbtxt: missing (run export_triton first)")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        t0 = time.monotonic()
        with open(self.log_file, "ab") as log:
            log.write(f"\n=== {time.strftime('%F %T')} {' '.join(cmd)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=server_env(n_models=len(self.models)),
                cwd=self.state_dir,
                start_new_session=True,
            )
        try:
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _wait_ready(self, t0: float) -> None:
        pending = set(self.models)
        while True:
            if self.process.poll() is not None:
                raise ServerError(
                    f"tritonserver exited with code {self.process.returncode}\n{self.log_tail()}"
                )
            # Read the index whether or not the server says ready: under strict readiness one model that
            # failed to load keeps /v2/health/ready at 503 for good, and only the index names it.
            try:
                index = repository_index(self.http_url)
            except (OSError, urllib.error.URLError, ValueError):
                index = []
            for row in index:
                if row.get("name") in pending:
                    if row.get("state") == "READY":
                        pending.discard(row["name"])
                    elif row.get("state") == "UNAVAILABLE":
                        raise ServerError(
                            f"model {row['name']} failed to load: {row.get('reason', '?')}\n{self.log_tail()}"
                        )
            if not pending and is_ready(self.http_url):
                return
            if time.monotonic() - t0 > self.startup_timeout_s:
                raise ServerError(
                    f"tritonserver not ready after {self.startup_timeout_s:.0f}s (waiting for {sorted(pending)})\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.25)

    def stop(self) -> int | None:
        """SIGTERM the process group, SIGKILL it after `stop_timeout_s`; returns the exit code."""
        if self.process is None:
            return None
        code = stop_process_group(self.process.pid, self.stop_timeout_s, self.process)
        self.process = None
        return code

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_process_group(
    pid: int, timeout_s: float = 30.0, process: subprocess.Popen | None = None
) -> int | None:
    """SIGTERM the group led by `pid` (tritonserver + its python stubs), then SIGKILL it after a timeout."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return process.wait() if process else None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None:
            if process.poll() is not None:
                break
        elif not _alive(pid):
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # The leader may be gone while stubs of the group linger a moment: make sure the group is empty.
    try:
        os.killpg(pid, 0)
        time.sleep(0.5)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return process.wait() if process is not None else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (our child that nobody reaped) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
