"""resolve_base: the base model URI resolved to one immutable checkpoint, its sha256, and the code version.

`models:/<name>@<alias>` is pinned to `models:/<name>/<version>` (the version the alias points at *now*), whose
sha256 is the registry's `checkpoint_sha256` tag (the registry verifies it on every download, so nothing is
downloaded here); a local `.nemo` (or a folder holding one: registry/resolve.py's rule) is hashed.
Downstream steps get the pinned URI, so an alias moved mid-run cannot change what they load, and the fine-tune's cache key gets the
sha256. `expected_sha256` (the `base_model_sha256` setting; `reproduce` sets it from a version's lineage)
refuses any other checkpoint by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.common.io import sha256_file
from components.common.version import code_version
from registry.resolve import local_checkpoint  # the one model-reference rule (registry/resolve.py)


class BaseModelMismatch(ValueError):
    """The base model URI resolves to another checkpoint than the one required (deterministic)."""


@dataclass(frozen=True)
class ResolvedBase:
    uri: str  # pinned: models:/<name>/<version>, or the local file
    sha256: str
    code_version: str


def resolve_base(uri: str, expected_sha256: str = "", tracking_uri: str | None = None) -> ResolvedBase:
    uri = uri.strip()
    if uri.startswith("models:/"):
        from registry.mlflow_adapter import Registry
        from registry.resolve import client_for, find_version

        reg = Registry(client_for(tracking_uri))
        info = find_version(reg, uri)
        sha = info.tags.get("checkpoint_sha256", "")
        if not sha:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                sha = sha256_file(reg.download(info, tmp))
        pinned = f"models:/{info.name}/{info.version}"
    elif "://" in uri or uri.startswith(("runs:", "models:")):
        raise ValueError(
            f"base_model_uri {uri}: expected models:/<name>@<alias>, models:/<name>/<version> or a path "
            "(a run's artifact is not a pinned version: register it)"
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
