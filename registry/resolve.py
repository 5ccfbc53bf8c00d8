"""One rule that turns a model reference into a local `.nemo` file, for every step and command line.

Accepted references:
- a local `.nemo` file (any name), returned as is;
- a local folder holding `model.nemo` (a fine-tune output, a downloaded registry version), else `base.nemo` (a
  bootstrap cache entry), else exactly one other `*.nemo`;
- `models:/<name>@<alias>` or `models:/<name>/<version>`: the registry version's checkpoint, downloaded into
  `dst_dir` and checked against its `checkpoint_sha256` tag (Registry.download);
- `runs:/<run_id>/<artifact path>`: a run's artifact, downloaded into `dst_dir`; a `.nemo` or a folder that the
  folder rule above applies to.

Each failure names the path or URI and the reason: FileNotFoundError (no such local file or folder, a folder
without a checkpoint), ValueError (several checkpoints, a malformed URI, a scheme other than models:/ and
runs:/), LookupError (the registry or the tracking store has no such version, alias, run or artifact).
MLflow is imported only when a URI needs it.
"""

from __future__ import annotations

import os
from pathlib import Path

from registry import mlflow_errors

CANONICAL = ("model.nemo", "base.nemo")  # a folder's checkpoint by name, in this order
FORMS = "a .nemo path, a folder holding one, models:/<name>@<alias>, models:/<name>/<version> or runs:/<run_id>/<path>"


def local_checkpoint(path: str | os.PathLike) -> Path:
    """The `.nemo` a local path names: the file itself, or a folder's checkpoint (module docstring)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder (expected {FORMS})")
    for name in CANONICAL:
        if (p / name).is_file():
            return p / name
    found = sorted(f for f in p.glob("*.nemo") if f.is_file())
    if not found:
        raise FileNotFoundError(f"{path}: no .nemo checkpoint in this folder")
    if len(found) > 1:
        names = ", ".join(f.name for f in found)
        raise ValueError(f"{path}: {len(found)} .nemo checkpoints ({names}) and none is model.nemo; name one")
    return found[0]


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """'models:/name@alias' -> (name, None, alias); 'models:/name/3' -> (name, '3', None)."""
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        if name and alias:
            return name, None, alias
    elif "/" in rest:
        name, version = rest.rsplit("/", 1)
        if name and version.isdigit():
            return name, version, None
    raise ValueError(f"{uri}: expected models:/<name>@<alias> or models:/<name>/<version> (a number)")


def find_version(reg, uri: str):
    """The registry version (VersionInfo) a `models:/` URI names; LookupError naming the URI if there is none."""
    name, version, alias = parse_models_uri(uri)
    if alias:
        info = reg.by_alias(name, alias)
    else:
        try:
            info = reg.get(name, version)
        except Exception as e:
            if not mlflow_errors.missing(e):
                raise
            info = None
    if info is None:
        what = f"alias {alias!r}" if alias else f"version {version}"
        raise LookupError(f"{uri}: no such model version or alias in the registry (model {name!r}, {what})")
    return info


def client_for(tracking_uri: str | None = None):
    """An MLflow client on `tracking_uri` ("", None or "off": $MLFLOW_TRACKING_URI, else the repo's store)."""
    from components.common.tracking import get_client, is_off

    return get_client(None if is_off(tracking_uri) else tracking_uri)


def resolve_model(uri: str, dst_dir: str | os.PathLike, client=None, tracking_uri: str | None = None) -> str:
    """The local `.nemo` path `uri` names (module docstring); registry and run URIs are downloaded into
    `dst_dir` through `client` (else one on `tracking_uri`)."""
    uri = (uri or "").strip()
    if not uri:
        raise ValueError(f"model reference is empty (expected {FORMS})")
    if uri.startswith("models:/"):
        from registry.mlflow_adapter import Registry

        reg = Registry(client or client_for(tracking_uri))
        return str(reg.download(find_version(reg, uri), dst_dir))
    if uri.startswith("runs:/"):
        return _run_artifact(client or client_for(tracking_uri), uri, dst_dir)
    if "://" in uri or uri.startswith(("models:", "runs:")):
        raise ValueError(f"{uri}: unsupported model reference (expected {FORMS})")
    return str(local_checkpoint(uri))


def _run_artifact(client, uri: str, dst_dir: str | os.PathLike) -> str:
    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    path = path.strip("/")
    if not run_id or not path:
        raise ValueError(f"{uri}: expected runs:/<run_id>/<artifact path>")
    try:
        client.get_run(run_id)
    except Exception as e:
        if mlflow_errors.missing(e):
            raise LookupError(f"{uri}: no such run in the tracking store") from e
        raise
    parent, _, leaf = path.rpartition("/")
    if leaf not in {f.path.rpartition("/")[2] for f in client.list_artifacts(run_id, parent or None)}:
        raise LookupError(f"{uri}: no such artifact in run {run_id}")
    Path(dst_dir).mkdir(parents=True, exist_ok=True)
    local = client.download_artifacts(run_id, path, str(dst_dir))
    return str(local_checkpoint(local))


def resolve_alias(
    model_name: str, alias: str, dst_dir: str | os.PathLike, client=None
) -> tuple[str, str, dict]:
    """(local .nemo path, expected sha256, version info) for `models:/<model_name>@<alias>`."""
    from registry.mlflow_adapter import Registry

    reg = Registry(client or client_for())
    info = find_version(reg, f"models:/{model_name}@{alias}")
    nemo = reg.download(info, dst_dir)
    return (
        str(nemo),
        info.tags["checkpoint_sha256"],
        {"name": info.name, "version": info.version, "tags": info.tags},
    )
