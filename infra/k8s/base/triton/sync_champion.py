"""Keep a Triton model repository on the registry's champion. Runs beside tritonserver in its pod.

Why a sidecar and not a push from the pipeline: the `champion` alias in MLflow is the one source of truth, so a
promotion *or* a rollback (`python -m registry promote <old version>`) reaches every replica within one sync
interval, with no ReadWriteMany volume shared between the pipeline and the serving namespaces. A changed
champion is exported by `components.export_triton` as version N+1 of both models (atomic rename; the sha256
the registry recorded is checked before anything is written); Triton's poll mode then loads it
(`version_policy: latest 1`) while the old version serves until the new one is ready.

The sidecar trusts the alias no more than promote does: before exporting it verifies the version's evidence
(`verify_release`: a passing gate record bound to the checkpoint, or the override record of an audited
`--force --reason`; registry/gate_record.py). An alias without it (set by hand through the MLflow API or UI) is
refused: logged as `event=refused`, counted in the Prometheus metrics on SYNC_METRICS_PORT
(`asr_sync_refused`, `asr_sync_refusals_total`), and the last good version keeps serving.

Environment (ConfigMap `asr-serving`): MLFLOW_TRACKING_URI, MODEL_NAME, MODEL_ALIAS, TRITON_REPO,
SYNC_INTERVAL_S, KEEP_VERSIONS, ATT_CONTEXT_SIZE, SYNC_METRICS_PORT; MLFLOW_TRACKING_USERNAME/PASSWORD from the
Secret `mlflow-auth`. Shipped into the pod by kustomize's configMapGenerator; it
imports only the project's installed packages (the Triton image installs them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODELS = ("asr_offline", "asr_streaming")


@dataclass
class SyncResult:
    action: str  # "exported" | "unchanged" | "no-champion" | "refused"
    registry_version: str = ""  # the registry's version number the alias points at
    served_version: int | None = None  # the Triton version folder now newest
    sha256: str = ""
    error: str = ""  # why a version was refused


@dataclass
class SyncMetrics:
    """Prometheus text metrics of the sidecar: is the alias refused now, how often, what serves."""

    refused: dict[str, int] = field(default_factory=dict)  # model -> 1 while its alias is refused
    refusals: dict[str, int] = field(default_factory=dict)  # model -> count
    served: dict[str, int] = field(default_factory=dict)  # model -> newest Triton version
    parity_ok: dict[str, int] = field(
        default_factory=dict
    )  # model -> 1/0: the golden set reproduced after load

    def record(self, model: str, r: SyncResult) -> None:
        self.refused[model] = int(r.action == "refused")
        self.refusals[model] = self.refusals.get(model, 0) + int(r.action == "refused")
        if r.served_version is not None:
            self.served[model] = r.served_version

    def render(self) -> str:
        lines = []
        for name, kind, helptext, values in (
            (
                "asr_sync_refused",
                "gauge",
                "1 while the alias points at a version without valid evidence",
                self.refused,
            ),
            ("asr_sync_refusals_total", "counter", "syncs that refused the alias's version", self.refusals),
            ("asr_sync_served_version", "gauge", "newest Triton version folder being served", self.served),
            (
                "asr_serving_parity_ok",
                "gauge",
                "1: the served version reproduces the golden set; 0: it did not",
                self.parity_ok,
            ),
        ):
            lines += [f"# HELP {name} {helptext}", f"# TYPE {name} {kind}"]
            lines += [f'{name}{{model="{m}"}} {v}' for m, v in sorted(values.items())]
        return "\n".join(lines) + "\n"

    def serve(self, port: int) -> ThreadingHTTPServer:
        """GET /metrics on `port` in a daemon thread (stdlib: the sidecar has no other web dependency)."""
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                body = metrics.render().encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body if self.path == "/metrics" else b"")

            def log_message(self, *args):  # scrapes are not news
                pass

        server = ThreadingHTTPServer(("", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def verify_release(reg, info) -> str:
    """The evidence that entitles `info` to serve: 'gate' or 'override'. Raises GateRecordError (a
    PermissionError) naming what is missing or does not match. The checkpoint itself is checked against the
    sha256 the record is bound to when it is downloaded (Registry.download)."""
    return reg.champion_evidence(info)


def served_sha256(repo: str | os.PathLike) -> tuple[int | None, str | None]:
    """(newest version, its checkpoint sha256) when both models serve the same one, else (None, None)."""
    found = set()
    for model in MODELS:
        model_dir = Path(repo) / model
        versions = (
            sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit()) if model_dir.is_dir() else []
        )
        if not versions:
            return None, None
        sidecar = model_dir / str(versions[-1]) / "model.json"
        try:
            found.add((versions[-1], json.loads(sidecar.read_text(encoding="utf-8"))["sha256"]))
        except (OSError, ValueError, KeyError):
            return None, None  # unreadable: export again rather than trust it
    return found.pop() if len(found) == 1 else (None, None)


def sync_once(
    repo: str | os.PathLike,
    model_name: str,
    alias: str = "champion",
    client=None,
    att_context_size: str = "",
    keep_versions: int = 2,
    metrics: SyncMetrics | None = None,
) -> SyncResult:
    """Export `model_name@alias` into `repo` unless the newest served version already has its checkpoint.

    A version without valid evidence (`verify_release`) is refused and nothing in `repo` changes."""
    from components.export_triton.core import export_model
    from registry.gate_record import GateRecordError
    from registry.mlflow_adapter import Registry, get_client

    reg = Registry(client or get_client())
    info = reg.by_alias(model_name, alias)
    if info is None:
        return SyncResult("no-champion")
    try:
        verify_release(reg, info)
    except GateRecordError as e:
        r = SyncResult(
            "refused", info.version, served_sha256(repo)[0], info.tags.get("checkpoint_sha256", ""), str(e)
        )
        if metrics is not None:
            metrics.record(model_name, r)
        return r
    wanted = info.tags.get("checkpoint_sha256", "")
    if not wanted:
        raise ValueError(
            f"models:/{model_name}@{alias} (v{info.version}): no checkpoint_sha256 tag; refusing to serve"
        )
    served_version, served = served_sha256(repo)
    if served == wanted:
        r = SyncResult("unchanged", info.version, served_version, wanted)
        if metrics is not None:
            metrics.record(model_name, r)
        return r
    att = att_context_size or info.tags.get("params.att_context_size", "")
    os.makedirs(repo, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=repo, prefix=".download-") as dst:  # same filesystem: hardlinks
        nemo = reg.download(info, dst)  # verifies the sha256 against the registry tag
        r = export_model(
            nemo,
            repo,
            wanted,
            {"name": info.name, "version": info.version, "alias": alias, "tags": info.tags},
            att or None,
            keep_versions=keep_versions,
        )
    result = SyncResult("exported", info.version, r.version, r.sha256)
    if metrics is not None:
        metrics.record(model_name, result)
    return result


# ------------------------------------------------------------------ post-deploy parity (issue 18)
HEARTBEAT_FILE = os.environ.get("SYNC_HEARTBEAT_FILE", "/tmp/sync_champion.alive")


def verify_parity(
    triton_http: str, golden_dir: str | os.PathLike, version: int | str, model: str = "asr_offline"
) -> dict:
    """Transcribe the golden set (stored at gate time, components/evaluate_wer/golden.py) through Triton's
    `model` at `version`; {"passed", "checked", "mismatches"}. Any differing text fails: the served model must
    reproduce the gated transcripts token for token."""
    from components.evaluate_wer.golden import check_parity
    from serving.client import transcribe_offline

    def through_triton(audio, lang: str) -> str:
        return transcribe_offline(triton_http, audio, lang, model=model, version=str(version))

    return check_parity(golden_dir, through_triton).to_dict()


def fetch_golden(client, info, dst: str | os.PathLike) -> Path | None:
    """The golden set of a registry version: artifacts `evaluation/golden` of its evaluation run (tag
    `evaluation_run_id`, else the version's own run). None when the version has none (an older export)."""
    for run_id in dict.fromkeys(filter(None, (info.tags.get("evaluation_run_id"), info.run_id))):
        try:
            local = Path(client.download_artifacts(run_id, "evaluation/golden", str(dst)))
        except Exception:  # noqa: BLE001 - absent artifact: try the next run
            continue
        if (local / "golden.json").is_file():
            return local
    return None


def reject_version(repo: str | os.PathLike, version: int, why: str) -> list[str]:
    """Move version `version` of both models aside (`.rejected-N`): Triton's poll mode unloads it and the
    previous version, still in the repository, serves again. Returns the moved folders."""
    moved = []
    for model in MODELS:
        src = Path(repo) / model / str(version)
        if src.is_dir():
            dst = Path(repo) / model / f".rejected-{version}"
            if dst.exists():
                import shutil

                shutil.rmtree(dst)
            os.replace(src, dst)
            (dst / "REJECTED.txt").write_text(why + "\n", encoding="utf-8")
            moved.append(str(dst))
    return moved


def rejected_sha256(repo: str | os.PathLike) -> set[str]:
    """Checkpoints whose served version failed parity here (their `.rejected-N` folders keep model.json)."""
    out = set()
    for f in Path(repo).glob(f"{MODELS[0]}/.rejected-*/model.json"):
        try:
            out.add(json.loads(f.read_text(encoding="utf-8"))["sha256"])
        except (OSError, ValueError, KeyError):
            continue
    return out


def wait_loaded(triton_http: str, version: int, timeout_s: float = 600.0) -> bool:
    """True once every model reports `version` READY (Triton's poll mode loads it on its own clock)."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ok = all(
                urllib.request.urlopen(
                    f"{triton_http}/v2/models/{m}/versions/{version}/ready", timeout=5
                ).status
                == 200
                for m in MODELS
            )
            if ok:
                return True
        except OSError:
            pass
        time.sleep(2.0)
    return False


def parity_after_load(
    repo: str | os.PathLike, r: SyncResult, model_name: str, triton_http: str, client=None
) -> dict:
    """After an export: wait until Triton loaded the new version, replay the golden set through it; on any
    differing text move the version aside (the previous one keeps serving) and report `passed: False`."""
    from registry.mlflow_adapter import Registry, get_client

    client = client or get_client()
    info = Registry(client).get(model_name, r.registry_version)
    with tempfile.TemporaryDirectory(prefix=".golden-") as tmp:
        golden = fetch_golden(client, info, tmp)
        if golden is None:
            return {"passed": None, "checked": 0, "why": "no golden set stored for this version"}
        if not wait_loaded(triton_http, r.served_version):
            report = {"passed": False, "checked": 0, "why": f"version {r.served_version} never became READY"}
        else:
            report = verify_parity(triton_http, golden, r.served_version)
    if report["passed"] is False:
        report["rejected"] = reject_version(repo, r.served_version, f"post-deploy parity failed: {report}")
    return report


def _champion_rejected(repo: str, model_name: str, alias: str) -> bool:
    from registry.mlflow_adapter import Registry, get_client

    info = Registry(get_client()).by_alias(model_name, alias)
    return bool(info) and info.tags.get("checkpoint_sha256", "") in rejected_sha256(repo)


def heartbeat(path: str = HEARTBEAT_FILE) -> None:
    Path(path).write_text(f"{time.time():.0f}\n", encoding="utf-8")


def alive(path: str = HEARTBEAT_FILE, max_age_s: float = 300.0) -> bool:
    """The liveness probe: the loop wrote its heartbeat within `max_age_s` (a hung sync fails it)."""
    try:
        return time.time() - Path(path).stat().st_mtime < max_age_s
    except OSError:
        return False


def _log(**fields) -> None:
    print(json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}), flush=True)


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", default=env("TRITON_REPO", "/models"))
    p.add_argument("--model", default=env("MODEL_NAME", "nemotron-asr-finetuned"))
    p.add_argument("--alias", default=env("MODEL_ALIAS", "champion"))
    p.add_argument("--interval", type=float, default=float(env("SYNC_INTERVAL_S", "60")))
    p.add_argument("--keep", type=int, default=int(env("KEEP_VERSIONS", "2")))
    p.add_argument("--att-context-size", default=env("ATT_CONTEXT_SIZE", ""))
    p.add_argument("--triton-http", default=env("TRITON_HTTP", ""), help="post-deploy parity through Triton")
    p.add_argument("--alive", action="store_true", help="liveness probe: exit 0 if the loop beat recently")
    p.add_argument("--once", action="store_true", help="sync once and exit (the init container)")
    p.add_argument("--wait", action="store_true", help="with --once: wait until the alias exists")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(env("SYNC_METRICS_PORT", "0")),
        help="serve Prometheus metrics on this port (0: off)",
    )
    a = p.parse_args(argv)
    if a.alive:
        return 0 if alive(max_age_s=3 * a.interval + 600) else 1
    metrics = SyncMetrics()
    if a.metrics_port and not a.once:
        metrics.serve(a.metrics_port)

    while True:
        try:
            if a.triton_http and not a.once and _champion_rejected(a.repo, a.model, a.alias):
                # it failed parity here: keep the previous version serving until the alias moves (alerted)
                _log(event="parity-rejected", model=a.model, alias=a.alias, action="kept-previous")
                heartbeat()
                time.sleep(a.interval)
                continue
            r = sync_once(
                a.repo,
                a.model,
                a.alias,
                att_context_size=a.att_context_size,
                keep_versions=a.keep,
                metrics=metrics,
            )
            if r.action == "refused":  # keep serving what is there; say so loudly, every interval
                _log(
                    event="refused",
                    model=a.model,
                    alias=a.alias,
                    registry_version=r.registry_version,
                    served_version=r.served_version,
                    error=r.error,
                )
                if a.once and not a.wait:
                    return 4
                if not a.once:
                    heartbeat()
                time.sleep(a.interval)
                continue
            _log(
                event="sync",
                model=a.model,
                alias=a.alias,
                action=r.action,
                registry_version=r.registry_version,
                served_version=r.served_version,
                sha256=r.sha256,
            )
            if r.action == "exported" and a.triton_http and not a.once:
                report = parity_after_load(a.repo, r, a.model, a.triton_http)
                _log(event="parity", model=a.model, served_version=r.served_version, **report)
                if report["passed"] is not None:
                    metrics.parity_ok[a.model] = int(bool(report["passed"]))
            if not a.once:
                heartbeat()
            if a.once and (r.action != "no-champion" or not a.wait):
                return 0 if r.action != "no-champion" else 3
        except Exception as e:  # registry down, download cut: keep serving what is there, try again
            _log(event="error", model=a.model, alias=a.alias, error=f"{type(e).__name__}: {e}")
            if a.once and not a.wait:
                return 1
        time.sleep(a.interval)


if __name__ == "__main__":
    sys.exit(main())
