"""The code version a step runs: the lineage's `git_commit` and a part of the fine-tune's cache key.

In order: $ASR_GIT_COMMIT (the component image sets it from its GIT_COMMIT build arg), the file
/opt/asr/GIT_COMMIT (baked into the image by the same build), then `git rev-parse HEAD` of the checkout this
code is imported from, with `+dirty.<sha256 of the diff, 12 hex>` appended when tracked files differ from that
commit (a dirty checkout is not a version anyone can check out again; the diff's hash keeps two different
uncommitted edits from sharing a cache key). Never "unknown": without any of the three it is an error naming them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

GIT_COMMIT_FILE = Path("/opt/asr/GIT_COMMIT")  # written by infra/docker/Dockerfile.component
IMAGE_FILE = GIT_COMMIT_FILE
DIRTY = "+dirty"
_REPO = Path(__file__).resolve().parents[2]


class CodeVersionError(RuntimeError):
    """No commit could be found for the running code."""


def git_head(repo: str | os.PathLike = _REPO) -> str:
    """`<sha>` or `<sha>+dirty` for a git checkout; '' when `repo` is not one (or git is missing)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        )
        diff = subprocess.run(["git", "diff", "HEAD"], cwd=repo, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    if not diff.stdout.strip():
        return head.stdout.strip()
    return f"{head.stdout.strip()}{DIRTY}.{hashlib.sha256(diff.stdout).hexdigest()[:12]}"


def code_version(repo: str | os.PathLike = _REPO, commit_file: str | os.PathLike = GIT_COMMIT_FILE) -> str:
    """The running code's commit (module docstring)."""
    env = os.environ.get("ASR_GIT_COMMIT", "").strip()
    if env and env != "unknown":
        return env
    try:
        baked = (Path(commit_file).read_text(encoding="utf-8").split() or [""])[0]
    except OSError:
        baked = ""
    if baked and baked != "unknown":
        return baked
    head = git_head(repo)
    if head:
        return head
    raise CodeVersionError(
        f"no code version: $ASR_GIT_COMMIT is unset, {commit_file} is absent and {repo} is not a git checkout "
        "(build the image with GIT_COMMIT=$(git rev-parse HEAD))"
    )


def is_dirty(version: str) -> bool:
    """A checkout's `+dirty.<hash>`, or the `-dirty` an image built from uncommitted changes records."""
    return DIRTY in version or version.endswith("-dirty")


def environment() -> dict[str, str]:
    """What a run's numbers also depend on (`reproduce` names an entry that differs): library versions, torch
    threads, machine, GPU. Call it where the work ran (the fine-tune records it on its model artifact): it imports
    torch, NeMo and Lightning."""
    import platform

    env = {"python": platform.python_version(), "machine": platform.machine()}
    for mod in ("torch", "nemo", "lightning", "numpy"):
        try:
            env[mod] = str(__import__(mod).__version__)
        except Exception:  # noqa: BLE001 (absent or broken: recorded as such)
            env[mod] = "absent"
    try:
        import torch

        env["torch_threads"] = str(torch.get_num_threads())
        env["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:  # noqa: BLE001
        pass
    return env
