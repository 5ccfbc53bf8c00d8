"""The Triton load benchmark's pure parts (tests/bench/serve): flags, targets, and the load worker's entry point
importable by the spawned client processes of `--client-procs`. The run itself is `make bench-serve`."""

from __future__ import annotations

import pickle

import pytest

from tests.bench.bench_serve import parse_args
from tests.bench.serve.load import _run_workers, paired, summary
from tests.bench.serve.report import met, targets

FLAGS = (
    "--model --d-model --layers --att-context-size --chunks --level-chunks --streams --soak-streams --malformed "
    "--clip-s --threads --queue-delay-us --client-procs --rounds --via --gateway-ports --pair-chunks "
    "--window --gateway-pairs --no-soak --quick --out"
).split()


def test_quick_shortens_every_pass_and_keeps_three_rounds():
    a = parse_args(["--quick", "--rounds", "1"])
    assert (a.chunks, a.level_chunks, a.pair_chunks, a.rounds) == (1000, 200, 128, 3)
    a = parse_args([])
    assert (a.chunks, a.level_chunks, a.pair_chunks, a.rounds, a.streams) == (10_000, 1600, 320, 3, "1,4,16")
    assert a.window == 2  # docs/REHEARSAL.md and SERVING.md: P2' with 2 chunks in flight per stream


def test_a_window_is_for_valid_load_only():
    from tests.bench.serve.load import Worker

    with pytest.raises(ValueError, match="valid load only"):
        Worker("grpc://127.0.0.1:1", [], 2560, {}, 10, 0, malformed_frac=0.05, window=2)


def test_every_flag_of_the_cli_is_there(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    assert all(f"[{f}" in text.replace("\n", " ") for f in FLAGS)


def test_targets_name_each_figure_and_judge_it():
    lvl = {"p50_ms": 12.0, "chunks_per_s": 100.0}
    res = {
        "in_process": {"p50_ms": 10.0},
        "levels": {"1 stream": lvl, "16 streams": {"p50_ms": 40.0, "chunks_per_s": 450.0}},
        "paired": {"P1": paired([1.2, 1.0, 1.1]), "P2_prime": paired([])},
        "noisy_neighbour": {"p99_growth": 2.5},
        "gateway_added_p50_ms": {"1": paired([0.5, 2.0, 1.0])},
        "soak": {"rss_growth": 0.02, "crashes": 0},
    }
    got = {t["name"]: (round(t["value"], 3), t["target"], t["met"]) for t in targets(res, 16)}
    assert got == {
        "Triton p50 / in-process p50 (1 stream)": (1.2, "<= 1.25", True),
        "16-stream / 1-stream chunks/s": (4.5, ">= 4", True),
        "P1: Triton p50 / in-process p50, 1 stream (median of pairs)": (1.1, "<= 1.10", True),
        "noisy neighbour: others' p99 growth": (2.5, "<= 2", False),
        "gateway added p50, 1 stream(s) (ms, median)": (1.0, "<= 1.50", True),
        "soak RSS growth": (0.02, "< 0.10", True),
        "soak crashes": (0, "== 0", True),
    }
    assert not met(0.10, "< 0.10") and met(0.85, ">= 0.85")


def test_latency_summary_in_milliseconds():
    s = summary([0.001, 0.002, 0.003])
    assert s["n"] == 3 and s["p50_ms"] == pytest.approx(2.0)
    assert summary([])["n"] == 0


def test_the_load_worker_entry_point_pickles_by_module_for_spawned_clients():
    assert pickle.loads(pickle.dumps(_run_workers)) is _run_workers
    assert _run_workers.__module__ == "tests.bench.serve.load"
