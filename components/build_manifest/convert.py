"""Convert one clip (decode any format, resample to 16 kHz mono, write PCM16 WAV), and many in a pool.

Workers get only (source, destination, raw layout) and return small result tuples; a worker that dies
(OOM-killed, a crash in a codec) costs its clip only (`worker_died`), never the run.
"""

from __future__ import annotations

import logging
import os
import secrets
from concurrent.futures import Future, ProcessPoolExecutor

from components.common.audio import (
    TARGET_SR,
    AudioError,
    RawFormat,
    decode_mono,
    wav16_bytes,
    wav_bytes_for_fast_path,
)
from components.common.io import atomic_write_bytes, sha256_file
from components.common.pool import result_or_rerun

# The conversion's identity: a clip converted by another resampler/encoder is not reused (bump with the code).
CONVERTER = "soxr-hq+pcm16-round/2"
_POOL_MIN = 32  # below this many clips a process pool costs more than it saves
_CHUNK = 32  # clips per pool task: small enough to balance the tail, large enough to amortise pickling
_PROGRESS_MIN = 200
# Temp names unique per run and process: two builds (or hosts) sharing an output folder never write, rename
# or delete each other's half-written clips.
RUN_TOKEN = secrets.token_hex(4)
log = logging.getLogger(__name__)

Job = tuple[str, str, "RawFormat | None"]
Result = tuple[str, "float | None", "str | None", bool]  # (source sha256, duration, error, reused)


def _write_atomic(dst: str, data: bytes) -> None:
    """Temp file + rename (a reader never sees half a clip), no fsync: see write_wav16. A fixed per-process
    temp name costs less than mkstemp's random names; leftovers of a killed run are pruned as stale clips."""
    atomic_write_bytes(dst, data, durable=False, tmp_name=f"{dst}.{os.getpid()}.{RUN_TOKEN}.tmp")


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


class Converter:
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
    conv = Converter(workers, len(jobs))
    for j in jobs:
        conv.submit(j)
    return conv.results()
