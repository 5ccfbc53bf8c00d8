"""MLflow model registry adapter: register, alias, promote, resolve. The MlflowClient is passed in.

Works on sqlite (local default) and against an `mlflow server` (cluster). Versions are created with the
low-level `create_model_version(source=<run artifact uri>/model, run_id=...)` route, which works on both
(reference/mlops-stack-on-cpu.md §2.2). Aliases, never stages.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from components.common.io import sha256_file
from registry.policy import BASE, CHALLENGER, CHAMPION, decide_promotion, parse_bool_tag

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "nemotron-asr"


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPO_ROOT / '.mlflow' / 'mlflow.db'}"


def get_client(tracking_uri: str | None = None):
    """A client on `tracking_uri` (env MLFLOW_TRACKING_URI, else the repo's sqlite file)."""
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@dataclass
class VersionInfo:
    name: str
    version: str
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    source: str = ""
    run_id: str = ""


class Registry:
    def __init__(self, client, experiment: str = EXPERIMENT):
        self.client = client
        self.experiment = experiment

    # -- experiments / runs ------------------------------------------------------------------------------
    def experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        location = None
        uri = self.client.tracking_uri if hasattr(self.client, "tracking_uri") else default_tracking_uri()
        if str(uri).startswith("sqlite:///"):  # keep artifacts next to the db, not in the cwd
            location = (Path(str(uri).removeprefix("sqlite:///")).parent / "artifacts").as_uri()
        try:
            return self.client.create_experiment(self.experiment, artifact_location=location)
        except Exception:  # created concurrently by another process
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    # -- registration -------------------------------------------------------------------------------------
    def register(self, name: str, model_dir: str | os.PathLike, tags: dict[str, str] | None = None,
                 description: str = "", aliases: tuple[str, ...] = (CHALLENGER,),
                 run_id: str | None = None, extra_files: dict[str, str] | None = None) -> VersionInfo:
        """Log `model_dir` (model.nemo + model.json) as run artifacts and create a model version from them.

        `model_dir` may also be a .nemo file: it is registered as model.nemo with the model.json beside it."""
        model_dir = Path(model_dir)
        if model_dir.is_file():
            with tempfile.TemporaryDirectory() as staged:
                try:  # a hardlink avoids copying a 2.5 GB Nemotron checkpoint
                    os.link(model_dir, Path(staged) / "model.nemo")
                except OSError:
                    shutil.copy2(model_dir, Path(staged) / "model.nemo")
                if (model_dir.parent / "model.json").exists():
                    shutil.copy2(model_dir.parent / "model.json", Path(staged) / "model.json")
                return self.register(name, staged, tags, description, aliases, run_id, extra_files)
        nemo = model_dir / "model.nemo"
        if not nemo.is_file():
            raise FileNotFoundError(f"{nemo}: no model.nemo to register")
        sha = sha256_file(nemo)
        sidecar = json.loads((model_dir / "model.json").read_text()) if (model_dir / "model.json").exists() else {}
        if sidecar.get("sha256") and sidecar["sha256"] != sha:
            raise ValueError(f"{nemo}: sha256 {sha} does not match its sidecar ({sidecar['sha256']})")
        own_run = run_id is None
        if own_run:
            run_id = self.client.create_run(self.experiment_id(), run_name=f"register-{name}").info.run_id
        self.client.log_artifacts(run_id, str(model_dir), "model")
        for artifact_path, text in (extra_files or {}).items():
            with tempfile.TemporaryDirectory() as tmp:
                p = Path(tmp) / Path(artifact_path).name
                p.write_text(text, encoding="utf-8")
                parent = str(Path(artifact_path).parent)
                self.client.log_artifact(run_id, str(p), None if parent == "." else parent)
        if own_run:
            self.client.set_terminated(run_id)
        try:
            self.client.create_registered_model(name)
        except Exception as e:  # already exists (any store)
            if "already exists" not in str(e).lower() and "RESOURCE_ALREADY_EXISTS" not in str(e):
                raise
        all_tags = {"checkpoint_sha256": sha, **{k: str(v) for k, v in (tags or {}).items()}}
        run = self.client.get_run(run_id)
        mv = self.client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run_id,
                                              tags=all_tags, description=description)
        version = str(mv.version)
        for alias in aliases:
            self.client.set_registered_model_alias(name, alias, version)
        return self.get(name, version)

    def get(self, name: str, version: str) -> VersionInfo:
        mv = self.client.get_model_version(name, str(version))
        return VersionInfo(name, str(mv.version), list(mv.aliases or []), dict(mv.tags or {}), mv.source,
                           mv.run_id or "")

    def by_alias(self, name: str, alias: str) -> VersionInfo | None:
        try:
            mv = self.client.get_model_version_by_alias(name, alias)
        except Exception:
            return None
        return self.get(name, mv.version)

    def versions(self, name: str) -> list[VersionInfo]:
        try:
            mvs = self.client.search_model_versions(f"name='{name}'")
        except Exception:
            return []
        return sorted((self.get(name, mv.version) for mv in mvs), key=lambda v: int(v.version))

    # -- promotion ----------------------------------------------------------------------------------------
    def promote(self, name: str, version: str, force: bool = False, reason: str = "",
                actor: str | None = None) -> VersionInfo:
        """Move `champion` to `version` if its recorded gate passed (or forced with a reason); audit-tag it."""
        info = self.get(name, version)
        decision = decide_promotion(parse_bool_tag(info.tags.get("gate.passed")), force, reason)
        if not decision.promote:
            raise PermissionError(f"{name} v{version}: {decision.reason}")
        previous = self.by_alias(name, CHAMPION)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        audit = {"promoted_at": stamp, "promoted_by": actor or os.environ.get("USER", "unknown"),
                 "promotion_reason": decision.reason,
                 "previous_champion": previous.version if previous else ""}
        if decision.forced:
            audit["promotion_forced"] = "true"
        for k, v in audit.items():
            self.client.set_model_version_tag(name, str(version), k, v)
        self.client.set_registered_model_alias(name, CHAMPION, str(version))
        return self.get(name, version)

    # -- resolution ---------------------------------------------------------------------------------------
    def download(self, info: VersionInfo, dst_dir: str | os.PathLike) -> Path:
        """Download a version's model folder; verify the .nemo's sha256 against the registry tag."""
        dst = Path(dst_dir)
        dst.mkdir(parents=True, exist_ok=True)
        local = Path(self.client.download_artifacts(info.run_id, "model", str(dst)))
        nemo = local / "model.nemo"
        expected = info.tags.get("checkpoint_sha256")
        if expected and sha256_file(nemo) != expected:
            raise ValueError(f"{info.name} v{info.version}: downloaded {nemo} does not match sha256 {expected}")
        return nemo

    def state(self, name: str) -> dict:
        """Versions, aliases and key tags: what `make demo` prints."""
        keys = ("gate.passed", "data_md5", "base_model_uri", "checkpoint_sha256", "git_commit")
        return {"model": name, "versions": [
            {"version": v.version, "aliases": v.aliases, **{k: v.tags.get(k, "") for k in keys}}
            for v in self.versions(name)]}


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """'models:/name@alias' -> (name, None, alias); 'models:/name/3' -> (name, '3', None)."""
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, None, alias
    if "/" in rest:
        name, version = rest.rsplit("/", 1)
        return name, version, None
    raise ValueError(f"{uri}: expected models:/<name>@<alias> or models:/<name>/<version>")


def resolve_model_uri(uri: str, dst_dir: str | os.PathLike, client=None) -> str:
    """A local .nemo path is returned as is; `models:/name@alias` or `models:/name/N` is downloaded."""
    if not uri.startswith("models:/"):
        p = Path(uri)
        if p.is_dir():
            p = p / "model.nemo"
        if not p.is_file():
            raise FileNotFoundError(f"{uri}: model file not found")
        return str(p)
    name, version, alias = parse_models_uri(uri)
    reg = Registry(client or get_client())
    info = reg.by_alias(name, alias) if alias else reg.get(name, version)
    if info is None:
        raise LookupError(f"{uri}: no such model version/alias in the registry")
    return str(reg.download(info, dst_dir))


def resolve_alias(model_name: str, alias: str, dst_dir: str | os.PathLike, client=None
                  ) -> tuple[str, str, dict]:
    """(local .nemo path, expected sha256, version info) for `model_name@alias`."""
    reg = Registry(client or get_client())
    info = reg.by_alias(model_name, alias)
    if info is None:
        raise LookupError(f"models:/{model_name}@{alias}: alias not set")
    nemo = reg.download(info, dst_dir)
    return str(nemo), info.tags["checkpoint_sha256"], {"name": info.name, "version": info.version,
                                                        "tags": info.tags}


__all__ = ["BASE", "CHALLENGER", "CHAMPION", "Registry", "VersionInfo", "default_tracking_uri", "get_client",
           "parse_models_uri", "resolve_alias", "resolve_model_uri"]
