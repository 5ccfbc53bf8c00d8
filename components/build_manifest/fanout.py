"""A build at scale: the audio stays on the data volume, and its conversion fans out over pods.

Layout (docs/DATA.md, "At scale"):
  <build_root>/<key>/                 the build folder on the data volume (PVC): audio/, tarred/, sources.json,
                                      build_state.json, the manifests; `key` names the dataset root, so every
                                      run on the same data reuses its converted clips
  <build_root>/<key>/parts/part_<i>_of_<n>.json   what shard pod i of n converted (merged, then removed)
  <manifests artifact>/               train/val/test.jsonl (absolute audio paths into the build folder),
                                      summary.json, build.json: no audio travels through the artifact store

`convert_shard` is one pod of the fan-out: it converts the clips of its rows (a stable hash of the id picks
the pod) into the build folder and records them in its part file. The merge is the ordinary one-pod build
(`build_manifests`) on the same folder: it absorbs the parts, finds every clip converted and only splits and
publishes, so its output is the one-pod output by construction.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from components.build_manifest.cache import AUDIO_DIR, RACY_NS, BuildCache
from components.build_manifest.plan import load_validation, plan_rows
from components.common.dataset import find_metadata, read_metadata
from components.common.io import atomic_write_text
from components.common.languages import (
    canonical_locale,
    canonical_locales,
    default_prompt_dictionary,
    parse_langs,
)
from components.common.manifest import SPLITS, read_manifest, write_manifest

PARTS_DIR = "parts"
BUILD_RECORD = "build.json"  # in the manifests artifact: where its audio lives
_PART_RE = re.compile(r"^part_(\d+)_of_(\d+)\.json$")


def build_dir_for(build_root: str | os.PathLike, data_root: str | os.PathLike) -> Path:
    """The build folder of a dataset root under `build_root`: one per root (its readable name + a hash of
    its absolute path), so runs on the same data share converted clips and different roots never mix."""
    absolute = os.path.normpath(os.path.abspath(data_root))
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(absolute) or "root")[:60]
    return Path(build_root).resolve() / f"{slug}-{hashlib.sha256(absolute.encode()).hexdigest()[:12]}"


def shard_of(rid: str, n_shards: int) -> int:
    """The fan-out pod that converts clip `rid`: a stable hash (not Python's salted hash), same on every pod."""
    return int.from_bytes(hashlib.sha256(rid.encode("utf-8")).digest()[:8], "big") % n_shards


def convert_shard(
    data_root: str | os.PathLike,
    build_dir: str | os.PathLike,
    shard: int,
    n_shards: int,
    langs: list[str] | str | None = None,
    workers: int = 2,
    validation: str | os.PathLike | None = None,
) -> dict:
    """Convert the clips of shard `shard` of `n_shards` into `build_dir`/audio and record them in
    parts/part_<shard>_of_<n>.json. Rows are planned exactly as the merge plans them (same reader, same
    validation report, same drops); a clip already converted from the same source is reused. Returns
    {shard, n_shards, rows, converted, reused, failed}."""
    from components.build_manifest.core import Params, _collect, _convert

    if not (isinstance(n_shards, int) and n_shards >= 1 and 0 <= shard < n_shards):
        raise ValueError(
            f"shard must be in [0, n_shards) with n_shards >= 1, got shard {shard} of {n_shards}"
        )
    build = Path(build_dir)
    (build / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
    (build / PARTS_DIR).mkdir(exist_ok=True)
    meta_path = find_metadata(data_root)
    report = load_validation(validation, meta_path)
    aliases = report.get("lang_aliases") if report else canonical_locales(default_prompt_dictionary())
    keep = {canonical_locale(x, aliases) for x in parse_langs(langs)}
    rows, _, _ = plan_rows(read_metadata(data_root).rows, report, aliases, keep)
    mine = [r for r in rows if shard_of(r.id, n_shards) == shard]
    cache = BuildCache(build)
    cache.load_index()
    p = Params(Path(data_root), build, 0, 0.0, 0.0, langs, workers, 0, False, validation, "reject")
    conv = _convert(mine, p, cache)
    failed: list[dict] = []
    index, _, n_converted, n_reused = _collect(conv, cache, failed)
    part = {"started_ns": conv.started_ns, "entries": index}
    atomic_write_text(
        build / PARTS_DIR / f"part_{shard}_of_{n_shards}.json", json.dumps(part, ensure_ascii=False)
    )
    return {"shard": shard, "n_shards": n_shards, "rows": len(mine), "converted": n_converted,
            "reused": n_reused, "failed": len(failed)}  # fmt: skip


def absorb_parts(cache: BuildCache) -> int:
    """Fold the fan-out's part files into the cache's clip index (the merge step, before it plans), then
    remove them. An entry counts as a stat-cache hit only if its source was not modified within 2 s before
    its pod looked at it (the racy rule, per part); others are re-hashed, never trusted. Returns entries."""
    d = cache.out / PARTS_DIR
    if not d.is_dir():
        return 0
    n = 0
    files = sorted(f for f in d.iterdir() if _PART_RE.match(f.name))
    for f in files:
        try:
            part = json.loads(f.read_text(encoding="utf-8"))
            entries, started = part["entries"], int(part["started_ns"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged part costs its clips' re-conversion only
        for rid, entry in entries.items():
            cache.old_index[rid] = entry
            if isinstance(entry, dict) and (entry.get("mtime_ns") or 0) < started - RACY_NS:
                cache.trusted.add(rid)
            n += 1
    for f in files:
        f.unlink(missing_ok=True)
    return n


def export_manifests(build_dir: str | os.PathLike, artifact_dir: str | os.PathLike) -> dict:
    """The manifests artifact of a build on the data volume: train/val/test.jsonl whose audio_filepath (and
    tarred shards in summary.json) are absolute paths into `build_dir`, summary.json, and build.json naming
    the build folder. No audio is copied. Returns build.json's record."""
    build, art = Path(build_dir).resolve(), Path(artifact_dir)
    art.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        write_manifest(art / f"{s}.jsonl", read_manifest(build / f"{s}.jsonl", absolute=True))
    summary = json.loads((build / "summary.json").read_text(encoding="utf-8"))
    for info in (summary.get("tarred") or {}).values():
        info["manifest"] = str((build / info["manifest"]).resolve())
        info["tars"] = [str((build / t).resolve()) for t in info["tars"]]
    atomic_write_text(art / "summary.json", json.dumps(summary, ensure_ascii=False, indent=2))
    record = {"build_dir": str(build), "audio_dir": str(build / AUDIO_DIR)}
    atomic_write_text(art / BUILD_RECORD, json.dumps(record, indent=2))
    return record


def build_step(data_root: str, artifact_dir: str | os.PathLike, build_root: str = "", **kwargs):
    """What the build_manifest component does. With `build_root` (the data volume, at scale) the build runs in
    build_dir_for(build_root, data_root) and only manifests + summary.json + build.json are written to
    `artifact_dir`; without it (a local demo) the whole build, audio included, is the artifact."""
    from components.build_manifest.core import build_manifests

    if not build_root:
        return build_manifests(data_root, artifact_dir, **kwargs)
    build = build_dir_for(build_root, data_root)
    res = build_manifests(data_root, build, **kwargs)
    export_manifests(build, artifact_dir)
    return res


def shard_step(data_root: str, build_root: str, shard: int, n_shards: int, **kwargs) -> dict:
    """What a fan-out pod does (build_manifest_shard): nothing without a shared `build_root` (the merge then
    converts everything itself), else convert_shard into the dataset's build folder."""
    if not build_root:
        return {"shard": shard, "n_shards": n_shards, "skipped": "no build_root: the merge step converts"}
    return convert_shard(data_root, build_dir_for(build_root, data_root), shard, n_shards, **kwargs)
