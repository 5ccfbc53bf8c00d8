"""The `containers` tests: opt-in (`make test-containers`), an engine found or started, images built beforehand.

They skip, each with its reason, unless ASR_CONTAINER_TESTS=1 (so `make test` stays fast), when no Docker engine
can run here, or when `make images` has not built the images. Every docker call has a timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from components.common.kfp_base import COMPONENT_IMAGE
from tests.containers import dockerd

TRITON_IMAGE = COMPONENT_IMAGE.replace("/component:", "/triton:")
DOCKER_TIMEOUT_S = 120


def pytest_collection_modifyitems(config, items):
    """Tests that need an engine (the `engine` fixture) are `containers` + `slow`, and opt-in."""
    here = Path(__file__).parent
    mine = [
        it
        for it in items
        if Path(str(it.fspath)).is_relative_to(here) and "engine" in getattr(it, "fixturenames", ())
    ]
    for it in mine:
        it.add_marker(pytest.mark.containers)
        it.add_marker(pytest.mark.slow)
    if os.environ.get("ASR_CONTAINER_TESTS") != "1":
        skip = pytest.mark.skip(
            reason="container tests are opt-in: `make test-containers` (ASR_CONTAINER_TESTS=1)"
        )
        for it in mine:
            it.add_marker(skip)


def docker(*args: str, timeout: float = DOCKER_TIMEOUT_S, check: bool = True) -> subprocess.CompletedProcess:
    """`docker ARGS` against the engine in $DOCKER_HOST, bounded; a failure names the command and its stderr."""
    cmd = ["docker", *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s") from e
    if check and p.returncode != 0:
        raise AssertionError(f"`{' '.join(cmd)}` exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    return p


@pytest.fixture(scope="session")
def engine():
    """DOCKER_HOST of an engine that answers: an existing one, or ours (started here and stopped afterwards)."""
    reason = dockerd.why_no_engine()
    if reason:
        pytest.skip(f"no container engine can run here: {reason}")
    eng = dockerd.up()
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = eng.host
    yield eng.host
    if old is None:
        os.environ.pop("DOCKER_HOST", None)
    else:
        os.environ["DOCKER_HOST"] = old
    if eng.started_here:
        dockerd.down()


@pytest.fixture(scope="session")
def images(engine) -> dict[str, str]:
    for image in (COMPONENT_IMAGE, TRITON_IMAGE):
        if docker("image", "inspect", image, check=False).returncode != 0:
            pytest.fail(f"image {image} is not built: run `make images` first (make test-containers does)")
    return {"component": COMPONENT_IMAGE, "triton": TRITON_IMAGE}


@pytest.fixture(scope="session")
def shared_tmp():
    """A temp folder the containers' non-root user (uid 1000) can read; pytest's own tmp is root-only (0700)."""
    d = Path(tempfile.mkdtemp(prefix="asr-containers-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)
