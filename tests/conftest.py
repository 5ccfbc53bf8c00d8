"""Test-wide settings: offline, quiet, deterministic; shared paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_EVAL_AUDIO = REPO_ROOT.parent / "shared" / "eval-audio"


@pytest.fixture(autouse=True)
def _project_logging_reset():
    """A CLI or component body run in-process calls components.common.logs.configure; undo it after the test
    so the next one sees loggers as a library user would (and caplog receives their records)."""
    yield
    from components.common.logs import reset

    reset()
