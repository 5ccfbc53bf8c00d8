"""`make rehearse` checks free disk before it starts: CI's rehearsal once ran the disk full and tritonserver's
stub died extracting the 2.5 GB checkpoint ("[Errno 28] No space left on device") after 10 minutes of work."""

from __future__ import annotations

import shutil
from collections import namedtuple

import pytest

from pipelines import rehearse

Usage = namedtuple("Usage", "total used free")


def test_rehearsal_refuses_to_start_without_the_disk_it_needs(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(100e9, 97e9, 3e9))
    with pytest.raises(rehearse.DiskError) as e:
        rehearse.check_disk(tmp_path / "outputs", tmp_path / "tmp")
    msg = str(e.value)
    assert "3.0 GB free" in msg and f"{rehearse.NEED_DISK_GB:.0f} GB" in msg and str(tmp_path) in msg


def test_rehearsal_starts_with_enough_disk(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(500e9, 100e9, 400e9))
    rehearse.check_disk(tmp_path / "outputs", tmp_path / "tmp")  # no error
