"""CLI: python -m components.build_manifest --data-root data --out outputs/manifests"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from components.build_manifest.core import DUPLICATE_AUDIO_MODES, build_manifests
from components.common.dataset import DatasetError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m components.build_manifest",
        description="Convert a raw ASR dataset to 16 kHz mono WAVs and speaker-disjoint "
        "NeMo manifests (train/val/test.jsonl + summary.json).",
    )
    p.add_argument("--data-root", required=True, help="folder with metadata.csv|jsonl and the audio")
    p.add_argument("--out", required=True, help="manifest directory to create/update")
    p.add_argument("--seed", type=int, default=0, help="split seed (used without a `split` column)")
    p.add_argument("--val-ratio", type=float, default=0.1, help="share of utterances per language for val")
    p.add_argument("--test-ratio", type=float, default=0.1, help="share of utterances per language for test")
    p.add_argument("--langs", default="", help="comma-separated locales to keep (default: all)")
    p.add_argument("--workers", type=int, default=2, help="processes for audio conversion (default 2)")
    p.add_argument(
        "--tar-shards",
        type=int,
        default=0,
        help="also write each split as a NeMo tarred dataset with this many shards (default 0: off)",
    )
    p.add_argument(
        "--shard-above-hours",
        type=float,
        default=0.0,
        help="write tarred shards (one per 4 h of a split) when the corpus has at least this many hours "
        "(default 0: only with --tar-shards; the pipeline's default is 1000)",
    )
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
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(message)s")
    try:
        r = build_manifests(
            a.data_root,
            a.out,
            seed=a.seed,
            val_ratio=a.val_ratio,
            test_ratio=a.test_ratio,
            langs=a.langs or None,
            workers=a.workers,
            tar_shards=a.tar_shards,
            shard_above_hours=a.shard_above_hours,
            verify_sources=a.verify_sources,
            validation=a.validation,
            duplicate_audio=a.duplicate_audio,
        )
    except (DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({**r.brief(), "summary": str(r.summary_path)}, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
