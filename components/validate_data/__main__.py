"""CLI: python -m components.validate_data --data-root data --out outputs/validation"""

from __future__ import annotations

import argparse
import json
import sys

from components.common.cli import run_check
from components.common.settings import add_arguments, from_arguments, to_mapping
from components.validate_data import core
from components.validate_data.core import CHECKS_BY_NAME, DatasetError, validate_dataset
from components.validate_data.settings import ValidateSettings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m components.validate_data",
        description="Check a raw ASR dataset (metadata + audio) with "
        "great-expectations; exit 1 when a hard check fails.",
    )
    p.add_argument("--data-root", required=True, help="folder with metadata.csv|jsonl and the audio")
    p.add_argument("--out", required=True, help="where validation.json, failures.csv and data_docs/ go")
    p.add_argument(
        "--max-clipped",
        type=float,
        default=core.MAX_CLIPPED,
        help="share of samples at full scale above which a clip is flagged (default %(default)s)",
    )
    p.add_argument(
        "--min-rms-dbfs",
        type=float,
        default=core.MIN_RMS_DBFS,
        help="clips quieter than this (dBFS RMS) are flagged near-silent (default %(default)s)",
    )
    # the step's settings, one flag per field of its record (the pipeline's `validate_data` section)
    add_arguments(p, ValidateSettings)
    p.add_argument("--prompt-dictionary", help="JSON file {locale: index}; default: the tiny model config's")
    p.add_argument(
        "--hard-checks",
        help="comma-separated checks that fail validation (default: the "
        f"error-level ones). Known: {', '.join(CHECKS_BY_NAME)}",
    )
    p.add_argument("--no-data-docs", action="store_true", help="skip building the Data Docs site")
    p.add_argument("--workers", type=int, default=2, help="processes for decoding audio (default 2)")
    return p


def _validate(a: argparse.Namespace):
    prompts = json.loads(open(a.prompt_dictionary, encoding="utf-8").read()) if a.prompt_dictionary else None
    hard = [c.strip() for c in a.hard_checks.split(",") if c.strip()] if a.hard_checks is not None else None
    return validate_dataset(
        a.data_root,
        a.out,
        prompt_dictionary=prompts,
        hard_checks=hard,
        data_docs=not a.no_data_docs,
        workers=a.workers,
        max_clipped=a.max_clipped,
        min_rms_dbfs=a.min_rms_dbfs,
        **to_mapping(from_arguments(ValidateSettings, a)),
    )


def main(argv: list[str] | None = None) -> int:
    return run_check(_parser(), argv, _validate, (DatasetError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
