"""`python -m components.export_triton --nemo model.nemo --repo triton_repo`: export a checkpoint by hand.

The pipeline resolves the registry alias instead (component.py); here the expected sha256 comes from
`--sha256`, else from the model artifact's `model.json` sidecar, else it is computed and recorded.
"""

from __future__ import annotations

import argparse
import json
import sys

from components.common.logs import add_verbosity_flags, configure_from
from components.export_triton.core import ExportError, ServingConfig, export_model, read_sidecar


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m components.export_triton",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--nemo",
        required=True,
        help="the .nemo checkpoint to serve, or models:/<name>@<alias> to resolve it in the registry",
    )
    p.add_argument("--repo", default="triton_repo", help="Triton model repository (default: %(default)s)")
    p.add_argument("--sha256", default=None, help="expected sha256 of the .nemo (refused on mismatch)")
    p.add_argument(
        "--att-context-size", default="", help="streaming lookahead, e.g. '[56,1]' (default: model's)"
    )
    p.add_argument(
        "--offline-att-context-size",
        default="",
        help="asr_offline's lookahead (default: the largest in the model.json beside the checkpoint)",
    )
    p.add_argument(
        "--keep", type=int, default=3, help="version folders kept per model (default: %(default)s)"
    )
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=ServingConfig.max_batch_size,
        help="offline utterances per batch",
    )
    p.add_argument(
        "--stream-max-batch-size",
        type=int,
        default=ServingConfig.stream_max_batch_size,
        help="streams advanced together per streaming step",
    )
    p.add_argument("--instances", type=int, default=ServingConfig.instances)
    add_verbosity_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    configure_from(a)
    try:
        serving = ServingConfig(
            max_batch_size=a.max_batch_size,
            stream_max_batch_size=a.stream_max_batch_size,
            instances=a.instances,
        )
        kw = dict(
            keep_versions=a.keep,
            serving=serving,
            offline_att_context_size=a.offline_att_context_size or None,
        )
        r = _export_alias(a, kw) if a.nemo.startswith("models:/") else _export_file(a, kw)
    except (ExportError, LookupError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {"version": r.version, "sha256": r.sha256, "paths": r.paths, "removed": r.removed}, indent=2
        )
    )
    return 0


def _export_alias(a: argparse.Namespace, kw: dict):
    """models:/<name>@<alias>: the registry's checkpoint and sha256, downloaded beside the repository."""
    import os
    import tempfile

    from registry.resolve import parse_models_uri, resolve_alias

    name, _, alias = parse_models_uri(a.nemo)
    if not alias:
        raise ExportError(f"{a.nemo}: give an alias (models:/<name>@champion), not a version number")
    os.makedirs(a.repo, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=a.repo, prefix=".download-") as dst:
        path, expected, info = resolve_alias(name, alias, dst)
        return export_model(
            path, a.repo, expected, {**info, "alias": alias}, a.att_context_size or None, **kw
        )


def _export_file(a: argparse.Namespace, kw: dict):
    """A .nemo file: the expected sha256 from --sha256, else its model.json sidecar, else none (computed)."""
    info: dict = {}
    expected = a.sha256
    if expected is None:
        side = read_sidecar(a.nemo)
        if side:
            info, expected = side, side.get("sha256")
    return export_model(a.nemo, a.repo, expected, info, a.att_context_size or None, **kw)


if __name__ == "__main__":
    sys.exit(main())
