"""Deterministic failures: the same inputs will fail the same way, so retrying them only burns GPU time.

Kubeflow's retry policy (kfp 2.17 `set_retry`) cannot filter by exit code: it retries every failure. So the
deterministic checks run first, in the preflight step, which has no retry; and a step that does retry
(finetune_asr: preemption, eviction) remembers a deterministic failure in its work dir on the PVC, so the
retry fails at once (exit code EXIT_DETERMINISTIC) without loading a model again.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from components.common.io import atomic_write_text

EXIT_DETERMINISTIC = 3  # a named, non-transient failure (settings, data, checkpoint, tokenizer)


class DeterministicError(Exception):
    """A failure that a retry cannot fix (carries the step's one-line reason)."""


def is_deterministic(exc: BaseException) -> bool:
    """Settings, data and checkpoint errors are ValueError/KeyError/FileNotFoundError in this code base (and in
    NeMo's config checks); OOM, I/O and interruptions are RuntimeError/OSError/SystemExit: transient."""
    return isinstance(exc, (DeterministicError, ValueError, KeyError, LookupError, FileNotFoundError))


@contextlib.contextmanager
def remember_deterministic_failure(marker: str | Path) -> Iterator[None]:
    """Fail at once if `marker` holds a deterministic failure of these inputs; write it when one happens."""
    marker = Path(marker)
    if marker.is_file():
        reason = json.loads(marker.read_text(encoding="utf-8")).get("reason", "")
        raise DeterministicError(f"{reason} (the same inputs failed before: {marker}; not retried)")
    try:
        yield
    except BaseException as e:
        if is_deterministic(e) and not isinstance(e, DeterministicError):
            marker.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(marker, json.dumps({"reason": f"{type(e).__name__}: {e}"}) + "\n")
        raise


def exit_on_deterministic(step: str, exc: BaseException) -> None:
    """In a kfp component: print the step's one-line reason and exit EXIT_DETERMINISTIC; else re-raise."""
    if is_deterministic(exc):
        kind = "" if isinstance(exc, DeterministicError) else f"{type(exc).__name__}: "
        print(f"{step} failed: {kind}{exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_DETERMINISTIC) from exc
    raise exc
