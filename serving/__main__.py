"""`python -m serving start|stop|status|transcribe`: run the local Triton server and talk to it.

`start` leaves the server running in the background (its own process group) and records it in a pid file;
`stop` ends that group; `status` asks the server what is loaded. `make serve` is `start`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from components.common.logs import add_verbosity_flags, configure_from
from serving.server import DEFAULT_MODELS, DEFAULT_STATE_DIR, PROJECT_ROOT

PID_FILE = "tritonserver.json"


def _pid_path(state_dir: Path) -> Path:
    return state_dir / PID_FILE


def _read_pid(state_dir: Path) -> dict | None:
    try:
        return json.loads(_pid_path(state_dir).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _is_our_server(pid: int) -> bool:
    """The pid still belongs to a tritonserver (guards against pid reuse before signalling a group)."""
    try:
        return b"tritonserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def cmd_start(a: argparse.Namespace) -> int:
    from components.common.io import atomic_write_text
    from serving.server import TritonServer

    state_dir = Path(a.state_dir)
    old = _read_pid(state_dir)
    if old and _is_our_server(old["pid"]):
        print(f"already running: pid {old['pid']}, http {old['http_url']}, grpc {old['grpc_url']}")
        return 0
    srv = TritonServer(
        a.repo,
        a.http_port,
        a.grpc_port,
        a.metrics_port,
        models=a.models,
        state_dir=state_dir,
        startup_timeout_s=a.timeout,
        host=a.host,
    )
    srv.start()  # raises with the log tail if a model does not load
    info = {
        "pid": srv.process.pid,
        "repo": str(srv.repo),
        "http_url": srv.http_url,
        "grpc_url": srv.grpc_url,
        "metrics_url": f"http://{srv.client_host}:{srv.metrics_port}/metrics",
        "models": list(a.models),
        "log": str(srv.log_file),
        "started": time.strftime("%F %T"),
        "start_seconds": srv.start_seconds,
    }
    atomic_write_text(_pid_path(state_dir), json.dumps(info, indent=2) + "\n")
    srv.process = None  # detach: the server outlives this command until `stop`
    print(
        f"tritonserver ready in {info['start_seconds']:.1f}s: pid {info['pid']}\n"
        f"  http {info['http_url']}  grpc {info['grpc_url']}  metrics {info['metrics_url']}\n  log {info['log']}"
    )
    return 0


def cmd_stop(a: argparse.Namespace) -> int:
    from serving.server import stop_process_group

    state_dir = Path(a.state_dir)
    info = _read_pid(state_dir)
    if not info:
        print("not running (no pid file)")
        return 0
    if _is_our_server(info["pid"]):
        stop_process_group(info["pid"], a.timeout)
        print(f"stopped tritonserver pid {info['pid']}")
    else:
        print(f"pid {info['pid']} is not running; removing the stale pid file")
    _pid_path(state_dir).unlink(missing_ok=True)
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    from serving.server import is_ready, repository_index

    info = _read_pid(Path(a.state_dir))
    if not info or not _is_our_server(info["pid"]):
        print("not running")
        return 1
    ready = is_ready(info["http_url"])
    print(f"pid {info['pid']}  ready={ready}  http {info['http_url']}  grpc {info['grpc_url']}")
    if ready:
        for row in repository_index(info["http_url"]):
            print(
                f"  {row.get('name')} v{row.get('version', '-')}: {row.get('state')} {row.get('reason', '')}"
            )
    return 0 if ready else 1


def cmd_transcribe(a: argparse.Namespace) -> int:
    from serving.client import ClientError, transcribe_files

    url = a.url
    if not url:
        info = _read_pid(Path(a.state_dir))
        if not info:
            print("no --url and no running server (python -m serving start)", file=sys.stderr)
            return 2
        url = info["grpc_url"] if (a.streaming or a.protocol == "grpc") else info["http_url"]
    try:
        transcribe_files(
            url,
            a.files,
            a.lang,
            streaming=a.streaming,
            chunk_ms=a.chunk_ms,
            realtime=a.realtime,
            show_partials=not a.quiet,
        )
    except (ClientError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m serving", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--state-dir",
        default=os.environ.get("SERVING_STATE_DIR", str(DEFAULT_STATE_DIR)),
        help="pid file, log and backend dir (default: %(default)s)",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser(
        "start", help="start tritonserver in the background and wait until the models are READY"
    )
    s.add_argument("--repo", default=str(PROJECT_ROOT / "triton_repo"), help="model repository (%(default)s)")
    s.add_argument(
        "--host", default="127.0.0.1", help="address the three endpoints bind to (default: loopback only)"
    )
    s.add_argument("--http-port", type=int, default=8000)
    s.add_argument("--grpc-port", type=int, default=8001)
    s.add_argument("--metrics-port", type=int, default=8002)
    s.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    s.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the models to load")
    s.set_defaults(func=cmd_start)

    s = sub.add_parser("stop", help="SIGTERM the server's process group (SIGKILL after --timeout)")
    s.add_argument("--timeout", type=float, default=30.0)
    s.set_defaults(func=cmd_stop)

    s = sub.add_parser("status", help="is it up, and which model versions are loaded")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("transcribe", help="transcribe audio files through the server")
    s.add_argument(
        "files", nargs="+", help="audio files (any rate/channels soundfile reads; resampled to 16 kHz)"
    )
    s.add_argument("--lang", required=True, help="locale from the model's prompt dictionary, e.g. bg-BG")
    s.add_argument(
        "--url", default="", help="http://host:port or grpc://host:port (default: the started server)"
    )
    s.add_argument(
        "--protocol",
        choices=["http", "grpc"],
        default="http",
        help="offline protocol when --url is not given",
    )
    s.add_argument("--streaming", action="store_true", help="stream through asr_streaming (gRPC)")
    s.add_argument("--chunk-ms", type=float, default=160.0, help="streaming chunk length (ms)")
    s.add_argument("--realtime", action="store_true", help="send chunks at the pace of the audio")
    s.add_argument("--quiet", action="store_true", help="streaming: do not print partial transcripts")
    s.set_defaults(func=cmd_transcribe)

    add_verbosity_flags(p)
    a = p.parse_args(argv)
    configure_from(a)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
