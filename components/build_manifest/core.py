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
import os
import random
import secrets
import shutil
import stat
import tarfile
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from components.common.audio import (
    TARGET_SR,
    AudioError,
    RawFormat,
    decode_mono,
    wav16_bytes,
    wav_bytes_for_fast_path,
)
from components.common.dataset import (
    ID_RE,
    DatasetError,
    MetadataRow,
    duplicate_ids,
    find_metadata,
    inside,
    read_metadata,
    resolve_audio,
)
from components.common.io import atomic_write_text, sha256_file
from components.common.languages import (
    canonical_locale,
    canonical_locales,
    default_prompt_dictionary,
    invalid_characters,
    parse_langs,
)
from components.common.manifest import SPLITS, write_manifest
from components.common.pool import result_or_rerun

AUDIO_DIR = "audio"
INDEX_NAME = "sources.json"
STATE_NAME = "build_state.json"
_STATE_VERSION = 2  # bump when the outputs for the same inputs change
# The conversion's identity: a clip converted by another resampler/encoder is not reused (bump with the code).
CONVERTER = "soxr-hq+pcm16-round/2"
_POOL_MIN = 32  # below this many clips a process pool costs more than it saves
_CHUNK = 32  # clips per pool task: small enough to balance the tail, large enough to amortise pickling
_RACY_NS = 2_000_000_000
_PROGRESS_MIN = 200
DUPLICATE_AUDIO_MODES = ("reject", "keep_first")
LOCK_NAME = ".build_manifest.lock"
# Temp names unique per run and process: two builds (or hosts) sharing an output folder never write, rename
# or delete each other's half-written clips.
_RUN_TOKEN = secrets.token_hex(4)
log = logging.getLogger(__name__)


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


Job = tuple[str, str, "RawFormat | None"]
Result = tuple[str, "float | None", "str | None", bool]  # (source sha256, duration, error, reused)


def _write_atomic(dst: str, data: bytes) -> None:
    """Temp file + rename (a reader never sees half a clip), no fsync: see write_wav16. A fixed per-process
    temp name costs less than mkstemp's random names; leftovers of a killed run are pruned as stale clips."""
    tmp = f"{dst}.{os.getpid()}.{_RUN_TOKEN}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)  # umask applies
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _convert_one(job: Job) -> Result:
    """(src, dst, raw layout) -> (sha, duration, error, False). Runs in a pool worker.

    The source is hashed once (for sources.json); decoding skips the loudness statistics the validation
    stage computes (`decode_mono`), and the PCM16 WAV is packed with numpy and written without fsync."""
    src, dst, raw = job
    try:
        blob = wav_bytes_for_fast_path(src, raw, os.path.getsize(src))  # a WAV is read once: hashed, decoded
        sha = sha256_file(src, data=blob)
    except OSError as e:
        return "", None, f"missing: cannot read {src}: {e.strerror}", False
    try:
        audio = decode_mono(src, TARGET_SR, raw=raw, blob=blob)
    except AudioError as e:
        return sha, None, f"{e.reason}: {e.detail}", False
    except MemoryError:
        return sha, None, "too_large: out of memory while decoding", False
    if len(audio) == 0:
        return sha, None, "no_audio: nothing left after resampling", False
    _write_atomic(dst, wav16_bytes(audio, TARGET_SR))
    return sha, len(audio) / TARGET_SR, None, False


def _convert_chunk(jobs: list[Job]) -> list[Result]:
    return [_convert_one(j) for j in jobs]


def _worker_died(job: Job, reason: str) -> Result:
    return "", None, reason, False


class _Converter:
    """Converts jobs as they are submitted: in `workers` processes (chunks of _CHUNK clips, only small result
    tuples travel back) while the main process keeps preparing rows, or inline for small corpora."""

    def __init__(self, workers: int, expected: int):
        self.pool = (
            ProcessPoolExecutor(max_workers=workers) if workers > 1 and expected >= _POOL_MIN else None
        )
        self.pending: list[Job] = []
        self.parts: list[tuple[Future | list[Result], list[Job]]] = []
        self.expected, self.done, self.shown, self.submitted = expected, 0, 0, 0

    def submit(self, job: Job) -> None:
        self.submitted += 1
        self.pending.append(job)
        if len(self.pending) >= _CHUNK:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        chunk, self.pending = self.pending, []
        if self.pool is not None:
            self.parts.append((self.pool.submit(_convert_chunk, chunk), chunk))
        else:
            self.parts.append((_convert_chunk(chunk), chunk))
            self._tick(len(chunk))

    def _tick(self, k: int) -> None:
        n = max(self.expected, 1)
        self.done += k
        if self.expected >= _PROGRESS_MIN and (self.done - self.shown >= max(1, n // 10) or self.done == n):
            self.shown = self.done
            log.info("build_manifest: %d/%d clips", self.done, n)

    def results(self) -> list[Result]:
        self.expected = self.submitted
        self._flush()
        out: list[Result] = []
        try:
            for part, jobs in self.parts:
                if isinstance(part, Future):  # a dead worker costs its clip only (WORKER_DIED), not the run
                    got = result_or_rerun(part, _convert_one, jobs, _worker_died)
                    self._tick(len(got))
                    out.extend(got)
                else:
                    out.extend(part)
        finally:
            if self.pool is not None:
                self.pool.shutdown(cancel_futures=True)
        return out


def _run_jobs(jobs: list[Job], workers: int) -> list[Result]:
    conv = _Converter(workers, len(jobs))
    for j in jobs:
        conv.submit(j)
    return conv.results()


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


def _check_splits(rows: list[MetadataRow], metadata_path: Path, has_split: bool) -> None:
    """A declared split that is not train/val/test, or a speaker in two declared splits: the split itself is
    ambiguous, so refuse rather than guess."""
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


def load_validation(path: str | os.PathLike | None, meta_path: Path) -> dict:
    """validate_data's validation.json, checked to be about these metadata bytes ({} when `path` is None)."""
    if not path:
        return {}
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ManifestBuildError(f"{path}: cannot read the validation report ({e})") from None
    if not isinstance(report, dict) or "rejected_rows" not in report:
        raise ManifestBuildError(f"{path}: not a validation.json with rejected_rows (re-run validate_data)")
    if report.get("metadata_sha256") != sha256_file(meta_path):
        raise ManifestBuildError(
            f"{path}: the validation report is about other metadata than {meta_path} (sha256 differs); "
            "validate this dataset first"
        )
    return report


def _skip(r: MetadataRow, reason: str) -> dict:
    return {"line": r.line, "id": r.id, "audio": r.audio, "reason": reason}


def _text_or_lang_problem(r: MetadataRow, aliases: dict[str, str]) -> str | None:
    """The hard row checks build_manifest makes itself when no validation report is given."""
    if r.lang and r.lang not in aliases.values():
        return f"lang_known: lang {r.lang!r} is not in the prompt dictionary"
    bad = invalid_characters(r.text, r.lang)
    return f"text_script: characters not valid for {r.lang}: {bad!r}" if bad else None


def plan_rows(
    rows: list[MetadataRow], validation: dict, aliases: dict[str, str], keep: set[str]
) -> tuple[list[MetadataRow], list[dict], int]:
    """The rows to convert, the rows dropped with their reasons, and how many `langs` excluded.

    Dropped: every row validation rejected (a hard check failed, whatever the tolerance was), rows whose
    record is unreadable (NUL, control characters, non-UTF-8, bad JSON), ids that are unsafe as file names
    or held by two rows (both rows). Without a validation report, also rows whose lang is not a prompt key
    (`aliases`' keys) or whose text fails the script check. Locale aliases become the canonical locale of
    their prompt index.
    """
    rejected = {int(x["line"]): x["reason"] for x in validation.get("rejected_rows", [])}
    dup_ids = duplicate_ids(rows)
    kept: list[MetadataRow] = []
    skipped: list[dict] = []
    n_excluded = 0
    for r in rows:
        r = replace(r, lang=canonical_locale(r.lang, aliases))
        if keep and r.lang not in keep:
            n_excluded += 1
        elif r.line in rejected:
            skipped.append(_skip(r, f"rejected by validation: {rejected[r.line]}"))
        elif r.error:
            skipped.append(_skip(r, r.error))
        elif not validation and (why := _text_or_lang_problem(r, aliases)):
            skipped.append(_skip(r, why))
        elif not ID_RE.match(r.id):
            skipped.append(_skip(r, f"id_format: id {r.id!r} is not a safe file name"))
        elif r.id in dup_ids:
            others = ", ".join(str(x) for x in dup_ids[r.id] if x != r.line)
            skipped.append(_skip(r, f"id_unique: id {r.id!r} also on line(s) {others}"))
        else:
            kept.append(r)
    return kept, skipped, n_excluded


def drop_duplicate_audio(
    converted: list[tuple[MetadataRow, float, str]], mode: str
) -> tuple[list[tuple[MetadataRow, float]], list[dict]]:
    """Rows with identical source audio (sha256) are one recording: under two speakers a seeded split could
    put one copy in train and the other in test. `reject` drops every copy, `keep_first` all but the first
    line of each group; each dropped row is listed with its reason."""
    lines_of: dict[str, list[int]] = defaultdict(list)
    for r, _, sha in converted:
        lines_of[sha].append(r.line)
    kept, skipped = [], []
    for r, duration, sha in converted:
        lines = lines_of[sha]
        if len(lines) < 2 or (mode == "keep_first" and r.line == min(lines)):
            kept.append((r, duration))
            continue
        others = ", ".join(str(x) for x in lines if x != r.line)
        rule = f" (kept line {min(lines)} by duplicate_audio=keep_first)" if mode == "keep_first" else ""
        skipped.append(_skip(r, f"audio_unique: same audio content as line(s) {others}{rule}"))
    return kept, skipped


def _state_key(meta_path: Path, data_root: Path, out: Path, params: list) -> str:
    """What decides the outputs besides the audio: the metadata bytes, the parameters, this code's version."""
    h = hashlib.sha256(meta_path.read_bytes())
    h.update(json.dumps([_STATE_VERSION, str(data_root), str(meta_path), str(out), params]).encode())
    return h.hexdigest()


def _stat_sig(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _output_paths(out: Path, tarred: dict) -> list[str]:
    """Outputs whose stat the unchanged-input path checks (audio/ by its folder mtime and per clip)."""
    paths = [str(out / f"{s}.jsonl") for s in SPLITS] + [str(out / INDEX_NAME), str(out / AUDIO_DIR)]
    for s in SPLITS:
        d = out / TARRED_DIR / s
        paths.append(str(d))
        if s in tarred:
            paths += [str(d / "sharded_manifests"), tarred[s]["manifest"], *tarred[s]["tars"]]
            paths += [str(d / "sharded_manifests" / f"manifest_{i}.json") for i in range(tarred[s]["shards"])]
    return paths


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
            fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{s}.jsonl.{_RUN_TOKEN}.", suffix=".tmp")
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
        "build_manifest: %d clips (%s), converted %d, reused %d, skipped %d -> %s",
        sum(res.totals().values()),
        res.totals(),
        n_converted,
        n_reused,
        len(res.skipped),
        out,
    )
    return res


def _unchanged(out: Path, key: str) -> ManifestResult | None:
    """The result of the previous run when nothing it depended on changed, else None (do the full build).

    Nothing changed when: the metadata bytes and parameters hash to the recorded key; every folder holding
    audio resolves (realpath) to the same place inside the root as before; every source file is still a
    regular file (not a symlink) with the recorded size, mtime and inode, and was not modified within 2 s
    before the previous run finished (git's racy rule); every missing source is still missing; and every
    output (manifests, sources.json, audio/ and its clips, tarred shards) has the recorded stat. That is
    one lstat per source and one stat per clip, no metadata parsing, no hashing, no manifest writing."""
    try:
        state = json.loads((out / STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("key") != key or not state.get("fast"):
        return None
    try:
        for d, real in state["dirs"].items():
            if os.path.realpath(d) != real:
                return None
        for path, sig in state["outputs"].items():
            if _stat_sig(path) != sig:
                return None
        lstat, isreg = os.lstat, stat.S_ISREG
        for path, size, mtime_ns, ino in state["sources"]:
            try:
                st = lstat(path)
            except FileNotFoundError:
                if size is None:
                    continue
                return None
            if size is None or not isreg(st.st_mode):
                return None
            if st.st_size != size or st.st_mtime_ns != mtime_ns or st.st_ino != ino:
                return None
        audio = os.path.join(str(out), AUDIO_DIR)
        for name, size, ino in state["clips"]:
            st = os.stat(os.path.join(audio, name))
            if st.st_size != size or st.st_ino != ino:
                return None
    except (OSError, KeyError, TypeError, ValueError):
        return None
    fields = state["fields"]
    return _finish(out, fields, 0, sum(sum(c.values()) for c in fields["counts"].values()))


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
) -> ManifestResult:
    """Convert the audio of `data_root` into `out_dir` and write the split manifests + summary.json.

    `validation` (validate_data's validation.json for these metadata bytes): every row it rejected is
    dropped, whatever tolerance the validation ran with, and its locale aliases are applied; without it the
    default prompt dictionary's aliases are. `langs` keeps only those languages (None/empty: all). Rows whose
    record is unreadable, whose audio is outside the root, missing, undecodable or over the decode cap, whose
    text/speaker/lang is empty, whose id is unsafe or shared, and identical audio (every copy with
    `duplicate_audio="reject"`, all but the first line with "keep_first") are skipped and listed with
    reasons in summary.json (`skipped_by_reason` counts them per reason code). `tar_shards` > 0 also writes
    each split as a NeMo tarred dataset of that many shards under tarred/<split>/; 0 (default) writes none.
    A re-run reuses clips whose source is unchanged (same size and mtime as recorded, or else the same
    sha256); `verify_sources` re-hashes every source. A re-run on entirely unchanged inputs and outputs only
    stats them (build_state.json) and rewrites nothing but a changed summary.json. Builds into one
    `out_dir` are serialised by a lock file in it.
    """
    if tar_shards < 0:
        raise ValueError(f"tar_shards must be >= 0, got {tar_shards}")
    if not (0 <= val_ratio < 1 and 0 <= test_ratio < 1 and val_ratio + test_ratio < 1):
        raise ValueError(
            f"need 0 <= val_ratio, test_ratio and val_ratio + test_ratio < 1, got {val_ratio}, {test_ratio}"
        )
    if duplicate_audio not in DUPLICATE_AUDIO_MODES:
        raise ValueError(f"duplicate_audio must be one of {', '.join(DUPLICATE_AUDIO_MODES)}, got {duplicate_audio!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second build into this folder waits; released on close
        return _build(
            Path(data_root), out, seed, val_ratio, test_ratio, langs, workers, tar_shards, verify_sources,
            validation, duplicate_audio,
        )  # fmt: skip


def _build(
    data_root: Path, out: Path, seed, val_ratio, test_ratio, langs, workers, tar_shards, verify_sources,
    validation, duplicate_audio,
) -> ManifestResult:  # fmt: skip
    meta_path = find_metadata(data_root)
    report = load_validation(validation, meta_path)
    aliases = report.get("lang_aliases") if report else canonical_locales(default_prompt_dictionary())
    keep = {canonical_locale(x, aliases) for x in parse_langs(langs)}
    params = [seed, val_ratio, test_ratio, sorted(keep), tar_shards, duplicate_audio, report.get("metadata_sha256")]
    params.append(hashlib.sha256(json.dumps(report.get("rejected_rows", []), sort_keys=True).encode()).hexdigest())
    key = _state_key(meta_path, data_root, out, params)
    if not verify_sources:
        res = _unchanged(out, key)
        if res is not None:
            return res

    meta = read_metadata(data_root)
    rows, skipped, n_excluded = plan_rows(meta.rows, report, aliases, keep)
    if keep and not rows and not skipped:
        raise ManifestBuildError(
            f"{meta.path}: no rows for langs {sorted(keep)} (found {sorted({r.lang for r in meta.rows})})"
        )
    _check_splits(rows, meta.path, meta.has_split)

    out.mkdir(parents=True, exist_ok=True)
    (out / AUDIO_DIR).mkdir(exist_ok=True)
    state_path = out / STATE_NAME
    if state_path.exists():
        state_path.unlink()  # outputs are about to change: only a completed run records a new state
    index_path = out / INDEX_NAME
    try:
        old_index = json.loads(index_path.read_text(encoding="utf-8")) if index_path.exists() else {}
    except json.JSONDecodeError:
        old_index = {}  # a damaged cache only costs a re-conversion

    def raw_of(r: MetadataRow) -> dict | None:
        return r.raw.to_dict() if r.raw else None

    def previous_sha(r: MetadataRow) -> str | None:
        """The source hash a previous run converted for this id, if it used the same raw declaration."""
        entry = old_index.get(r.id)
        if not (isinstance(entry, dict) and entry.get("duration")) or entry.get("raw") != raw_of(r):
            return None
        if entry.get("converter") != CONVERTER:  # converted by other code: the same source, other samples
            return None
        return entry.get("sha256")

    # Reuse is decided here, so a re-run of an unchanged corpus starts no worker process at all. A source
    # whose size and mtime (ns) match what the previous run recorded keeps its recorded sha256 (the stat
    # cache git and DVC use); any other source a previous run converted is hashed again and reused only if
    # its content is unchanged. `verify_sources=True` hashes every source regardless. Clips to convert go to
    # the worker pool as soon as they are known, so conversion overlaps the preparation of later rows.
    # "racy" entries (git's term): a file modified within 2 s before the index was written may have been
    # rewritten in the same timestamp tick, so its stat proves nothing and it is hashed.
    racy_after = index_path.stat().st_mtime_ns - _RACY_NS if old_index else 0
    started_ns = time.time_ns()  # before any source is looked at (the racy rule of build_state.json)
    usable: list[MetadataRow] = []
    results: list = []
    todo: list[int] = []
    stats: list[tuple[int, int]] = []
    # for build_state.json: lexical source path -> (size, mtime, inode) or None (missing); folder -> realpath
    sources: list[list] = []
    dirs: dict[str, str] = {}
    fast = True
    lexical_root = os.path.normpath(os.path.abspath(data_root))
    real_root = os.path.realpath(data_root)
    root_prefix = lexical_root.rstrip(os.sep) + os.sep
    audio_dir = os.path.join(str(out), AUDIO_DIR)
    conv = _Converter(workers, len(rows))
    try:
        for r in rows:
            # resolve_audio's answer, with the realpath of each folder computed once: a regular file (not a
            # symlink) lexically inside the root, in a folder whose real path is inside the real root, is
            # that folder's real path + its name. Anything else takes resolve_audio's full per-row path.
            src = reason = st = None
            lexical = os.path.normpath(os.path.join(lexical_root, r.audio)) if r.audio else ""
            if r.audio and not os.path.isabs(r.audio) and lexical.startswith(root_prefix):
                d, name = os.path.split(lexical)
                real_d = dirs.get(d)
                if real_d is None:
                    real_d = dirs[d] = os.path.realpath(d)
                try:
                    lst = os.lstat(lexical)
                except OSError:
                    lst = None
                if lst is not None and stat.S_ISREG(lst.st_mode) and inside(real_d, real_root):
                    st, src = lst, os.path.join(real_d, name)
                    sources.append([lexical, lst.st_size, lst.st_mtime_ns, lst.st_ino])
            if src is None:
                real, reason = resolve_audio(data_root, r.audio)
                if reason is None:
                    src = str(real)
                    lexical = os.path.normpath(
                        r.audio if os.path.isabs(r.audio) else os.path.join(lexical_root, r.audio)
                    )
                    # a missing file is recorded; a symlink or a file met by an absolute path is not
                    if os.path.isabs(r.audio) or os.path.lexists(lexical):
                        fast = False
                    sources.append([lexical, None, None, None])
                    if os.path.isfile(src):
                        st = os.stat(src)
                    else:
                        reason = f"missing: file not found: {src}"
                else:
                    fast = False  # the reason depends on paths/symlinks the state does not record
            if reason is None and r.raw_error:
                reason = r.raw_error
            for value, name in ((r.text, "text"), (r.speaker, "speaker"), (r.lang, "lang")):
                if reason is None and not value:
                    reason = f"{name} is empty"
            if reason:
                skipped.append(_skip(r, reason))
                continue
            i = len(usable)
            usable.append(r)
            stats.append((st.st_size, st.st_mtime_ns))
            results.append(None)
            dst = os.path.join(audio_dir, f"{r.id}.wav")
            prev = previous_sha(r)
            if prev is not None:
                entry = old_index[r.id]
                same_stat = entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns
                same_stat = same_stat and st.st_mtime_ns < racy_after
                sha = prev if same_stat and not verify_sources else sha256_file(src)
                if sha == prev:
                    try:
                        ok = os.stat(dst).st_size > 44  # > a bare WAV header
                    except OSError:
                        ok = False
                    if ok:
                        results[i] = (sha, None, None, True)
                        continue
            conv.submit((src, dst, r.raw))
            todo.append(i)
        converted_results = conv.results()
    finally:
        if conv.pool is not None:
            conv.pool.shutdown(cancel_futures=True)
    for i, res in zip(todo, converted_results, strict=True):
        results[i] = res

    index: dict[str, dict] = {}
    converted_sha: list[tuple[MetadataRow, float, str]] = []
    n_converted = n_reused = 0
    for r, (sha, duration, err, reused), (size, mtime_ns) in zip(usable, results, stats, strict=True):
        if err:
            skipped.append(_skip(r, err))
            continue
        if reused:
            duration = float(old_index[r.id]["duration"])
            n_reused += 1
        else:
            n_converted += 1
        entry = {
            "source": r.audio,
            "sha256": sha,
            "duration": duration,
            "size": size,
            "mtime_ns": mtime_ns,
            "converter": CONVERTER,
        }
        if r.raw:
            entry["raw"] = raw_of(r)
        index[r.id] = entry
        converted_sha.append((r, duration, sha))
    converted, dropped = drop_duplicate_audio(converted_sha, duplicate_audio)
    skipped += dropped
    for d in dropped:
        index.pop(d["id"], None)
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

    manifest_set = publish_manifests(out, per_split)
    # Remove clips of earlier runs that this dataset no longer has, so audio/ matches the manifests.
    wanted = {f"{rid}.wav" for rid in index}
    with os.scandir(audio_dir) as it:
        for f in it:
            if f.name not in wanted and f.is_file(follow_symlinks=False):
                os.unlink(f.path)
    _write_if_changed(index_path, json.dumps(index, ensure_ascii=False, indent=0, sort_keys=True))
    tarred = {
        s: write_tarred_split(out, s, per_split[s], tar_shards, seed)
        for s in SPLITS
        if tar_shards > 0 and per_split[s]
    }
    for s in SPLITS:  # tarred splits of an earlier run that this run did not write would be stale
        if s not in tarred and (out / TARRED_DIR / s).is_dir():
            shutil.rmtree(out / TARRED_DIR / s)

    fields = {
        "data_root": str(data_root),
        "metadata": str(meta.path),
        "seed": seed,
        "val_ratio": val_ratio,
        "test_ratio": test_ratio,
        "langs": sorted(keep) or None,
        "split_source": split_source,
        "counts": counts,
        "hours": hours,
        "speakers": speakers,
        "n_rows": len(meta.rows),
        "n_excluded_by_lang": n_excluded,
        "skipped": skipped,
        "tarred": tarred,
        "warnings": warnings,
        "duplicate_audio": duplicate_audio,
        "validation": str(validation) if validation else None,
        "manifest_sha256": manifest_set,
    }
    res = _finish(out, fields, n_converted, n_reused)
    _write_state(out, key, fields, sources, dirs, index, fast and _not_racy(sources, started_ns))
    return res


def _not_racy(sources: list[list], started_ns: int) -> bool:
    """False when a source was modified within 2 s before this run looked at it: it may change again within
    the same timestamp tick, so its stat cannot prove it unchanged next time (git's racy rule)."""
    limit = started_ns - _RACY_NS
    return all(m is None or m < limit for _, _, m, _ in sources)


def _write_state(
    out: Path, key: str, fields: dict, sources: list[list], dirs: dict, index: dict, fast: bool
) -> None:
    """Record what this run's outputs depend on, for `_unchanged`. Written last, after every output."""
    audio = os.path.join(str(out), AUDIO_DIR)
    clips = []
    if fast:
        for rid in index:
            sig = _stat_sig(os.path.join(audio, f"{rid}.wav"))
            if sig is None:
                fast = False
                break
            clips.append([f"{rid}.wav", sig[0], sig[2]])
    state = {
        "key": key,
        "fast": fast,
        "dirs": dirs,
        "outputs": {p: _stat_sig(p) for p in _output_paths(out, fields["tarred"])} if fast else {},
        "sources": sources if fast else [],
        "clips": clips,
        "fields": fields,
    }
    atomic_write_text(out / STATE_NAME, json.dumps(state, ensure_ascii=False, separators=(",", ":")))
