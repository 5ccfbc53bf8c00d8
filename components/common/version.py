"""Which code is running: the git commit of a checkout, else the commit baked into the image.

On the cluster a step runs from the component image, which has no .git: infra/docker/Dockerfile.component writes
the commit `make images` built from (``git rev-parse HEAD``, ``-dirty`` with uncommitted changes) to
``/opt/asr/GIT_COMMIT`` and sets the same value as the image label ``org.opencontainers.image.revision``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

GIT_COMMIT_FILE = Path("/opt/asr/GIT_COMMIT")
UNKNOWN = "unknown"


def code_version(repo: str | Path = ".", commit_file: str | Path = GIT_COMMIT_FILE) -> str:
    """`git rev-parse HEAD` in `repo`; where that fails (no git, no .git), the first line of `commit_file`;
    else "unknown"."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        if out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        lines = Path(commit_file).read_text().split()
    except OSError:
        return UNKNOWN
    return lines[0] if lines else UNKNOWN
