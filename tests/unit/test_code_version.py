"""code_version(): the commit of the code that runs, from git in a checkout, else from the file the images bake in
(infra/docker/Dockerfile.component writes /opt/asr/GIT_COMMIT; a cluster pod has no .git)."""

from __future__ import annotations

import subprocess

from components.common.version import GIT_COMMIT_FILE, code_version
from components.register_model.core import git_commit


def test_checkout_answers_git_head(tmp_path, monkeypatch):
    monkeypatch.delenv("ASR_GIT_COMMIT", raising=False)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(tmp_path),
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=n",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        check=True,
    )
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert code_version(tmp_path, commit_file=tmp_path / "absent") == head


def test_no_git_reads_the_baked_in_file(tmp_path, monkeypatch):
    monkeypatch.delenv("ASR_GIT_COMMIT", raising=False)
    f = tmp_path / "GIT_COMMIT"
    f.write_text("0123abc-dirty\n")
    assert code_version(tmp_path / "no-repo", commit_file=f) == "0123abc-dirty"
    assert git_commit(tmp_path / "no-repo", commit_file=f) == "0123abc-dirty"  # register_model's fallback


def test_neither_is_an_error_never_unknown(tmp_path, monkeypatch):
    """Issue 16: the lineage's git_commit is never "unknown": with no env, no file and no checkout the step fails
    naming all three (register_model's manual fallback still says "unknown")."""
    import pytest

    from components.common.version import CodeVersionError

    monkeypatch.delenv("ASR_GIT_COMMIT", raising=False)
    with pytest.raises(CodeVersionError, match=r"ASR_GIT_COMMIT.*absent.*not a git checkout"):
        code_version(tmp_path, commit_file=tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(CodeVersionError):
        code_version(tmp_path, commit_file=empty)
    assert git_commit(tmp_path, commit_file=empty) == "unknown"


def test_the_image_writes_the_file_the_reader_reads():
    from tests.conftest import REPO_ROOT

    dockerfile = (REPO_ROOT / "infra" / "docker" / "Dockerfile.component").read_text()
    assert (
        f"> {GIT_COMMIT_FILE}" in dockerfile
        and "org.opencontainers.image.revision=${GIT_COMMIT}" in dockerfile
    )
