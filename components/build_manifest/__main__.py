"""CLI: python -m components.build_manifest --data-root data --out outputs/manifests"""

from __future__ import annotations

import argparse
import json
import sys

from components.build_manifest.core import DUPLICATE_AUDIO_MODES, build_manifests
from components.build_manifest.settings import ManifestSettings
from components.common.dataset import DatasetError
from components.common.logs import add_verbosity_flags, configure_from
from components.common.settings import add_arguments, from_arguments, to_mapping


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m components.build_manifest",
        description="Convert a raw ASR dataset to 16 kHz mono WAVs and speaker-disjoint "
        "NeMo manifests (train/val/test.jsonl + summary.json).",
    )
    p.add_argument("--data-root", required=True, help="folder with metadata.csv|jsonl and the audio")
    p.add_argument("--out", required=True, help="manifest directory to create/update")
    p.add_argument("--seed", type=int, default=0, help="split seed (used without a `split` column)")
    p.add_argument("--langs", default="", help="comma-separated locales to keep (default: all)")
    p.add_argument("--workers", type=int, default=2, help="processes for audio conversion (default 2)")
    # the step's settings, one flag per field of its record (the pipeline's `build_manifest` section); the
    # build folder is --out here (build_root and build_pods are the pipeline's data volume and fan-out)
    add_arguments(p, ManifestSettings, skip=("build_root", "build_pods"))
    p.add_argument(
        "--verify-sources",
        action="store_true",
        help="re-hash every source instead of trusting unchanged size+mtime from the previous run",
    )
    p.add_argument(
        "--validation",
        help="validate_data's validation.json for this dataset: the rows it rejected are left out",
    )
    p.add_argument(
        "--duplicate-audio",
        choices=DUPLICATE_AUDIO_MODES,
        default="reject",
        help="identical audio in several rows: drop every copy (default) or keep the first line's",
    )
    add_verbosity_flags(p)
    a = p.parse_args(argv)
    configure_from(a)
    try:
        record = to_mapping(from_arguments(ManifestSettings, a))
        del record["build_root"], record["build_pods"]
        r = build_manifests(
            a.data_root,
            a.out,
            seed=a.seed,
            langs=a.langs or None,
            workers=a.workers,
            verify_sources=a.verify_sources,
            validation=a.validation,
            duplicate_audio=a.duplicate_audio,
            **record,
        )
    except (DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({**r.brief(), "summary": str(r.summary_path)}, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
