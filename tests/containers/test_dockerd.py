"""The daemon helper without a daemon: it stops only what its marker names, and says why no engine can run."""

from __future__ import annotations

import subprocess
import sys

from tests.containers import dockerd


def test_down_without_marker_stops_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(dockerd, "MARKER", tmp_path / "started-by-asr")
    assert dockerd.down() is False


def test_down_stops_exactly_the_pid_in_its_marker(tmp_path, monkeypatch):
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        marker = tmp_path / "started-by-asr"
        marker.write_text(f"{ours.pid}\n")
        monkeypatch.setattr(dockerd, "MARKER", marker)
        assert dockerd.down() is True
        assert ours.wait(timeout=10) is not None and not marker.exists()
        assert other.poll() is None  # anything else keeps running
    finally:
        for p in (ours, other):
            p.kill()
            p.wait(timeout=10)


def test_a_dead_socket_does_not_answer():
    assert dockerd.answers("unix:///nonexistent/docker.sock", timeout=10) is False


def test_no_engine_reason_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(dockerd, "find_engine", lambda: None)
    monkeypatch.setattr(dockerd.shutil, "which", lambda name: None)
    assert "no `docker` client on PATH" in dockerd.why_no_engine()
    monkeypatch.setattr(dockerd.shutil, "which", lambda name: "/usr/bin/docker" if name == "docker" else None)
    assert "no `dockerd` to start" in dockerd.why_no_engine()
