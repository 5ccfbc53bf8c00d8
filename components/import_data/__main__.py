"""CLI: python -m components.import_data DATA_ROOT [--format auto|nemo|hf_audiofolder|hf_disk|lhotse]"""

from __future__ import annotations

import argparse
import json
import sys

from components.import_data.core import FORMATS, ImportDataError, import_dataset


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m components.import_data",
        description="Write DATA_ROOT/metadata.jsonl from existing data in it (NeMo manifests, a Hugging Face "
        "audiofolder or save_to_disk folder, a Lhotse CutSet); the audio stays where it is.",
    )
    p.add_argument("data_root")
    p.add_argument("--format", default="auto", choices=("auto", *FORMATS), help="default: detect it")
    p.add_argument(
        "--manifest",
        action="append",
        default=[],
        help="a NeMo manifest to import (repeatable; default: every one in DATA_ROOT)",
    )
    a = p.parse_args(argv)
    try:
        r = import_dataset(a.data_root, a.format, a.manifest or None)
    except ImportDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {"format": r.format, "rows": r.rows, "metadata": str(r.metadata), "dropped": r.dropped},
            ensure_ascii=False,
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
