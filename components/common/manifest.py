"""NeMo JSON-lines manifests: the contract between build_manifest, finetune_asr and evaluate_wer.

Manifests store `audio_filepath` relative to the manifest's own directory so a manifest folder can move
(kfp artifact stores, PVCs); readers resolve it to an absolute path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from components.common.io import atomic_write_text

REQUIRED_FIELDS = ("audio_filepath", "duration", "text", "lang", "target_lang", "speaker", "id")
SPLITS = ("train", "val", "test")
# build_manifest writes tarred shards of a split under <manifests>/tarred/<split>/; finetune_asr reads them
TARRED_DIR = "tarred"


class ManifestError(ValueError):
    """A manifest line is unusable; the message names the file, the line and the field."""


def read_manifest(path: str | os.PathLike, absolute: bool = True) -> list[dict]:
    """Read a manifest; with `absolute`, relative `audio_filepath`s are resolved against the manifest dir."""
    path = Path(path)
    rows: list[dict] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            for field in ("audio_filepath", "duration", "text", "lang"):
                if field not in row:
                    raise ManifestError(f"{path}:{n}: missing field '{field}'")
            if absolute and not os.path.isabs(row["audio_filepath"]):
                row["audio_filepath"] = str((path.parent / row["audio_filepath"]).resolve())
            rows.append(row)
    return rows


def write_manifest(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines atomically (a reader never sees a half-written manifest). Returns the count."""
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return len(lines)


def manifest_paths(manifest_dir: str | os.PathLike) -> dict[str, Path]:
    """The split manifests of a build_manifest output directory."""
    return {s: Path(manifest_dir) / f"{s}.jsonl" for s in SPLITS}
