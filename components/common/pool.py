"""A process pool whose dead worker costs one named item, not the whole run.

When a worker dies without raising (the kernel's OOM killer, a segfault in a codec library),
`concurrent.futures` marks the pool broken and every pending task fails with BrokenProcessPool: the caller
would lose every result and write no report. Here the items whose results did not come back are re-run one
at a time, each in a fresh single-worker pool, so the item that kills its worker again is reported through
`on_crash(item, "worker_died: ...")` and every other item still gets its real result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)
WORKER_DIED = (
    "worker_died: the worker process decoding this file died without an error "
    "(killed, e.g. out of memory, or crashed in a native library)"
)


def _apply_chunk(fn: Callable[[T], R], items: list[T]) -> list[R]:
    return [fn(x) for x in items]


def run_isolated(fn: Callable[[T], R], item: T, on_crash: Callable[[T, str], R]) -> R:
    """`fn(item)` in a fresh one-worker process; `on_crash(item, reason)` if that process dies."""
    with ProcessPoolExecutor(max_workers=1) as pool:
        try:
            return pool.submit(fn, item).result()
        except BrokenProcessPool:
            log.warning("%s: %s", item, WORKER_DIED)
            return on_crash(item, WORKER_DIED)


def result_or_rerun(
    fut: Future, fn: Callable[[T], R], items: Sequence[T], on_crash: Callable[[T, str], R]
) -> list[R]:
    """The results of a chunk future; when the pool broke under it, its items re-run in isolation."""
    try:
        return fut.result()
    except BrokenProcessPool:
        return [run_isolated(fn, x, on_crash) for x in items]


def map_guarded(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    on_crash: Callable[[T, str], R],
    chunksize: int = 16,
    progress: Callable[[int], None] | None = None,
) -> list[R]:
    """[fn(x) for x in items] in `workers` processes (chunks of `chunksize`), in order; an item whose worker
    dies gets `on_crash(item, reason)` instead (module docstring). `progress(k)` is called as k items finish.
    `fn` must be picklable (a module-level function)."""
    chunks = [list(items[i : i + chunksize]) for i in range(0, len(items), chunksize)]
    out: list[R] = []
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(_apply_chunk, fn, c) for c in chunks]
        for fut, chunk in zip(futures, chunks, strict=True):
            got = result_or_rerun(fut, fn, chunk, on_crash)
            out.extend(got)
            if progress:
                progress(len(got))
    return out
