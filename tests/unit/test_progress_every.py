"""The training progress line's cadence: about six lines a run, so `make demo`'s story stays short (issue 17:
the demo's terminal output fits on about three screens) and a long run still says it is alive."""

import pytest

from components.finetune_asr.trainer import progress_every


@pytest.mark.parametrize(
    ("max_steps", "every"),
    [(3, 50), (300, 50), (800, 150), (3000, 500), (100_000, 1000)],
)
def test_progress_every_gives_about_six_lines_on_round_steps(max_steps, every):
    assert progress_every(max_steps) == every


@pytest.mark.parametrize("max_steps", [1, 50, 300, 800, 1234, 3000, 20_000])
def test_a_run_prints_at_most_eight_progress_lines(max_steps):
    every = progress_every(max_steps)
    # the first step, every `every`-th step and the last one (trainer._callbacks)
    lines = {1, max_steps} | set(range(every, max_steps + 1, every))
    assert len(lines) <= 8 or every == 1000, (max_steps, every, len(lines))
