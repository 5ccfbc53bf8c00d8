"""NeMo tarred datasets: each split as N reproducible tar shards plus the manifests lhotse reads."""

from __future__ import annotations

import os
import random
import tarfile
import tempfile
from pathlib import Path

from components.common.manifest import TARRED_DIR, write_manifest

TARRED_MANIFEST = "tarred_audio_manifest.json"


def _tar_member(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Reproducible tar entries: same clips, same bytes (no mtimes, owners or modes of this machine)."""
    info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
    return info


def write_tarred_split(out_dir: Path, split: str, rows: list[dict], n_shards: int, seed: int = 0) -> dict:
    """Write `rows` (manifest lines with audio under out_dir) as a NeMo tarred dataset in tarred/<split>/.

    NeMo's layout (scripts/speech_recognition/convert_to_tarred_audio_dataset.py, read by
    LazyNeMoTarredIterator): audio_<N>.tar hold the clips under their base names; every manifest line's
    `audio_filepath` is that member name and `shard_id` is N; sharded_manifests/manifest_<N>.json hold each
    shard's lines (lhotse reads them without buffering the whole manifest). Clips are shuffled with a seed
    and dealt round-robin, so shards have equal sizes (+-1) and mix speakers. Each tar is written under a
    temporary name and renamed, so a reader never sees half a shard; shards of an earlier, larger run are
    removed. Returns {manifest, tars, shards, utterances}.
    """
    d = out_dir / TARRED_DIR / split
    (d / "sharded_manifests").mkdir(parents=True, exist_ok=True)
    order = sorted(rows, key=lambda r: r["id"])
    random.Random(f"{seed}:tarred:{split}").shuffle(order)
    n = max(1, min(n_shards, len(order)))
    all_lines: list[dict] = []
    tars = []
    for sid in range(n):
        shard = order[sid::n]
        tar_path = d / f"audio_{sid}.tar"
        fd, tmp = tempfile.mkstemp(dir=d, prefix=f".audio_{sid}.", suffix=".tmp")
        try:
            with (
                os.fdopen(fd, "wb") as f,
                tarfile.open(fileobj=f, mode="w", format=tarfile.GNU_FORMAT) as tar,
            ):
                lines = []
                for r in shard:
                    name = f"{r['id']}.wav"
                    tar.add(out_dir / r["audio_filepath"], arcname=name, filter=_tar_member)
                    lines.append({**r, "audio_filepath": name, "shard_id": sid})
            os.chmod(tmp, 0o644)
            os.replace(tmp, tar_path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        write_manifest(d / "sharded_manifests" / f"manifest_{sid}.json", lines)
        all_lines.extend(lines)
        tars.append(tar_path)
    for stale in list(d.glob("audio_*.tar")) + list((d / "sharded_manifests").glob("manifest_*.json")):
        num = stale.stem.rsplit("_", 1)[-1]
        if num.isdigit() and int(num) >= n:
            stale.unlink()
    write_manifest(d / TARRED_MANIFEST, all_lines)
    return {
        "manifest": str(d / TARRED_MANIFEST),
        "tars": [str(t) for t in tars],
        "shards": n,
        "utterances": len(all_lines),
    }
