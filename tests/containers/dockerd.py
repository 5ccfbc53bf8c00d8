"""Find a Docker engine, or start the project's own rootful dockerd, and stop only what we started.

`make docker-up` / `make docker-down` and the `containers` tests use this module. Order:
1. `$DOCKER_HOST` (when set) or Docker's default socket: used as is when it answers; never stopped by us.
2. Otherwise the project's daemon at ``unix:///run/asr-docker/docker.sock``. When nothing answers there either,
   `up` starts ``dockerd`` with the flags a container-less CI machine needs (no iptables, no bridge: builds and
   containers use ``--network=host``) and a *fixed* data root, so image layers survive between CI runs.
   It writes ``started-by-asr`` next to its pid file; `down` stops the daemon only when that marker is there.

Run as ``python -m tests.containers.dockerd {up,down,host}``; `host` prints the DOCKER_HOST to use (or exits 3).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DATA_ROOT = Path(os.environ.get("ASR_DOCKER_DATA_ROOT", "/var/lib/asr-docker"))
"""Layers and images; fixed and outside any clone so a later CI run on this machine reuses cached layers."""
EXEC_ROOT = Path(os.environ.get("ASR_DOCKER_EXEC_ROOT", "/run/asr-docker"))
"""Sockets, pid file, the `started-by-asr` marker and the daemon log."""
OWN_HOST = f"unix://{EXEC_ROOT}/docker.sock"
DEFAULT_HOST = "unix:///var/run/docker.sock"
MARKER = EXEC_ROOT / "started-by-asr"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Engine:
    host: str
    started_here: bool


def answers(host: str, timeout: float = 10.0) -> bool:
    """True when a daemon at `host` replies to `docker version` within `timeout` seconds."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        p = subprocess.run(
            [docker, "-H", host, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return False
    return p.returncode == 0 and bool(p.stdout.strip())


def find_engine() -> str | None:
    """The DOCKER_HOST of an engine that answers now, or None."""
    for host in dict.fromkeys([os.environ.get("DOCKER_HOST") or DEFAULT_HOST, OWN_HOST]):
        if answers(host):
            return host
    return None


def why_no_engine() -> str | None:
    """None when an engine answers or can be started here; else the reason, for a pytest skip."""
    if find_engine():
        return None
    if shutil.which("docker") is None:
        return "no `docker` client on PATH (apt-get install docker.io)"
    if shutil.which("dockerd") is None:
        return "no Docker engine answers and no `dockerd` to start (apt-get install docker.io)"
    if os.geteuid() != 0:
        return "no Docker engine answers and starting dockerd needs root"
    return None


def up() -> Engine:
    """Use the engine that answers, or start ours and wait until it answers (bounded)."""
    host = find_engine()
    if host:
        log.info("Docker engine answers at %s; using it", host)
        return Engine(host, started_here=False)
    reason = why_no_engine()
    if reason:
        raise RuntimeError(reason)
    EXEC_ROOT.mkdir(parents=True, exist_ok=True)
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    logfile = open(EXEC_ROOT / "dockerd.log", "ab")  # noqa: SIM115 - the daemon keeps writing after we return
    cmd = [
        "dockerd",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        f"--data-root={DATA_ROOT}",
        f"--exec-root={EXEC_ROOT}/exec",
        f"--pidfile={EXEC_ROOT}/docker.pid",
        f"--host={OWN_HOST}",
        "--containerd-namespace=asr",
        "--containerd-plugins-namespace=asr-plugins",
    ]
    proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
    MARKER.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            MARKER.unlink(missing_ok=True)
            raise RuntimeError(f"dockerd exited with {proc.returncode}; see {EXEC_ROOT / 'dockerd.log'}")
        if answers(OWN_HOST, timeout=5):
            log.info("started dockerd (pid %d) at %s, data root %s", proc.pid, OWN_HOST, DATA_ROOT)
            return Engine(OWN_HOST, started_here=True)
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    MARKER.unlink(missing_ok=True)
    raise RuntimeError(
        f"dockerd did not answer within {START_TIMEOUT_S:.0f} s; see {EXEC_ROOT / 'dockerd.log'}"
    )


def _alive(pid: int) -> bool:
    """Running, and not a zombie (the pytest fixture's dockerd is this process's child: reap it)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child (started by `make docker-up`): init reaps it
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def down() -> bool:
    """Stop the dockerd that `up` started (its marker names the pid); leave any other engine alone."""
    if not MARKER.exists():
        log.info("no dockerd started by this project (%s absent); nothing to stop", MARKER)
        return False
    pid = int(MARKER.read_text().split()[0])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        MARKER.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        raise RuntimeError(f"dockerd (pid {pid}) still running {STOP_TIMEOUT_S:.0f} s after SIGTERM")
    MARKER.unlink(missing_ok=True)
    log.info("stopped dockerd (pid %d)", pid)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.containers.dockerd", description=__doc__.splitlines()[0]
    )
    ap.add_argument("action", choices=["up", "down", "host"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.action == "up":
            print(up().host)
        elif args.action == "down":
            down()
        else:
            host = find_engine()
            if host is None:
                return 3
            print(host)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
