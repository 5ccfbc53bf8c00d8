"""components.common.cli: the one run-a-check CLI tail (validate_data, the tokenizer-coverage check)."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

import pytest

from components.common.cli import run_check


@dataclass
class _Report:
    passed: bool
    summary: str


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="x")
    p.add_argument("--passed", action="store_true")
    return p


def test_exit_0_when_passed_1_when_not_and_the_summary_on_stdout(capsys):
    def body(a):
        return _Report(a.passed, f"summary passed={a.passed}")

    assert run_check(_parser(), ["--passed"], body, (ValueError,)) == 0
    assert capsys.readouterr().out == "summary passed=True\n"
    assert run_check(_parser(), [], body, (ValueError,)) == 1
    assert capsys.readouterr().out == "summary passed=False\n"


def test_a_named_error_is_one_line_and_exit_2_others_propagate(capsys):
    def bad(_a):
        raise ValueError("metadata.csv: column `text` missing")

    assert run_check(_parser(), [], bad, (ValueError,)) == 2
    assert capsys.readouterr().err == "error: metadata.csv: column `text` missing\n"
    with pytest.raises(KeyError):
        run_check(_parser(), [], lambda a: {}["x"], (ValueError,))


def test_verbosity_flags_configure_logging():
    run_check(_parser(), ["--quiet", "--passed"], lambda a: _Report(True, ""), ())
    assert logging.getLogger("components").level == logging.WARNING
