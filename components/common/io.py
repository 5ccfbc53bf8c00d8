"""Small file helpers: atomic writes and content hashes (nothing is ever half-written)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(
    path: str | os.PathLike, data: bytes, durable: bool = True, tmp_name: str | None = None
) -> None:
    """Write to a temp file in the same directory, fsync (if `durable`), then rename over the target.

    `tmp_name`: the caller's own temp path beside `path` in an existing directory (the data stage writes
    thousands of clips: a fixed per-process name costs less than mkstemp's random one)."""
    if tmp_name is not None:
        tmp = tmp_name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)  # umask applies
    else:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; other users (a server) must read our outputs
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes in memory (the one hashing helper; files: sha256_file)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20, data: bytes | None = None) -> str:
    """sha256 of the file at `path`; `data`, the file's bytes when the caller has read them already, is hashed
    instead of reading the file again."""
    if data is not None:
        return sha256_bytes(data)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
