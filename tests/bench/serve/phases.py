"""The measured phases of one `bench_serve.py` run, in the order they run against one started server. Each
phase reads what it needs from `Run` and writes its figures into `run.res` (the JSON report) and its latencies
into `run.lat_plot` (the HTML report's CDF)."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from components.export_triton.core import ServingConfig
from serving.server import TritonServer
from tests.bench.serve.gateway import gateway_level, gateway_pairs_one_stream
from tests.bench.serve.load import Tally, drive, noisy_neighbour, paired, pct, summary, triton_level
from tests.bench.serve.model import in_process, in_process_batched
from tests.bench.serve.triton import (
    MODEL,
    metrics,
    metrics_delta,
    round_trip,
    rss_kb,
    server_health,
    triton_sequential,
)


@dataclass
class Run:
    """What every phase shares: the parsed flags, the in-process model, the clips cut into `step`-sample
    chunks at `att`, each clip's in-process final text, the concurrency levels and the started server."""

    a: argparse.Namespace
    asr: object
    clips: list
    step: int
    att: list[int]
    expected: dict[str, str]
    levels: list[int]
    server: TritonServer
    work: Path
    res: dict
    lat_plot: dict[str, list[float]] = field(default_factory=dict)
    p1: list[float] = field(default_factory=list)  # P1 per round (issue 14 #6)

    @property
    def url(self) -> str:
        return self.server.grpc_url

    @property
    def big(self) -> int:
        return max(self.levels)


def overhead(run: Run) -> None:
    """Warm-up, then lock-step empty chunks: the serving path's own cost."""
    drive(run.url, run.clips[:2], run.step, run.expected, 1, 40)  # warm-up
    m0 = metrics(run.server)
    rt = round_trip(run.url, run.clips[0][2], 200)
    run.res["empty_chunk_round_trip"] = {**summary(rt), **metrics_delta(m0, metrics(run.server))}
    e = run.res["empty_chunk_round_trip"]
    print(
        f"serving overhead (empty chunks, 1 stream): p50 {e['p50_ms']:.2f} ms, of which in the server "
        f"{e['server_request_ms']:.2f} ms (execute {e['server_compute_ms']:.2f})",
        flush=True,
    )


def one_stream(run: Run) -> None:
    """1 stream vs in-process: alternating passes over the same clips and chunks, so that the load of the
    (shared) machine drifts equally over both; records P1 per round."""
    a = run.a
    base_lat, tri_lat, tri_wall, mismatches = [], [], 0.0, 0
    m0 = metrics(run.server)
    for _ in range(a.rounds):
        lat, _ = in_process(run.asr, run.clips, run.step, run.att, 1)
        base_lat += lat
        p1_in = pct(lat, 50)
        lat, finals, wall = triton_sequential(run.url, run.clips, run.step)
        run.p1.append(pct(lat, 50) / p1_in)
        tri_lat += lat
        tri_wall += wall
        mismatches += sum(finals[n] != run.expected[n] for n in finals)
    base = run.res["in_process"] = summary(base_lat)
    run.lat_plot["in-process"] = base_lat
    run.lat_plot["Triton, 1 stream"] = tri_lat
    s = summary(tri_lat)
    s.update(metrics_delta(m0, metrics(run.server)))
    s.update(
        streams=1,
        chunks_per_s=len(tri_lat) / tri_wall,
        wall_s=tri_wall,
        sequences=a.rounds * len(run.clips),
        text_mismatches=mismatches,
        errors=0,
    )
    run.res["levels"]["1 stream"] = s
    print(
        f"in-process stream_step: p50 {base['p50_ms']:.2f} ms  p95 {base['p95_ms']:.2f}  "
        f"p99 {base['p99_ms']:.2f}  ({base['n']} chunks, {a.rounds} passes alternating with Triton's)\n"
        f" 1 stream : p50 {s['p50_ms']:.1f} ms  p95 {s['p95_ms']:.1f}  p99 {s['p99_ms']:.1f}  "
        f"{s['chunks_per_s']:.1f} chunks/s; in server {s['server_request_ms']:.1f} ms (execute "
        f"{s['server_compute_ms']:.1f}); text mismatches {mismatches}/{s['sequences']}",
        flush=True,
    )


def batched_ceiling(run: Run) -> None:
    """In-process `stream_step_batch` of 1 and of the largest level's streams: the server's ceiling."""
    if not hasattr(run.asr, "stream_step_batch"):
        return
    one_cps = in_process_batched(run.asr, run.clips, run.step, run.att, 1)[0]
    many_cps = in_process_batched(run.asr, run.clips, run.step, run.att, run.big)[0]
    run.res["in_process_batched"] = {
        "1_stream_chunks_per_s": one_cps,
        f"{run.big}_streams_chunks_per_s": many_cps,
        "ratio": many_cps / one_cps,
    }
    print(
        f"in-process stream_step_batch (no Triton, the server's ceiling): 1 stream {one_cps:.0f} chunks/s, "
        f"{run.big} streams {many_cps:.0f} chunks/s ({many_cps / one_cps:.2f}x)",
        flush=True,
    )


def concurrency_levels(run: Run) -> None:
    """Each level above 1: N concurrent closed-loop streams, per-chunk latency, steady chunks/s, batching."""
    a = run.a
    for n in [n for n in run.levels if n != 1]:
        m0 = metrics(run.server)
        tally, wall, steady = drive(
            run.url, run.clips, run.step, run.expected, n, a.level_chunks, seed=n, procs=a.client_procs
        )
        s = summary(tally.latencies)
        s.update(metrics_delta(m0, metrics(run.server)))
        s.update(
            streams=n,
            chunks_per_s=steady,
            chunks_per_s_overall=tally.chunks / wall,
            wall_s=wall,
            sequences=tally.sequences,
            text_mismatches=len(tally.text_mismatches),
            errors=len(tally.valid_errors),
        )
        run.res["levels"][f"{n} stream{'s' if n > 1 else ''}"] = s
        run.lat_plot[f"Triton, {n} stream{'s' if n > 1 else ''}"] = tally.latencies
        print(
            f"{n:>2} streams: p50 {s['p50_ms']:.1f} ms  p95 {s['p95_ms']:.1f}  p99 {s['p99_ms']:.1f}  "
            f"{s['chunks_per_s']:.1f} chunks/s, mean batch {s['mean_batch']:.1f}; in server "
            f"{s['server_request_ms']:.1f} ms (queue {s['server_queue_ms']:.1f}, execute "
            f"{s['server_compute_ms']:.1f})  "
            f"({tally.chunks} chunks, {tally.sequences} whole "
            f"sequences, {len(tally.text_mismatches)} text mismatches, {len(tally.valid_errors)} errors)",
            flush=True,
        )
        _first_problems(tally)


def paired_rounds(run: Run) -> None:
    """P1 and P2' (issue 14 #6), as alternating paired rounds: each round runs the in-process side and the
    Triton side back to back, so the box's load drift hits both sides of each ratio alike."""
    a, p2 = run.a, []
    for r in range(a.rounds if hasattr(run.asr, "stream_step_batch") else 0):
        cps_in = in_process_batched(run.asr, run.clips, run.step, run.att, run.big)[0]
        _, cps_tr = triton_level(
            run.url, run.clips, run.step, run.expected, run.big, a.pair_chunks, 100 + r, a.window
        )
        p2.append(cps_tr / cps_in)
        print(f"paired round {r + 1}/{a.rounds}: P1 {run.p1[r]:.3f}  P2' {p2[-1]:.3f}", flush=True)
    run.res["paired"] = {"P1": paired(run.p1), "P2_prime": paired(p2), "P2_prime_window": a.window}


def noisy(run: Run) -> None:
    """N-1 streams of normal chunks alone and beside one stream of the largest chunks the model accepts."""
    per_stream = max(8, run.a.level_chunks // run.big)
    nn = noisy_neighbour(run.url, run.clips, run.step, ServingConfig.max_chunk_s, run.big - 1, per_stream)
    run.res["noisy_neighbour"] = nn
    print(
        f"noisy neighbour: {nn['normal_streams']} normal streams p99 {nn['quiet']['p99_ms']:.1f} ms alone, "
        f"{nn['with_neighbour']['p99_ms']:.1f} ms beside one stream of {nn['big_chunk_s']:g} s chunks "
        f"({nn['p99_growth']:.2f}x)",
        flush=True,
    )


def via_gateway(run: Run) -> None:
    """`--via gateway`: the gateway's added p50 per chunk against direct Triton, at 1 and N streams."""
    from serving.gateway.process import GatewayProcess

    a = run.a
    gport, hport = (int(x) for x in a.gateway_ports.split(","))
    gw = GatewayProcess(
        run.url.removeprefix("grpc://"),
        run.work / "gateway.log",
        gport,
        hport,
        "bench-key",
        ["--max-streams-per-key", "64", "--offline-model", ""],
    ).start()
    try:
        pairs = max(a.rounds, a.gateway_pairs)
        added = {
            "1": gateway_pairs_one_stream(run.url, gw.grpc_addr, "bench-key", run.clips, run.step, pairs)
        }
        print(
            f"gateway, 1 stream: added p50 per chunk {np.median(added['1']):+.2f} ms, median of "
            f"{len(added['1'])} paired sessions [{min(added['1']):+.2f} .. {max(added['1']):+.2f}]",
            flush=True,
        )
        for n in (run.big,) if run.big > 1 else ():
            added[str(n)] = _gateway_rounds(run, gw.grpc_addr, n)
            print(
                f"gateway, {n} stream(s): added p50 per chunk {np.median(added[str(n)]):+.2f} ms "
                f"(rounds {', '.join(f'{x:+.2f}' for x in added[str(n)])})",
                flush=True,
            )
        run.res["gateway_added_p50_ms"] = {n: paired(v) for n, v in added.items()}
    finally:
        gw.stop()


def _gateway_rounds(run: Run, gw_addr: str, n: int) -> list[float]:
    """`--rounds` paired rounds of `n` concurrent streams, ABBA (odd rounds run the gateway first); -> per
    round (gateway p50 - Triton p50) in ms."""
    per, added = max(8, run.a.pair_chunks // n), []
    for r in range(run.a.rounds):
        sides = ["triton", "gateway"] if r % 2 == 0 else ["gateway", "triton"]
        side_lat = {}
        for side in sides:
            if side == "triton":
                side_lat[side], _ = triton_level(
                    run.url, run.clips, run.step, run.expected, n, per * n, 200 + r
                )
            else:
                side_lat[side], _ = gateway_level(gw_addr, "bench-key", run.clips, run.step, n, per)
        added.append(pct(side_lat["gateway"], 50) - pct(side_lat["triton"], 50))
    return added


def soak(run: Run) -> None:
    """`--chunks` requests over `--soak-streams` streams, `--malformed` of them malformed: server RSS before
    and after, crashes, refusals (`--no-soak`: one whole clip per stream, its malformed share included)."""
    a, server = run.a, run.server
    if a.no_soak:
        a.chunks = 0
    before_health = server_health(server)
    before = rss_kb(server.process.pid)
    pid = server.process.pid
    stubs_before = set(before) - {pid}
    tally, wall, _ = drive(
        run.url, run.clips, run.step, run.expected, a.soak_streams, a.chunks, a.malformed, seed=99
    )
    time.sleep(1.0)
    health = server_health(server)
    after = rss_kb(pid) if health["alive"] else {}
    crashes = (
        int(not health["alive"])
        + int(set(after) - {pid} != stubs_before)  # a python-backend stub died and was restarted
        + int(health["models"].get(MODEL) != "READY")
    )
    rb, ra = sum(before.values()), sum(after.values())
    sk = run.res["soak"] = {
        "requests": tally.chunks
        + len(tally.valid_errors)
        + sum(tally.malformed.values())
        + len(tally.malformed_accepted),
        "streams": a.soak_streams,
        "wall_s": wall,
        "valid_chunks": tally.chunks,
        "malformed_refused": tally.malformed,
        "malformed_accepted": len(tally.malformed_accepted),
        "valid_errors": len(tally.valid_errors),
        "whole_sequences": tally.sequences,
        "text_mismatches": len(tally.text_mismatches),
        "rss_before_kb": before,
        "rss_after_kb": after,
        "rss_before_mb": rb / 1024,
        "rss_after_mb": ra / 1024,
        "rss_growth": (ra - rb) / rb if rb else float("nan"),
        "crashes": crashes,
        "health_before": before_health,
        "health_after": health,
        "latency": summary(tally.latencies),
    }
    print(
        f"soak: {sk['requests']} requests over {a.soak_streams} streams in {wall:.0f}s; malformed refused "
        f"{sum(tally.malformed.values())} {tally.malformed}, accepted {sk['malformed_accepted']}; valid "
        f"errors {sk['valid_errors']}; text mismatches {sk['text_mismatches']}/{tally.sequences}; "
        f"RSS {sk['rss_before_mb']:.0f} -> {sk['rss_after_mb']:.0f} MB ({100 * sk['rss_growth']:+.1f}%); "
        f"crashes {crashes}",
        flush=True,
    )
    _first_problems(tally)


def _first_problems(tally: Tally) -> None:
    """The first three text mismatches and failed valid requests of a pass, indented under its line."""
    for m in (tally.text_mismatches + tally.valid_errors)[:3]:
        print(f"    {m}")


def measure(run: Run) -> None:
    """Every phase, in the order of the module docstring of bench_serve.py."""
    overhead(run)
    one_stream(run)
    batched_ceiling(run)
    concurrency_levels(run)
    paired_rounds(run)
    noisy(run)
    if run.a.via == "gateway":
        via_gateway(run)
    soak(run)
