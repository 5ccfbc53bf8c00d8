"""Benchmark of an unchanged pipeline re-run against its cold run (run by `make bench`; prints numbers, asserts
nothing about time).

The world of tests/e2e/test_versions_e2e.py (a git + DVC repository, the tiny base model registered in MLflow on
sqlite, the whole pipeline through kfp.local, 2 fine-tune steps): one cold run, then `--reruns` unchanged
re-runs (every cached step a cache hit; materialize_data, resolve_base, register_model, release_gate,
promote_model and export_triton run). Printed: the cold run's wall time, each re-run's and its seconds per
task (from kfp.local's log lines), and mean re-run / cold run (issue 16's target: <= 0.10). A cold run cannot
alternate with its own re-runs; run it twice to see the machine's drift.

    .venv/bin/python tests/bench/bench_rerun.py               # one cold run, 2 re-runs (~3-5 min on 2 cores)
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipelines.local import run_local  # noqa: E402
from tests.e2e.test_versions_e2e import make_world  # noqa: E402

_TASK = re.compile(r"(Executing task|Task) '([\w-]+)'( finished)?")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _TaskClock(io.TextIOBase):
    """kfp.local's log, swallowed, with each task's start and finish time noted."""

    def __init__(self) -> None:
        self.t0, self.started, self.seconds = time.monotonic(), {}, {}

    def write(self, text: str) -> int:
        now = time.monotonic() - self.t0
        for m in _TASK.finditer(_ANSI.sub("", text)):
            if m.group(1) == "Executing task":
                self.started[m.group(2)] = now
            elif m.group(3) and m.group(2) in self.started:
                self.seconds[m.group(2)] = now - self.started[m.group(2)]
        return len(text)


def timed_run(args: dict, pipeline_root: Path) -> tuple[float, dict[str, float]]:
    clock, stdout = _TaskClock(), sys.stdout
    sys.stdout = clock  # run_local tees kfp.local's output from sys.stdout
    try:
        run_local(args, pipeline_root)
    finally:
        sys.stdout = stdout
    return time.monotonic() - clock.t0, clock.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reruns", type=int, default=2)
    a = ap.parse_args()
    mp = pytest.MonkeyPatch()
    with tempfile.TemporaryDirectory(prefix="bench-rerun-") as tmp:
        print("cold run (synthesize, DVC, base model, whole pipeline) ...", flush=True)
        world = make_world(Path(tmp), mp)
        cold = world["cold_s"]
        print(f"cold run: {cold:.1f} s", flush=True)
        times = []
        for i in range(a.reruns):
            seconds, tasks = timed_run(world["args"], world["root"] / "kfp")
            times.append(seconds)
            steps = ", ".join(f"{t} {s:.1f}" for t, s in tasks.items())
            print(f"unchanged re-run {i + 1}: {seconds:.1f} s ({steps})", flush=True)
    mp.undo()
    mean = statistics.mean(times)
    print(
        f"re-run / cold run: {mean / cold:.3f} (mean re-run {mean:.1f} s, cold {cold:.1f} s; target <= 0.10)"
    )


if __name__ == "__main__":
    main()
