"""Registry CLI: `python -m registry list|show|register|promote` (rollback arrives with the registry issue)."""

from __future__ import annotations

import argparse
import json
import sys

from registry.mlflow_adapter import Registry, get_client

DEFAULT_MODEL = "nemotron-asr-finetuned"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m registry", description=__doc__)
    ap.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or .mlflow/mlflow.db")
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"registered model name (default {DEFAULT_MODEL})")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="versions, aliases and key tags")
    show = sub.add_parser("show", help="every tag of one version")
    show.add_argument("version")
    register = sub.add_parser("register", help="register a .nemo (e.g. the real Nemotron 3.5 base) under an alias")
    register.add_argument("nemo", help="path to a .nemo file (model.json beside it is registered too)")
    register.add_argument("--alias", default="base")
    promote = sub.add_parser("promote", help="move `champion` to a version whose gate passed")
    promote.add_argument("version")
    promote.add_argument("--force", action="store_true", help="override a failed/missing gate (needs --reason)")
    promote.add_argument("--reason", default="")
    args = ap.parse_args(argv)

    reg = Registry(get_client(args.tracking_uri))
    if args.cmd == "list":
        print(json.dumps(reg.state(args.model), indent=2))
    elif args.cmd == "show":
        v = reg.get(args.model, args.version)
        print(json.dumps({"version": v.version, "aliases": v.aliases, "source": v.source, "tags": v.tags},
                         indent=2, ensure_ascii=False))
    elif args.cmd == "register":
        v = reg.register(args.model, args.nemo, tags={"role": args.alias}, aliases=(args.alias,))
        print(f"registered models:/{args.model}@{args.alias} (v{v.version}, sha256 {v.tags['checkpoint_sha256'][:12]})")
    elif args.cmd == "promote":
        try:
            v = reg.promote(args.model, args.version, force=args.force, reason=args.reason)
        except (PermissionError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"{args.model} v{v.version} is now champion ({v.tags.get('promotion_reason')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
