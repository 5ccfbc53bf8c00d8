"""resolve_base: the base model URI resolved to one immutable checkpoint, its sha256, and the code version.

`models:/<name>@<alias>` is pinned to `models:/<name>/<version>` (the version the alias points at *now*), whose
sha256 is the registry's `checkpoint_sha256` tag (the registry verifies it on every download, so nothing is
downloaded here); a local `.nemo` (or a folder holding model.nemo/base.nemo) is hashed. Downstream steps get
the pinned URI, so an alias moved mid-run cannot change what they load, and the fine-tune's cache key gets the
sha256. `expected_sha256` (the `base_model_sha256` setting; `reproduce` sets it from a version's lineage)
refuses any other checkpoint by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.common.io import sha256_file
from components.common.version import code_version


class BaseModelMismatch(ValueError):
    """The base model URI resolves to another checkpoint than the one required (deterministic)."""


@dataclass(frozen=True)
class ResolvedBase:
    uri: str  # pinned: models:/<name>/<version>, or the local file
    sha256: str
    code_version: str


def local_checkpoint(uri: str) -> Path:
    path = Path(uri)
    if path.is_dir():
        path = next(
            (path / n for n in ("model.nemo", "base.nemo") if (path / n).is_file()), path / "model.nemo"
        )
    if not path.is_file():
        raise FileNotFoundError(f"base_model_uri {uri}: no such checkpoint")
    return path


def resolve_base(uri: str, expected_sha256: str = "", tracking_uri: str | None = None) -> ResolvedBase:
    uri = uri.strip()
    if uri.startswith("models:/"):
        from registry.mlflow_adapter import Registry, get_client, parse_models_uri

        name, version, alias = parse_models_uri(uri)
        reg = Registry(get_client(tracking_uri or None))
        info = reg.by_alias(name, alias) if alias else reg.get(name, version)
        if info is None:
            raise LookupError(f"base_model_uri {uri}: no such model version or alias in the registry")
        sha = info.tags.get("checkpoint_sha256", "")
        if not sha:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                sha = sha256_file(reg.download(info, tmp))
        pinned = f"models:/{name}/{info.version}"
    elif "://" in uri or uri.startswith("runs:/"):
        raise ValueError(
            f"base_model_uri {uri}: expected models:/<name>@<alias>, models:/<name>/<version> or a path"
        )
    else:
        path = local_checkpoint(uri)
        pinned, sha = str(path.resolve()), sha256_file(path)
    want = (expected_sha256 or "").strip().lower()
    if want and sha != want:
        raise BaseModelMismatch(
            f"base_model_uri {uri} resolves to {pinned} with sha256 {sha}, but base_model_sha256 requires {want} "
            "(the alias moved? name the version that has it: models:/<name>/<version>)"
        )
    return ResolvedBase(pinned, sha, code_version())
