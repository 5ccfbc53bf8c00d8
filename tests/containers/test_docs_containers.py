"""What docs/CLUSTER.md, the README and .ci/run say about the containers matches the code (no engine needed)."""

from __future__ import annotations

import re

from components.common.version import GIT_COMMIT_FILE
from tests.conftest import REPO_ROOT
from tests.containers import dockerd

CLUSTER = (REPO_ROOT / "docs" / "CLUSTER.md").read_text()
README = (REPO_ROOT / "README.md").read_text()
CI = (REPO_ROOT / ".ci" / "run").read_text()


def test_cluster_doc_states_the_daemon_paths_and_the_commit_file():
    assert str(dockerd.DATA_ROOT) == "/var/lib/asr-docker" and "/var/lib/asr-docker" in CLUSTER
    assert dockerd.OWN_HOST in CLUSTER
    assert str(GIT_COMMIT_FILE) in CLUSTER and "code_version()" in CLUSTER


def test_cluster_doc_names_the_default_base_image():
    base = re.search(
        r"^ARG BASE_IMAGE=\S+/(python:\S+)$",
        (REPO_ROOT / "infra" / "docker" / "Dockerfile.component").read_text(),
        re.M,
    ).group(1)
    assert f"`{base}`" in CLUSTER


def test_ci_runs_the_full_container_check_after_the_rehearsal_and_stops_its_daemon():
    lines = [line.strip() for line in CI.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    order = [
        lines.index(c)
        for c in ("make test", "make rehearse", "make docker-up", "make images", "make test-containers")
    ]
    assert order == sorted(order)
    assert "trap 'make docker-down' EXIT" in lines and "docker.io" in CI
    # the README says which container check CI runs: the full one (make test-containers), not a reduced one
    assert "CI runs the full container check" in README
