"""Content fingerprint of a raw dataset: the cache key of the data steps on a cluster.

KFP caches a task when its component and inputs are unchanged. `data_root` is only a path, so a dataset edited
in place would hit a stale cache; validate_data and build_manifest therefore also take this fingerprint.

It covers exactly what those two steps read, through the same reader and path resolver
(`components.common.dataset`): the metadata file's bytes, and for every distinct audio path in it, how the
path resolves (refused, missing, or the real file inside the root: symlinks and hidden files included, since
the steps follow them) and that file's sha256. Files nobody references (notes, a `.git` folder) do not move
the key; re-pointing a symlink or editing a hidden file that a row names does. When the metadata cannot be
parsed at all, its bytes alone are the key (validation then fails on it anyway).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from components.common.dataset import DatasetError, find_metadata, read_metadata, resolve_audio
from components.common.io import sha256_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fingerprint:
    sha256: str  # over the metadata bytes and (audio path, resolution, file sha256) of every referenced file
    n_files: int  # files hashed: the metadata file + distinct audio files read
    n_bytes: int
    seconds: float


def fingerprint(data_root: str | os.PathLike, progress_every: int = 5000) -> Fingerprint:
    """Hash what validate_data and build_manifest read from `data_root` (module docstring)."""
    root = Path(data_root)
    if not root.is_dir():
        raise NotADirectoryError(f"fingerprint_data: data_root is not a directory: {root}")
    t0 = time.monotonic()
    meta_path = find_metadata(root)
    total = hashlib.sha256()
    total.update(f"{meta_path.name}\0{sha256_file(meta_path)}\n".encode())
    n_files, n_bytes = 1, meta_path.stat().st_size
    try:
        audio_paths = sorted({r.audio for r in read_metadata(root).rows})
    except DatasetError as e:
        log.warning("fingerprint_data: metadata unreadable (%s): fingerprinting its bytes only", e)
        audio_paths = []
    hashed: dict[str, str] = {}
    for i, audio in enumerate(audio_paths, 1):
        real, refused = resolve_audio(root, audio)
        if real is None:
            what = f"refused\0{refused}"
        elif not real.is_file():
            what = "missing"
        else:
            key = str(real)
            if key not in hashed:
                hashed[key] = sha256_file(real)
                n_files += 1
                n_bytes += real.stat().st_size
            rel = os.path.relpath(real, os.path.realpath(root))
            what = f"file\0{rel}\0{hashed[key]}"
        total.update(f"{audio!r}\0{what}\n".encode("utf-8", "surrogateescape"))
        if progress_every and i % progress_every == 0:
            log.info("fingerprint_data: %d/%d audio paths", i, len(audio_paths))
    return Fingerprint(total.hexdigest(), n_files, n_bytes, time.monotonic() - t0)
