"""Turn a raw dataset into NeMo manifests: 16 kHz mono PCM16 WAVs + speaker-disjoint train/val/test JSONL.

Output directory (docs/ARCHITECTURE.md, "Manifest contract"):
  audio/<id>.wav                        16 kHz mono PCM16, converted from any libsndfile format
  train.jsonl, val.jsonl, test.jsonl    audio_filepath relative to this directory
  summary.json                          counts / hours / speakers per split x language, skipped rows
  sources.json                          id -> source sha256 + duration: lets a re-run skip converted clips
  tarred/<split>/audio_<N>.tar          optional (tar_shards > 0): NeMo tarred dataset, one folder per split,
  tarred/<split>/tarred_audio_manifest.json   with every line's `shard_id`, and
  tarred/<split>/sharded_manifests/manifest_<N>.json   the per-shard manifests lhotse reads without overhead

A declared `split` column is honoured (a speaker in two splits is an error); otherwise each language is
split by speaker with a seeded shuffle, so the same data and seed always give the same split, and a
speaker never lands in two splits (across languages too: a voice heard in training is not "held out").
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tarfile
import tempfile
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from components.common.audio import TARGET_SR, AudioError, RawFormat, decode, write_wav16
from components.common.io import atomic_write_text, sha256_file
from components.common.languages import parse_langs
from components.common.manifest import SPLITS, write_manifest
from components.validate_data.core import ID_RE, DatasetError, MetadataRow, read_metadata, resolve_audio

AUDIO_DIR = "audio"
INDEX_NAME = "sources.json"
_POOL_MIN = 32  # below this many clips a process pool costs more than it saves
_PROGRESS_MIN = 200


class ManifestBuildError(DatasetError):
    """The dataset cannot be split/converted as declared; the message names the rows/speaker/id."""


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


Job = tuple[str, str, "str | None", "RawFormat | None"]


def _convert_one(job: Job) -> tuple[str, float | None, str | None, bool]:
    """(src, dst, previous sha, raw layout) -> (sha, duration, error, reused). Runs in a pool worker."""
    src, dst, prev_sha, raw = job
    sha = sha256_file(src)
    if prev_sha == sha and os.path.isfile(dst) and os.path.getsize(dst) > 44:  # > a bare WAV header
        return sha, None, None, True
    try:
        audio, _ = decode(src, TARGET_SR, raw=raw)
    except AudioError as e:
        return sha, None, f"{e.reason}: {e.detail}", False
    if len(audio) == 0:
        return sha, None, "no_audio: nothing left after resampling", False
    write_wav16(dst, audio, TARGET_SR)
    return sha, len(audio) / TARGET_SR, None, False


def _convert_chunk(jobs: list[Job]) -> list[tuple[str, float | None, str | None, bool]]:
    return [_convert_one(j) for j in jobs]


def _run_jobs(jobs: list[Job], workers: int) -> list[tuple[str, float | None, str | None, bool]]:
    """Convert in `workers` processes. Jobs travel in chunks of ~1/(8 x workers) of the corpus (at most 256)
    so the pool's pickling round-trips stay negligible next to decoding short clips."""
    n, out = len(jobs), []
    step, show = max(1, n // 10), n >= _PROGRESS_MIN
    shown = 0

    def tick(i: int) -> None:
        nonlocal shown
        if show and (i - shown >= step or i == n):
            shown = i
            print(f"build_manifest: {i}/{n} clips", file=sys.stderr, flush=True)

    if workers > 1 and n >= _POOL_MIN:
        size = max(8, min(256, n // (8 * workers)))
        chunks = [jobs[i : i + size] for i in range(0, n, size)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for part in pool.map(_convert_chunk, chunks):
                out.extend(part)
                tick(len(out))
    else:
        for i, job in enumerate(jobs, 1):
            out.append(_convert_one(job))
            tick(i)
    return out


def assign_speakers(
    utterances: list[tuple[str, str]], seed: int, val_ratio: float, test_ratio: float
) -> tuple[dict[str, str], list[str]]:
    """(lang, speaker) per utterance -> (speaker -> split, warnings).

    Per language (sorted, so the result does not depend on row order), the not-yet-assigned speakers are
    shuffled with a seed derived from (seed, lang) and each goes to test or val when that brings the split's
    utterance count closer to its target share, else to train. Speakers already placed by an earlier
    language keep their split. If a split with a non-zero ratio ends up empty and the language has at least
    three speakers, its smallest train speaker is moved there, so every language can be evaluated.
    """
    per_lang: dict[str, Counter] = defaultdict(Counter)
    for lang, spk in utterances:
        per_lang[lang][spk] += 1
    assigned: dict[str, str] = {}
    warnings: list[str] = []
    ratios = {"test": test_ratio, "val": val_ratio}
    for lang in sorted(per_lang):
        counts = per_lang[lang]
        total = sum(counts.values())
        cur = Counter({s: 0 for s in SPLITS})
        for spk, n in counts.items():
            if spk in assigned:
                cur[assigned[spk]] += n
        free = sorted(s for s in counts if s not in assigned)
        random.Random(f"{seed}:{lang}").shuffle(free)
        for spk in free:
            n, choice = counts[spk], "train"
            for split, ratio in ratios.items():
                target = ratio * total
                if ratio > 0 and abs(cur[split] + n - target) < abs(cur[split] - target):
                    choice = split
                    break
            assigned[spk] = choice
            cur[choice] += n
        for split, ratio in ratios.items():
            if ratio <= 0 or cur[split] > 0:
                continue
            movable = sorted((counts[s], s) for s in free if assigned[s] == "train")
            train_speakers = [s for s in counts if assigned[s] == "train"]
            if len(counts) >= 3 and movable and len(train_speakers) > 1:
                n, spk = movable[0]
                assigned[spk], cur["train"], cur[split] = split, cur["train"] - n, cur[split] + n
            else:
                warnings.append(f"{lang}: no {split} data ({len(counts)} speaker(s) cannot be split further)")
    return assigned, warnings


TARRED_DIR = "tarred"
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


def _check_rows(rows: list[MetadataRow], metadata_path: Path, has_split: bool) -> None:
    """Errors that make a split or the output file names ambiguous: refuse rather than guess."""
    seen: dict[str, int] = {}
    for r in rows:
        if not ID_RE.match(r.id):
            raise ManifestBuildError(f"{metadata_path}:{r.line}: id {r.id!r} is not a safe file name")
        if r.id in seen:
            raise ManifestBuildError(
                f"{metadata_path}:{r.line}: duplicate id {r.id!r} (first on line {seen[r.id]})"
            )
        seen[r.id] = r.line
    if not has_split:
        return
    splits_of: dict[str, dict[str, int]] = defaultdict(dict)
    for r in rows:
        if r.split not in SPLITS:
            raise ManifestBuildError(
                f"{metadata_path}:{r.line}: split {r.split!r} is not one of {', '.join(SPLITS)}"
            )
        splits_of[r.speaker].setdefault(r.split, r.line)
    for spk, where in splits_of.items():
        if len(where) > 1:
            lines = ", ".join(f"{s} (line {ln})" for s, ln in sorted(where.items()))
            raise ManifestBuildError(
                f"{metadata_path}: speaker {spk!r} is in more than one declared split: {lines}; "
                "declared splits must be speaker-disjoint"
            )


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
) -> ManifestResult:
    """Convert the audio of `data_root` into `out_dir` and write the split manifests + summary.json.

    `langs` keeps only those languages (None/empty: all). Rows whose audio is outside the root, missing or
    undecodable, or whose text/speaker/lang is empty, are skipped and listed with reasons in summary.json
    (`skipped_by_reason` counts them per reason code). `tar_shards` > 0 also writes each split as a NeMo
    tarred dataset of that many shards under tarred/<split>/ (for corpora too large for one file per clip on
    a network filesystem); 0 (default) writes none. A re-run reuses clips whose source is unchanged (same
    size and mtime as recorded, or else the same sha256); `verify_sources` re-hashes every source.
    """
    if tar_shards < 0:
        raise ValueError(f"tar_shards must be >= 0, got {tar_shards}")
    if not (0 <= val_ratio < 1 and 0 <= test_ratio < 1 and val_ratio + test_ratio < 1):
        raise ValueError(
            f"need 0 <= val_ratio, test_ratio and val_ratio + test_ratio < 1, got {val_ratio}, {test_ratio}"
        )
    data_root, out = Path(data_root), Path(out_dir)
    keep = set(parse_langs(langs))
    meta = read_metadata(data_root)
    rows = [r for r in meta.rows if not keep or r.lang in keep]
    n_excluded = len(meta.rows) - len(rows)
    if keep and not rows:
        raise ManifestBuildError(
            f"{meta.path}: no rows for langs {sorted(keep)} (found {sorted({r.lang for r in meta.rows})})"
        )
    _check_rows(rows, meta.path, meta.has_split)

    out.mkdir(parents=True, exist_ok=True)
    (out / AUDIO_DIR).mkdir(exist_ok=True)
    index_path = out / INDEX_NAME
    try:
        old_index = json.loads(index_path.read_text(encoding="utf-8")) if index_path.exists() else {}
    except json.JSONDecodeError:
        old_index = {}  # a damaged cache only costs a re-conversion

    skipped: list[dict] = []
    usable: list[tuple[MetadataRow, Path]] = []
    for r in rows:
        src, reason = resolve_audio(data_root, r.audio)
        if reason is None and not src.is_file():
            reason = f"missing: file not found: {src}"
        if reason is None and r.raw_error:
            reason = r.raw_error
        for value, name in ((r.text, "text"), (r.speaker, "speaker"), (r.lang, "lang")):
            if reason is None and not value:
                reason = f"{name} is empty"
        if reason:
            skipped.append({"line": r.line, "audio": r.audio, "reason": reason})
        else:
            usable.append((r, src))

    def raw_of(r: MetadataRow) -> dict | None:
        return r.raw.to_dict() if r.raw else None

    def previous_sha(r: MetadataRow) -> str | None:
        """The source hash a previous run converted for this id, if it used the same raw declaration."""
        entry = old_index.get(r.id)
        if not (isinstance(entry, dict) and entry.get("duration")) or entry.get("raw") != raw_of(r):
            return None
        return entry.get("sha256")

    # Reuse is decided here, so a re-run of an unchanged corpus starts no worker process at all. A source
    # whose size and mtime (ns) match what the previous run recorded keeps its recorded sha256 (the stat
    # cache git and DVC use); any other source a previous run converted is hashed again and reused only if
    # its content is unchanged. `verify_sources=True` hashes every source regardless.
    results: list = [None] * len(usable)
    jobs: list[Job] = []
    todo: list[int] = []
    stats: dict[str, tuple[int, int]] = {}
    # "racy" entries (git's term): a file modified within 2 s before the index was written may have been
    # rewritten in the same timestamp tick, so its stat proves nothing and it is hashed.
    racy_after = index_path.stat().st_mtime_ns - 2_000_000_000 if old_index else 0
    for i, (r, src) in enumerate(usable):
        dst = out / AUDIO_DIR / f"{r.id}.wav"
        st = src.stat()
        stats[r.id] = (st.st_size, st.st_mtime_ns)
        prev = previous_sha(r)
        if prev is not None:
            entry = old_index[r.id]
            same_stat = [entry.get("size"), entry.get("mtime_ns")] == [st.st_size, st.st_mtime_ns] and (
                st.st_mtime_ns < racy_after
            )
            sha = prev if same_stat and not verify_sources else sha256_file(src)
            if sha == prev and os.path.isfile(dst) and os.path.getsize(dst) > 44:  # > a bare WAV header
                results[i] = (sha, None, None, True)
                continue
        jobs.append((str(src), str(dst), None, r.raw))
        todo.append(i)
    for i, res in zip(todo, _run_jobs(jobs, workers), strict=True):
        results[i] = res

    index: dict[str, dict] = {}
    converted: list[tuple[MetadataRow, float]] = []
    n_converted = n_reused = 0
    for (r, _), (sha, duration, err, reused) in zip(usable, results, strict=True):
        if err:
            skipped.append({"line": r.line, "audio": r.audio, "reason": err})
            continue
        if reused:
            duration = float(old_index[r.id]["duration"])
            n_reused += 1
        else:
            n_converted += 1
        size, mtime_ns = stats[r.id]
        index[r.id] = {
            "source": r.audio,
            "sha256": sha,
            "duration": duration,
            "size": size,
            "mtime_ns": mtime_ns,
        }
        if r.raw:
            index[r.id]["raw"] = raw_of(r)
        converted.append((r, duration))
    skipped.sort(key=lambda s: s["line"])
    if not converted:
        first = "; ".join(f"line {s['line']} {s['audio']}: {s['reason']}" for s in skipped[:3])
        raise ManifestBuildError(f"{meta.path}: no usable clips, all {len(skipped)} rows skipped ({first})")

    warnings: list[str] = []
    if meta.has_split:
        split_of = {r.id: r.split for r, _ in converted}
        split_source = "declared"
    else:
        by_speaker, warnings = assign_speakers(
            [(r.lang, r.speaker) for r, _ in converted], seed, val_ratio, test_ratio
        )
        split_of = {r.id: by_speaker[r.speaker] for r, _ in converted}
        split_source = "seeded"

    per_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    hours: dict[str, dict[str, float]] = {s: {} for s in SPLITS}
    spk_sets: dict[str, dict[str, set]] = {s: defaultdict(set) for s in SPLITS}
    for r, duration in converted:
        s = split_of[r.id]
        per_split[s].append(
            {
                "audio_filepath": f"{AUDIO_DIR}/{r.id}.wav",
                "duration": round(duration, 4),
                "text": r.text,
                "lang": r.lang,
                "target_lang": r.lang,
                "speaker": r.speaker,
                "id": r.id,
            }
        )
        counts[s][r.lang] = counts[s].get(r.lang, 0) + 1
        hours[s][r.lang] = hours[s].get(r.lang, 0.0) + duration / 3600.0
        spk_sets[s][r.lang].add(r.speaker)
    hours = {s: {lang: round(h, 6) for lang, h in per.items()} for s, per in hours.items()}
    speakers = {s: {lang: len(v) for lang, v in per.items()} for s, per in spk_sets.items()}

    manifests = {s: out / f"{s}.jsonl" for s in SPLITS}
    for s in SPLITS:
        write_manifest(manifests[s], per_split[s])
    # Remove clips of earlier runs that this dataset no longer has, so audio/ matches the manifests.
    wanted = {f"{rid}.wav" for rid in index}
    for f in (out / AUDIO_DIR).iterdir():
        if f.is_file() and f.name not in wanted:
            f.unlink()
    atomic_write_text(index_path, json.dumps(index, ensure_ascii=False, indent=0, sort_keys=True))
    tarred = {
        s: write_tarred_split(out, s, per_split[s], tar_shards, seed)
        for s in SPLITS
        if tar_shards > 0 and per_split[s]
    }
    for s in SPLITS:  # tarred splits of an earlier run that this run did not write would be stale
        if s not in tarred and (out / TARRED_DIR / s).is_dir():
            shutil.rmtree(out / TARRED_DIR / s)

    res = ManifestResult(
        out_dir=out,
        counts=counts,
        hours=hours,
        speakers=speakers,
        split_source=split_source,
        n_converted=n_converted,
        n_reused=n_reused,
        skipped=skipped,
        manifests=manifests,
        summary_path=out / "summary.json",
        warnings=warnings,
        tarred=tarred,
    )
    summary = {
        "data_root": str(data_root),
        "metadata": str(meta.path),
        "seed": seed,
        "val_ratio": val_ratio,
        "test_ratio": test_ratio,
        "langs": sorted(keep) or None,
        "split_source": split_source,
        "sample_rate": TARGET_SR,
        "counts": counts,
        "hours": hours,
        "speakers": speakers,
        "totals": res.totals(),
        "n_rows": len(meta.rows),
        "n_excluded_by_lang": n_excluded,
        "n_converted": n_converted,
        "n_reused": n_reused,
        "n_skipped": len(skipped),
        "skipped_by_reason": res.skipped_by_reason,
        "skipped": skipped,
        "tarred": tarred,
        "warnings": warnings,
    }
    atomic_write_text(res.summary_path, json.dumps(summary, ensure_ascii=False, indent=2))
    print(
        f"build_manifest: {sum(res.totals().values())} clips ({res.totals()}), converted {n_converted}, "
        f"reused {n_reused}, skipped {len(skipped)} -> {out}",
        file=sys.stderr,
        flush=True,
    )
    return res
