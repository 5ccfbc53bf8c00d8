"""Content fingerprint of a raw dataset directory: the cache key of the data steps on a cluster.

KFP caches a task when its component and inputs are unchanged. `data_root` is only a path, so a dataset edited
in place would hit a stale cache; validate_data and build_manifest therefore also take this fingerprint, which
changes whenever any file's bytes, name or the set of files changes. (DVC's data.dvc md5 says the same for a
DVC checkout; this step does not need DVC on the cluster.)
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_SKIP_DIRS = {".dvc", ".git", "__pycache__"}


@dataclass(frozen=True)
class Fingerprint:
    sha256: str  # over (relative path, file sha256) of every file, sorted by path
    n_files: int
    n_bytes: int
    seconds: float


def _file_sha256(path: Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(data_root: str | os.PathLike, progress_every: int = 5000) -> Fingerprint:
    """Hash every regular file under `data_root` (hidden and VCS directories skipped; symlinks not followed)."""
    root = Path(data_root)
    if not root.is_dir():
        raise NotADirectoryError(f"fingerprint_data: data_root is not a directory: {root}")
    t0 = time.monotonic()
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in filenames:
            p = Path(dirpath) / name
            if not name.startswith(".") and p.is_file() and not p.is_symlink():
                files.append(p)
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    total = hashlib.sha256()
    n_bytes = 0
    for i, p in enumerate(files, 1):
        rel = p.relative_to(root).as_posix()
        total.update(f"{rel}\0{_file_sha256(p)}\n".encode())
        n_bytes += p.stat().st_size
        if progress_every and i % progress_every == 0:
            print(f"[fingerprint_data] {i}/{len(files)} files", file=sys.stderr, flush=True)
    return Fingerprint(total.hexdigest(), len(files), n_bytes, time.monotonic() - t0)
