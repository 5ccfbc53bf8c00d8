"""Keep a Triton model repository on the registry's champion. Runs beside tritonserver in its pod.

Why a sidecar and not a push from the pipeline: the `champion` alias in MLflow is the one source of truth, so a
promotion *or* a rollback (`python -m registry promote <old version>`) reaches every replica within one sync
interval, with no ReadWriteMany volume shared between the pipeline and the serving namespaces. A changed
champion is exported by `components.export_triton` as version N+1 of both models (atomic rename; the sha256
the registry recorded is checked before anything is written); Triton's poll mode then loads it
(`version_policy: latest 1`) while the old version serves until the new one is ready.

Environment (ConfigMap `asr-serving`): MLFLOW_TRACKING_URI, MODEL_NAME, MODEL_ALIAS, TRITON_REPO,
SYNC_INTERVAL_S, KEEP_VERSIONS, ATT_CONTEXT_SIZE. Shipped into the pod by kustomize's configMapGenerator; it
imports only the project's installed packages (the Triton image installs them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MODELS = ("asr_offline", "asr_streaming")


@dataclass
class SyncResult:
    action: str  # "exported" | "unchanged" | "no-champion"
    registry_version: str = ""  # the registry's version number the alias points at
    served_version: int | None = None  # the Triton version folder now newest
    sha256: str = ""


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
) -> SyncResult:
    """Export `model_name@alias` into `repo` unless the newest served version already has its checkpoint."""
    from components.export_triton.core import export_model
    from registry.mlflow_adapter import Registry, get_client

    reg = Registry(client or get_client())
    info = reg.by_alias(model_name, alias)
    if info is None:
        return SyncResult("no-champion")
    wanted = info.tags.get("checkpoint_sha256", "")
    if not wanted:
        raise ValueError(
            f"models:/{model_name}@{alias} (v{info.version}): no checkpoint_sha256 tag; refusing to serve"
        )
    served_version, served = served_sha256(repo)
    if served == wanted:
        return SyncResult("unchanged", info.version, served_version, wanted)
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
    return SyncResult("exported", info.version, r.version, r.sha256)


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
    p.add_argument("--once", action="store_true", help="sync once and exit (the init container)")
    p.add_argument("--wait", action="store_true", help="with --once: wait until the alias exists")
    a = p.parse_args(argv)

    while True:
        try:
            r = sync_once(a.repo, a.model, a.alias, att_context_size=a.att_context_size, keep_versions=a.keep)
            _log(
                event="sync",
                model=a.model,
                alias=a.alias,
                action=r.action,
                registry_version=r.registry_version,
                served_version=r.served_version,
                sha256=r.sha256,
            )
            if a.once and (r.action != "no-champion" or not a.wait):
                return 0 if r.action != "no-champion" else 3
        except Exception as e:  # registry down, download cut: keep serving what is there, try again
            _log(event="error", model=a.model, alias=a.alias, error=f"{type(e).__name__}: {e}")
            if a.once and not a.wait:
                return 1
        time.sleep(a.interval)


if __name__ == "__main__":
    sys.exit(main())
