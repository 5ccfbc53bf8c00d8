"""Registry CLI: `python -m registry list|show|register|promote|rollback` (docs/REGISTRY.md).

list                               versions, aliases, key tags, champion history
show VERSION [--card]              every tag of one version (or its model card)
register NEMO [--alias base]       register a .nemo (e.g. the real Nemotron 3.5 base) under an alias (never
                                   `champion`: that alias moves only through promote/rollback)
promote VERSION [--force --reason] move `champion`; refused without a passing gate record unless forced with a
                                   reason (the audited override: an override record is written)
rollback --reason TEXT [--to V]    move `champion` back to the previous champion and re-export it to Triton;
         [--force]                 the target's gate record (or override record) is verified again
rollout canary|full|rollback|show  two-step rollout through the gateway's canary share (registry/rollout.py)
"""

from __future__ import annotations

import argparse
import json
import sys

from components.common.logs import add_verbosity_flags, configure_from
from registry.mlflow_adapter import Registry, get_client

DEFAULT_MODEL = "nemotron-asr-finetuned"


def rollback_and_export(
    reg: Registry, name: str, reason: str, triton_repo=None, keep_versions: int = 3, **kw
):
    """`registry.rollback.rollback`, then serving follows: the restored checkpoint is exported into
    `triton_repo` (None: registry only) as its newest version. The CLI is an entry point and wires the export
    step in (the `registry` package itself imports no step; pyproject's import-linter contract)."""
    import tempfile
    from pathlib import Path

    from registry.rollback import export_failed_message, record_export, rollback

    if triton_repo is None:
        return rollback(reg, name, reason, **kw)
    Path(triton_repo).mkdir(
        parents=True, exist_ok=True
    )  # download beside it: the export hardlinks, not copies
    with tempfile.TemporaryDirectory(dir=triton_repo, prefix=".rollback-") as tmp:
        r = rollback(reg, name, reason, download_dir=tmp, **kw)
        from components.export_triton.core import export_model

        x = r.restore
        try:
            e = export_model(
                x.nemo, triton_repo, x.sha256, x.model_info, x.att_context_size, keep_versions=keep_versions
            )
        except Exception as err:
            raise RuntimeError(export_failed_message(r, triton_repo, err)) from err
        return record_export(reg, r, e.version, e.paths)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m registry", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or .mlflow/mlflow.db")
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"registered model name (default {DEFAULT_MODEL})")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="versions, aliases, key tags and the champion history")
    show = sub.add_parser("show", help="every tag of one version")
    show.add_argument("version")
    show.add_argument("--card", action="store_true", help="print the version's model card (Markdown) instead")
    register = sub.add_parser(
        "register", help="register a .nemo (e.g. the real Nemotron 3.5 base) under an alias"
    )
    register.add_argument("nemo", help="path to a .nemo file (model.json beside it is registered too)")
    register.add_argument("--alias", default="base", help="any alias but `champion` (default: %(default)s)")
    promote = sub.add_parser("promote", help="move `champion` to a version whose gate passed")
    promote.add_argument("version")
    promote.add_argument(
        "--force", action="store_true", help="override a failed/missing gate (needs --reason)"
    )
    promote.add_argument("--reason", default="")
    promote.add_argument(
        "--actor", default=None, help="who, for the audit tags (default: $ASR_REGISTRY_ACTOR or login)"
    )
    rollback = sub.add_parser(
        "rollback", help="move `champion` back to the previous champion and re-export it"
    )
    rollback.add_argument("--reason", required=True, help="why the current champion is withdrawn (audit tag)")
    rollback.add_argument(
        "--to", default=None, metavar="VERSION", help="an earlier champion (default: the previous)"
    )
    rollback.add_argument(
        "--triton-repo", default="triton_repo", help="Triton model repository (default: %(default)s)"
    )
    rollback.add_argument("--no-export", action="store_true", help="move the alias only; do not touch Triton")
    rollback.add_argument(
        "--force",
        action="store_true",
        help="roll back to a version without valid gate/override evidence (audited with --reason)",
    )
    rollback.add_argument(
        "--att-context-size",
        default=None,
        help="streaming lookahead for the export (default: the one the version was evaluated at)",
    )
    rollback.add_argument(
        "--actor", default=None, help="who, for the audit tags (default: $ASR_REGISTRY_ACTOR or login)"
    )
    rollback.add_argument(
        "--run-id", default="", help="the pipeline/automation run doing this, for the audit tags"
    )
    from registry.rollout import add_cli as add_rollout_cli

    add_rollout_cli(sub)
    add_verbosity_flags(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_from(args)
    reg = Registry(get_client(args.tracking_uri))
    try:
        print(_run(reg, args))
    except (PermissionError, ValueError, LookupError, FileNotFoundError, TimeoutError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _run(reg: Registry, args: argparse.Namespace) -> str:
    """The sub-command's work -> what it prints."""
    if args.cmd == "list":
        return json.dumps(reg.state(args.model), indent=2, ensure_ascii=False)
    if args.cmd == "show":
        v = reg.get(args.model, args.version)
        if args.card:
            return reg.client.get_model_version(args.model, v.version).description or "(no model card)"
        return json.dumps(
            {"version": v.version, "aliases": v.aliases, "source": v.source, "tags": v.tags},
            indent=2,
            ensure_ascii=False,
        )
    if args.cmd == "register":
        v = reg.register(args.model, args.nemo, tags={"role": args.alias}, aliases=(args.alias,))
        return (
            f"registered models:/{args.model}@{args.alias} (v{v.version}, "
            f"sha256 {v.tags['checkpoint_sha256'][:12]})"
        )
    if args.cmd == "promote":
        v = reg.promote(args.model, args.version, force=args.force, reason=args.reason, actor=args.actor)
        return f"{args.model} v{v.version} is now champion ({v.tags.get('promotion_reason')})"
    if args.cmd == "rollback":
        r = rollback_and_export(
            reg,
            args.model,
            args.reason,
            to=args.to,
            actor=args.actor,
            run_id=args.run_id,
            triton_repo=None if args.no_export else args.triton_repo,
            att_context_size=args.att_context_size,
            force=args.force,
        )
        where = (
            f"; Triton version {r.triton_version} in {args.triton_repo}"
            if r.triton_version is not None
            else "; Triton not touched (--no-export)"
        )
        return f"{args.model}: champion v{r.from_version} -> v{r.to_version} ({r.reason}){where}"
    from registry.rollout import run_cli as run_rollout_cli  # args.cmd == "rollout"

    return run_rollout_cli(reg, args, rollback_and_export)


if __name__ == "__main__":
    sys.exit(main())
