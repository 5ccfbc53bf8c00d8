"""CLI: python -m components.validate_data --data-root data --out outputs/validation"""

from __future__ import annotations

import argparse
import json
import sys

from components.validate_data.core import CHECKS, DatasetError, validate_dataset


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m components.validate_data",
        description="Check a raw ASR dataset (metadata + audio) with "
        "great-expectations; exit 1 when a hard check fails.",
    )
    p.add_argument("--data-root", required=True, help="folder with metadata.csv|jsonl and the audio")
    p.add_argument("--out", required=True, help="where validation.json, failures.csv and data_docs/ go")
    p.add_argument("--min-duration", type=float, default=0.3, help="seconds (default 0.3)")
    p.add_argument("--max-duration", type=float, default=30.0, help="seconds (default 30)")
    p.add_argument("--prompt-dictionary", help="JSON file {locale: index}; default: the tiny model config's")
    p.add_argument(
        "--hard-checks",
        help="comma-separated checks that fail validation (default: the "
        f"error-level ones). Known: {', '.join(CHECKS)}",
    )
    p.add_argument("--no-data-docs", action="store_true", help="skip building the Data Docs site")
    p.add_argument("--workers", type=int, default=2, help="processes for decoding audio (default 2)")
    a = p.parse_args(argv)
    prompts = json.loads(open(a.prompt_dictionary, encoding="utf-8").read()) if a.prompt_dictionary else None
    hard = [c.strip() for c in a.hard_checks.split(",") if c.strip()] if a.hard_checks is not None else None
    try:
        res = validate_dataset(
            a.data_root,
            a.out,
            prompt_dictionary=prompts,
            min_duration=a.min_duration,
            max_duration=a.max_duration,
            hard_checks=hard,
            data_docs=not a.no_data_docs,
            workers=a.workers,
        )
    except (DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(res.summary)
    return 0 if res.passed else 1


if __name__ == "__main__":
    sys.exit(main())
