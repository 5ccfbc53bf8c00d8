"""Turn a raw dataset into NeMo manifests: 16 kHz mono PCM16 WAVs + speaker-disjoint train/val/test JSONL.

Output directory (docs/ARCHITECTURE.md, "Manifest contract"):
  audio/<id>.wav                        16 kHz mono PCM16, converted from any libsndfile format
  train.jsonl, val.jsonl, test.jsonl    audio_filepath relative to this directory
  summary.json                          counts / hours / speakers per split x language, skipped rows
  sources.json                          id -> source sha256 + duration: lets a re-run skip converted clips
  build_state.json                      fingerprint of the last run's inputs and outputs (unchanged re-run)
  tarred/<split>/audio_<N>.tar          optional (tar_shards > 0): NeMo tarred dataset, one folder per split,
  tarred/<split>/tarred_audio_manifest.json   with every line's `shard_id`, and
  tarred/<split>/sharded_manifests/manifest_<N>.json   the per-shard manifests lhotse reads without overhead

A declared `split` column is honoured (a speaker in two splits is an error); otherwise each language is
split by speaker with a seeded shuffle, so the same data and seed always give the same split, and a
speaker never lands in two splits (across languages too: a voice heard in training is not "held out").
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import stat
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from components.build_manifest.cache import AUDIO_DIR, INDEX_NAME, STATE_NAME, BuildCache, not_racy, raw_of  # noqa: F401
from components.build_manifest.convert import CONVERTER, RUN_TOKEN, Converter, Result  # noqa: F401
from components.build_manifest.plan import (  # noqa: F401  (re-exported: the step's public names)
    DUPLICATE_AUDIO_MODES,
    ManifestBuildError,
    assign_speakers,
    check_splits,
    drop_duplicate_audio,
    load_validation,
    plan_rows,
    skip_entry,
)
from components.build_manifest.tarred import TARRED_DIR, TARRED_MANIFEST, write_tarred_split  # noqa: F401
from components.common.audio import TARGET_SR
from components.common.dataset import MetadataRow, find_metadata, inside, read_metadata, resolve_audio
from components.common.io import atomic_write_text
from components.common.languages import (
    canonical_locale,
    canonical_locales,
    default_prompt_dictionary,
    parse_langs,
)
from components.common.manifest import SPLITS

LOCK_NAME = ".build_manifest.lock"
HOURS_PER_SHARD = 4.0  # automatic sharding: ~460 MB of 16 kHz PCM16 per tar
log = logging.getLogger(__name__)


@dataclass
class ManifestResult:
    out_dir: Path
    counts: dict[str, dict[str, int]]  # split -> lang -> utterances
    hours: dict[str, dict[str, float]]  # split -> lang -> hours of converted audio
    speakers: dict[str, dict[str, int]]  # split -> lang -> distinct speakers
    split_source: str  # "declared" (metadata `split` column) or "seeded"
    n_converted: int  # clips decoded + written in this run
    n_reused: int  # clips whose source hash matched a previous run's conversion
    skipped: list[dict]  # {line, audio, reason}: rows left out because their audio/text is unusable
    manifests: dict[str, Path]
    summary_path: Path
    warnings: list[str] = field(default_factory=list)
    tarred: dict[str, dict] = field(default_factory=dict)  # split -> {manifest, tars, shards}

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        """reason code (the part before ':') -> rows, e.g. {"truncated": 2, "undecodable": 1}."""
        return dict(Counter(s["reason"].split(":", 1)[0].strip() for s in self.skipped))

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def totals(self) -> dict[str, int]:
        return {s: sum(self.counts.get(s, {}).values()) for s in SPLITS}

    def brief(self) -> dict:
        """The short JSON-able summary a pipeline step returns (summary.json has everything)."""
        return {
            "counts": self.counts,
            "hours": self.hours,
            "n_skipped": self.n_skipped,
            "skipped_by_reason": self.skipped_by_reason,
            "split_source": self.split_source,
            "warnings": self.warnings,
        }

    def metadata(self) -> dict:
        """Flat-ish numbers for kfp artifact metadata (what the Kubeflow UI shows next to the Dataset)."""
        hours = sum(h for per in self.hours.values() for h in per.values())
        return {
            **{f"n_{s}": n for s, n in self.totals().items()},
            "hours": round(hours, 4),
            "n_skipped": self.n_skipped,
            "split_source": self.split_source,
            "counts": self.counts,
            "languages": sorted({lang for per in self.counts.values() for lang in per}),
        }


def build_manifests(
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    seed: int = 0,
    val_ratio: float = 0.1,
    test_ratio: float = 0.1,
    langs: list[str] | str | None = None,
    workers: int = 2,
    tar_shards: int = 0,
    verify_sources: bool = False,
    validation: str | os.PathLike | None = None,
    duplicate_audio: str = "reject",
    shard_above_hours: float = 0.0,
) -> ManifestResult:
    """Convert the audio of `data_root` into `out_dir` and write the split manifests + summary.json.

    `validation` (validate_data's validation.json for these metadata bytes): every row it rejected is
    dropped, whatever tolerance the validation ran with, and its locale aliases are applied; without it the
    default prompt dictionary's aliases are. `langs` keeps only those languages (None/empty: all). Rows whose
    record is unreadable, whose audio is outside the root, missing, undecodable or over the decode cap, whose
    text/speaker/lang is empty, whose id is unsafe or shared, and identical audio (every copy with
    `duplicate_audio="reject"`, all but the first line with "keep_first") are skipped and listed with
    reasons in summary.json (`skipped_by_reason` counts them per reason code). `tar_shards` > 0 also writes
    each split as a NeMo tarred dataset of that many shards under tarred/<split>/; 0 (default) writes none,
    unless `shard_above_hours` > 0 and the corpus holds at least that many hours: then each split gets one
    shard per HOURS_PER_SHARD hours of its audio (at least one), and finetune_asr trains from them.
    A re-run reuses clips whose source is unchanged (the same declared path, inode, size and mtime as
    recorded, or else the same sha256); `verify_sources` re-hashes every source. A re-run on entirely unchanged inputs and outputs only
    stats them (build_state.json) and rewrites nothing but a changed summary.json. Builds into one
    `out_dir` are serialised by a lock file in it.
    """
    if tar_shards < 0:
        raise ValueError(f"tar_shards must be >= 0, got {tar_shards}")
    if shard_above_hours < 0:
        raise ValueError(f"shard_above_hours must be >= 0 (0 = off), got {shard_above_hours}")
    if not (0 <= val_ratio < 1 and 0 <= test_ratio < 1 and val_ratio + test_ratio < 1):
        raise ValueError(
            f"need 0 <= val_ratio, test_ratio and val_ratio + test_ratio < 1, got {val_ratio}, {test_ratio}"
        )
    if duplicate_audio not in DUPLICATE_AUDIO_MODES:
        raise ValueError(
            f"duplicate_audio must be one of {', '.join(DUPLICATE_AUDIO_MODES)}, got {duplicate_audio!r}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second build into this folder waits; released on close
        return _build(
            Params(Path(data_root), out, seed, val_ratio, test_ratio, langs, workers, tar_shards, verify_sources,
                   validation, duplicate_audio, shard_above_hours)
        )  # fmt: skip


@dataclass(frozen=True)
class Params:
    """build_manifests' arguments, checked."""

    data_root: Path
    out: Path
    seed: int
    val_ratio: float
    test_ratio: float
    langs: list[str] | str | None
    workers: int
    tar_shards: int
    verify_sources: bool
    validation: str | os.PathLike | None
    duplicate_audio: str
    shard_above_hours: float = 0.0


def _build(p: Params) -> ManifestResult:
    """plan -> convert -> split -> publish, unless the previous run's outputs are still valid."""
    meta_path = find_metadata(p.data_root)
    report = load_validation(p.validation, meta_path)
    aliases = report.get("lang_aliases") if report else canonical_locales(default_prompt_dictionary())
    keep = {canonical_locale(x, aliases) for x in parse_langs(p.langs)}
    rejected = json.dumps(report.get("rejected_rows", []), sort_keys=True).encode()
    params = [p.seed, p.val_ratio, p.test_ratio, sorted(keep), p.tar_shards, p.duplicate_audio]
    params += [p.shard_above_hours] if p.shard_above_hours else []
    params += [report.get("metadata_sha256"), hashlib.sha256(rejected).hexdigest()]
    cache = BuildCache(p.out)
    key = cache.key(meta_path, p.data_root, p.out, params)
    if not p.verify_sources:
        fields = cache.unchanged(key)
        if fields is not None:
            return _finish(p.out, fields, 0, sum(sum(c.values()) for c in fields["counts"].values()))

    meta = read_metadata(p.data_root)
    rows, skipped, n_excluded = plan_rows(meta.rows, report, aliases, keep)
    if keep and not rows and not skipped:
        raise ManifestBuildError(
            f"{meta.path}: no rows for langs {sorted(keep)} (found {sorted({r.lang for r in meta.rows})})"
        )
    check_splits(rows, meta.path, meta.has_split)
    (p.out / AUDIO_DIR).mkdir(exist_ok=True)
    cache.open_for_build()
    conv = _convert(rows, p, cache)
    skipped += conv.skipped
    index, converted_sha, n_converted, n_reused = _collect(conv, cache, skipped)
    converted, dropped = drop_duplicate_audio(converted_sha, p.duplicate_audio)
    skipped += dropped
    for d in dropped:
        index.pop(d["id"], None)
    skipped.sort(key=lambda s: s["line"])
    if not converted:
        first = "; ".join(f"line {s['line']} {s['audio']}: {s['reason']}" for s in skipped[:3])
        raise ManifestBuildError(f"{meta.path}: no usable clips, all {len(skipped)} rows skipped ({first})")
    split = _split(converted, meta.has_split, p)
    manifest_set, tarred = _publish(p, split.per_split, index, cache)
    fields = {
        "data_root": str(p.data_root),
        "metadata": str(meta.path),
        "seed": p.seed,
        "val_ratio": p.val_ratio,
        "test_ratio": p.test_ratio,
        "langs": sorted(keep) or None,
        **split.fields(),
        "n_rows": len(meta.rows),
        "n_excluded_by_lang": n_excluded,
        "skipped": skipped,
        "tarred": tarred,
        "duplicate_audio": p.duplicate_audio,
        "validation": str(p.validation) if p.validation else None,
        "manifest_sha256": manifest_set,
    }
    res = _finish(p.out, fields, n_converted, n_reused)
    cache.write_state(
        key, fields, conv.sources, conv.dirs, index, conv.fast and not_racy(conv.sources, conv.started_ns)
    )
    return res


class _Locator:
    """resolve_audio's answer per row, with the realpath of each folder computed once, plus what
    build_state.json must record about each source (lexical path, size, mtime, inode; folder realpaths)."""

    def __init__(self, data_root: Path):
        self.data_root = data_root
        self.lexical_root = os.path.normpath(os.path.abspath(data_root))
        self.real_root = os.path.realpath(data_root)
        self.prefix = self.lexical_root.rstrip(os.sep) + os.sep
        self.sources: list[list] = []
        self.dirs: dict[str, str] = {}
        self.fast = True  # False once a source depends on paths/symlinks the state does not record

    def locate(self, r: MetadataRow) -> tuple[str | None, os.stat_result | None, str | None]:
        """(source real path, its stat, None) or (None, None, reason)."""
        lexical = os.path.normpath(os.path.join(self.lexical_root, r.audio)) if r.audio else ""
        if r.audio and not os.path.isabs(r.audio) and lexical.startswith(self.prefix):
            # a regular file (not a symlink) lexically inside the root, in a folder whose real path is inside
            # the real root, is that folder's real path + its name
            d, name = os.path.split(lexical)
            real_d = self.dirs.get(d)
            if real_d is None:
                real_d = self.dirs[d] = os.path.realpath(d)
            try:
                lst = os.lstat(lexical)
            except OSError:
                lst = None
            if lst is not None and stat.S_ISREG(lst.st_mode) and inside(real_d, self.real_root):
                self.sources.append([lexical, lst.st_size, lst.st_mtime_ns, lst.st_ino])
                return os.path.join(real_d, name), lst, None
        real, reason = resolve_audio(self.data_root, r.audio)
        if reason is not None:
            self.fast = False
            return None, None, reason
        src = str(real)
        lexical = os.path.normpath(
            r.audio if os.path.isabs(r.audio) else os.path.join(self.lexical_root, r.audio)
        )
        if os.path.isabs(r.audio) or os.path.lexists(lexical):  # a symlink, or a file met by an absolute path
            self.fast = False
        self.sources.append([lexical, None, None, None])  # a missing file is recorded
        if os.path.isfile(src):
            return src, os.stat(src), None
        return None, None, f"missing: file not found: {src}"


@dataclass
class _Converted:
    usable: list[MetadataRow]
    results: list[Result]
    stats: list[tuple[int, int, int]]  # size, mtime (ns), inode per usable row
    skipped: list[dict]
    sources: list[list]
    dirs: dict[str, str]
    fast: bool
    started_ns: int


def _convert(rows: list[MetadataRow], p: Params, cache: BuildCache) -> _Converted:
    """Locate each row's source, reuse its clip when the cache says so, convert the others in the pool.

    Reuse is decided here, so a re-run of an unchanged corpus starts no worker process at all; clips to
    convert go to the pool as soon as they are known, so conversion overlaps the preparation of later rows."""
    started_ns = time.time_ns()  # before any source is looked at (the racy rule of build_state.json)
    loc = _Locator(p.data_root)
    usable: list[MetadataRow] = []
    results: list = []
    todo: list[int] = []
    stats: list[tuple[int, int, int]] = []
    skipped: list[dict] = []
    conv = Converter(p.workers, len(rows))
    try:
        for r in rows:
            src, st, reason = loc.locate(r)
            reason = reason or r.raw_error
            for value, name in ((r.text, "text"), (r.speaker, "speaker"), (r.lang, "lang")):
                reason = reason or (None if value else f"{name} is empty")
            if reason:
                skipped.append(skip_entry(r, reason))
                continue
            usable.append(r)
            stats.append((st.st_size, st.st_mtime_ns, st.st_ino))
            sha = cache.reusable(r, src, st, p.verify_sources)
            results.append((sha, None, None, True) if sha else None)
            if sha is None:
                conv.submit((src, os.path.join(cache.audio_dir, f"{r.id}.wav"), r.raw))
                todo.append(len(usable) - 1)
        converted = conv.results()
    finally:
        if conv.pool is not None:
            conv.pool.shutdown(cancel_futures=True)
    for i, res in zip(todo, converted, strict=True):
        results[i] = res
    return _Converted(usable, results, stats, skipped, loc.sources, loc.dirs, loc.fast, started_ns)


def _collect(
    conv: _Converted, cache: BuildCache, skipped: list[dict]
) -> tuple[dict[str, dict], list[tuple[MetadataRow, float, str]], int, int]:
    """Conversion results -> (the new clip index, (row, duration, source sha256) per clip, converted, reused);
    failed clips are appended to `skipped`."""
    index: dict[str, dict] = {}
    out: list[tuple[MetadataRow, float, str]] = []
    n_converted = n_reused = 0
    for r, (sha, duration, err, reused), (size, mtime_ns, ino) in zip(
        conv.usable, conv.results, conv.stats, strict=True
    ):
        if err:
            skipped.append(skip_entry(r, err))
            continue
        if reused:
            duration = cache.duration(r.id)
            n_reused += 1
        else:
            n_converted += 1
        entry = {"source": r.audio, "sha256": sha, "duration": duration, "size": size, "mtime_ns": mtime_ns,
                 "ino": ino, "converter": CONVERTER}  # fmt: skip
        if r.raw:
            entry["raw"] = raw_of(r)
        index[r.id] = entry
        out.append((r, duration, sha))
    return index, out, n_converted, n_reused


@dataclass
class _Split:
    per_split: dict[str, list[dict]]
    counts: dict[str, dict[str, int]]
    hours: dict[str, dict[str, float]]
    speakers: dict[str, dict[str, int]]
    split_source: str
    warnings: list[str]

    def fields(self) -> dict:
        return {"split_source": self.split_source, "counts": self.counts, "hours": self.hours,
                "speakers": self.speakers, "warnings": self.warnings}  # fmt: skip


def _split(converted: list[tuple[MetadataRow, float]], has_split: bool, p: Params) -> _Split:
    """Each clip's split (declared, or seeded by speaker) and the manifest lines, counts, hours, speakers."""
    warnings: list[str] = []
    if has_split:
        split_of = {r.id: r.split for r, _ in converted}
    else:
        pairs = [(r.lang, r.speaker) for r, _ in converted]
        by_speaker, warnings = assign_speakers(pairs, p.seed, p.val_ratio, p.test_ratio)
        split_of = {r.id: by_speaker[r.speaker] for r, _ in converted}
    per_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    hours: dict[str, dict[str, float]] = {s: {} for s in SPLITS}
    spk_sets: dict[str, dict[str, set]] = {s: defaultdict(set) for s in SPLITS}
    for r, duration in converted:
        s = split_of[r.id]
        per_split[s].append({"audio_filepath": f"{AUDIO_DIR}/{r.id}.wav", "duration": round(duration, 4),
                             "text": r.text, "lang": r.lang, "target_lang": r.lang, "speaker": r.speaker,
                             "id": r.id})  # fmt: skip
        counts[s][r.lang] = counts[s].get(r.lang, 0) + 1
        hours[s][r.lang] = hours[s].get(r.lang, 0.0) + duration / 3600.0
        spk_sets[s][r.lang].add(r.speaker)
    return _Split(
        per_split,
        counts,
        {s: {lang: round(h, 6) for lang, h in per.items()} for s, per in hours.items()},
        {s: {lang: len(v) for lang, v in per.items()} for s, per in spk_sets.items()},
        "declared" if has_split else "seeded",
        warnings,
    )


def _publish(
    p: Params, per_split: dict[str, list[dict]], index: dict, cache: BuildCache
) -> tuple[dict, dict]:
    """Manifests (as a set), clip pruning, the clip index and tarred shards -> (manifest sha256s, tarred)."""
    manifest_set = publish_manifests(p.out, per_split)
    # Remove clips of earlier runs that this dataset no longer has, so audio/ matches the manifests.
    wanted = {f"{rid}.wav" for rid in index}
    with os.scandir(cache.audio_dir) as it:
        for f in it:
            if f.name not in wanted and f.is_file(follow_symlinks=False):
                os.unlink(f.path)
    cache.write_index(index, _write_if_changed)
    total_hours = sum(r["duration"] for rows in per_split.values() for r in rows) / 3600.0
    tarred = {
        s: write_tarred_split(p.out, s, per_split[s], n, p.seed)
        for s in SPLITS
        if per_split[s] and (n := shards_for(p.tar_shards, p.shard_above_hours, total_hours, per_split[s]))
    }
    for s in SPLITS:  # tarred splits of an earlier run that this run did not write would be stale
        if s not in tarred and (p.out / TARRED_DIR / s).is_dir():
            shutil.rmtree(p.out / TARRED_DIR / s)
    return manifest_set, tarred


def shards_for(tar_shards: int, shard_above_hours: float, corpus_hours: float, rows: list[dict]) -> int:
    """Tar shards of one split: `tar_shards` when set; else, for a corpus of at least `shard_above_hours`
    (> 0), one shard per HOURS_PER_SHARD hours of the split's audio (at least one); else 0 (none)."""
    if tar_shards > 0:
        return tar_shards
    if shard_above_hours > 0 and corpus_hours >= shard_above_hours:
        return max(1, math.ceil(sum(r["duration"] for r in rows) / 3600.0 / HOURS_PER_SHARD))
    return 0


def _summary(fields: dict, n_converted: int, n_reused: int) -> dict:
    f = fields
    return {
        "data_root": f["data_root"],
        "metadata": f["metadata"],
        "seed": f["seed"],
        "val_ratio": f["val_ratio"],
        "test_ratio": f["test_ratio"],
        "langs": f["langs"],
        "split_source": f["split_source"],
        "sample_rate": TARGET_SR,
        "counts": f["counts"],
        "hours": f["hours"],
        "speakers": f["speakers"],
        "totals": {s: sum(f["counts"].get(s, {}).values()) for s in SPLITS},
        "n_rows": f["n_rows"],
        "n_excluded_by_lang": f["n_excluded_by_lang"],
        "n_converted": n_converted,
        "n_reused": n_reused,
        "n_skipped": len(f["skipped"]),
        "skipped_by_reason": dict(Counter(x["reason"].split(":", 1)[0].strip() for x in f["skipped"])),
        "skipped": f["skipped"],
        "tarred": f["tarred"],
        "warnings": f["warnings"],
        "duplicate_audio": f.get("duplicate_audio", "reject"),
        "validation": f.get("validation"),
        "manifest_sha256": f.get("manifest_sha256", {}),
    }


def publish_manifests(out: Path, per_split: dict[str, list[dict]]) -> dict[str, str]:
    """Write train/val/test.jsonl as one set: every changed split is first written in full to a temp file
    (unique per run), and only then are the temp files renamed over the old ones, back to back, so a reader
    never meets a half-written split, and a failure before the renames leaves the previous set untouched.
    Returns split -> sha256 of its bytes (summary.json's `manifest_sha256`: a reader can verify the set)."""
    staged: list[tuple[str, Path]] = []
    hashes: dict[str, str] = {}
    try:
        for s in SPLITS:
            lines = [json.dumps(row, ensure_ascii=False) for row in per_split[s]]
            data = ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8")
            hashes[s] = hashlib.sha256(data).hexdigest()
            path = out / f"{s}.jsonl"
            try:
                if path.stat().st_size == len(data) and path.read_bytes() == data:
                    continue
            except OSError:
                pass
            fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{s}.jsonl.{RUN_TOKEN}.", suffix=".tmp")
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return hashes


def _write_if_changed(path: Path, text: str) -> None:
    """Atomic (and durable) write, skipped when the file already holds exactly this text."""
    data = text.encode("utf-8")
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except OSError:
        pass
    atomic_write_text(path, text)


def _finish(out: Path, fields: dict, n_converted: int, n_reused: int) -> ManifestResult:
    res = ManifestResult(
        out_dir=out,
        counts=fields["counts"],
        hours=fields["hours"],
        speakers=fields["speakers"],
        split_source=fields["split_source"],
        n_converted=n_converted,
        n_reused=n_reused,
        skipped=fields["skipped"],
        manifests={s: out / f"{s}.jsonl" for s in SPLITS},
        summary_path=out / "summary.json",
        warnings=fields["warnings"],
        tarred=fields["tarred"],
    )
    summary = _summary(fields, n_converted, n_reused)
    _write_if_changed(res.summary_path, json.dumps(summary, ensure_ascii=False, indent=2))
    log.info(
        "%d clips (%s), converted %d, reused %d, skipped %d -> %s",
        sum(res.totals().values()),
        res.totals(),
        n_converted,
        n_reused,
        len(res.skipped),
        out,
    )
    return res
