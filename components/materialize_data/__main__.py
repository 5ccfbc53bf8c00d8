"""`python -m components.materialize_data --data-repo . --data-rev HEAD~1 --data-cache .cache/data_versions`:
materialise a dataset version (or, with an empty --data-rev, print DATA_ROOT's DVC md5) and print it as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from components.materialize_data.core import DataVersionError, as_dict, materialize


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m components.materialize_data", description=__doc__)
    ap.add_argument("--data-repo", default=".", help="git repository (path or URL) holding data.dvc")
    ap.add_argument(
        "--data-rev", default="", help="git revision of data.dvc or a DVC md5; empty = DATA_ROOT as is"
    )
    ap.add_argument("--data-root", default="data", help="the folder used when --data-rev is empty")
    ap.add_argument("--data-cache", default=".cache/data_versions", help="where versions are materialised")
    a = ap.parse_args(argv)
    try:
        m = materialize(a.data_repo, a.data_rev, a.data_root, a.data_cache)
    except (DataVersionError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(as_dict(m)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
