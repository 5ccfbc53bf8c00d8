"""`python -m components.fingerprint_data DATA_ROOT`: print the dataset's content fingerprint as JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from components.common.logs import add_verbosity_flags, configure_from
from components.fingerprint_data.core import fingerprint


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m components.fingerprint_data", description=__doc__)
    ap.add_argument("data_root", help="raw dataset directory")
    add_verbosity_flags(ap)
    args = ap.parse_args(argv)
    configure_from(args)
    try:
        fp = fingerprint(args.data_root)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(dataclasses.asdict(fp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
