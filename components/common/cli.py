"""The tail every check-style command line shares (`python -m components.validate_data`, `python -m
components.common.coverage`): flags parsed with --verbose/--quiet, logging configured, the check run; its
summary printed and exit 0 when it passed, 1 when it did not, 2 with a one-line `error: ...` on bad input."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Protocol

from components.common.logs import add_verbosity_flags, configure_from


class Report(Protocol):
    passed: bool
    summary: str


def run_check(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    body: Callable[[argparse.Namespace], Report],
    errors: tuple[type[BaseException], ...],
) -> int:
    """Parse `argv` with `parser` (+ --verbose/--quiet), configure logging, run `body(args)`; print the report's
    summary and return 0 if it passed, else 1. An exception of a type in `errors` (bad input, named by the
    message) prints `error: <message>` on stderr and returns 2; any other propagates."""
    add_verbosity_flags(parser)
    args = parser.parse_args(argv)
    configure_from(args)
    try:
        report = body(args)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary)
    return 0 if report.passed else 1
