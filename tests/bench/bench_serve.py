"""`make bench-serve`: a bounded tritonclient (gRPC) load generator against the real tritonserver.

perf_analyzer cannot run here (glibc), so this drives the served `asr_streaming` model itself. What it
measures, all on one model, one att_context_size and the same audio chunks:

1. in-process baseline: `AsrModel.stream_step` per-chunk latency (the code the server runs, no server), in passes
   that alternate with 1-stream Triton passes over the same clips and chunks (the machine is shared: alternating
   spreads load drift over both sides of the ratio);
2. per-chunk latency p50/p95/p99 and aggregate chunks/s with 1, 4 and 16 concurrent streams. Each stream is a
   gRPC bidirectional stream that sends its next chunk as soon as the previous answer arrives (closed loop, no
   real-time pacing: pacing would cap throughput at the audio rate and hide the server's capacity). Triton's
   metrics give the mean batch per execute() and the server-side split (queue, execute); empty-chunk round
   trips give the serving path's own cost;
3. ratios: Triton p50 at 1 stream / in-process p50 (target <= 1.25); 16-stream chunks/s / 1-stream chunks/s
   (target >= 4x);
4. a soak of N chunks (default 10,000) over 4 concurrent streams, 5% of them malformed (wrong dtype, wrong
   shape, NaN, unknown language, unknown sequence, chunk after END): server RSS (tritonserver + its python-backend
   stub processes, VmRSS from /proc/<pid>/status) before and after (target growth < 10%), crashes (server exited, a
   stub restarted, a model not READY: target 0), valid requests that failed, malformed requests that did not.

5. issue 14 #6, as alternating paired rounds (median and spread of the per-round ratios, `--rounds`, >= 3):
   P1 = Triton per-chunk p50 / in-process p50 at 1 stream (target <= 1.10 at full size); P2' = Triton
   N-stream chunks/s / in-process `stream_step_batch` of N streams chunks/s (target >= 0.85); the raw N/1 ratio
   stays in (3);
6. noisy neighbour (issue 15 #13): N-1 streams of normal chunks, alone and beside one stream sending the
   largest chunk the model accepts (max_chunk_s, 0.5 s): the others' p99 growth (target <= 2x);
7. `--via gateway`: the same closed-loop streams through the gateway (Riva StreamingRecognize, one interim
   result per chunk) vs straight to Triton, 1 and N streams, paired rounds: the gateway's added p50 per chunk
   (target <= 1.5 ms or <= 5 % of the in-process step, whichever is larger).

`--model X.nemo` serves any checkpoint (the lead's full-size run); `--quick --no-soak --streams 1,16` keeps a
full-size run short (3 pairs of short passes over 6 clips of 3 s).

Every completed sequence's final text is compared with the in-process text of the same clip (the load must not
cost correctness). Figures are printed and written to outputs/bench/serve.json and serve.html (latency plot).

Model: the cached demo base model (.cache/base_model/*/base.nemo) if present, else a tiny fixture model of the
same class (random weights, like the tests build). Run `--quick` for a smoke run (~3 min).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_load import (  # noqa: E402 (beside this file: the load generator and the server probes)
    MODEL,
    drive,
    gateway_level,
    metrics,
    metrics_delta,
    noisy_neighbour,
    paired,
    pct,
    round_trip,
    rss_kb,
    server_health,
    split,
    summary,
    triton_level,
    triton_sequential,
)
from serve_report import targets, write_html  # noqa: E402

from components.export_triton.core import ServingConfig, export_model, parse_att_context_size  # noqa: E402
from serving.server import TritonServer  # noqa: E402

EVAL_AUDIO = ROOT.parent / "shared" / "eval-audio"


# ------------------------------------------------------------------------------------------- model and audio
def pick_model(
    work: Path, explicit: str | None, d_model: int | None = None, layers: int = 8
) -> tuple[Path, str]:
    if explicit:
        return Path(explicit), "given"
    if d_model:  # the demo model is 0.39 M parameters: per-step costs that don't scale with size dominate it
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_runtime import build_scaled_model

        return build_scaled_model(
            work, d_model, layers
        ), f"random weights, d_model {d_model} x {layers} layers"
    cached = sorted((ROOT / ".cache" / "base_model").glob("*/base.nemo"))
    if cached:
        return cached[-1], "cached demo base model"
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from test_asr_infer import build_tiny_model  # the fixture model the unit tests use

    return build_tiny_model(work / "tiny"), "tiny fixture model (random weights)"


def load_clips(langs: set[str], n: int, max_s: float) -> list[tuple[str, np.ndarray, str]]:
    """(name, 16 kHz mono float32, lang): real recordings cropped to max_s, else synthetic signals."""
    from components.common.audio import load_audio

    def key(lang: str) -> str | None:
        for k in (lang, lang.split("-")[0]):
            if k in langs:
                return k
        return None

    clips = []
    manifest = EVAL_AUDIO / "manifest.jsonl"
    if manifest.is_file():
        rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if key(r["lang"]) and r.get("duration", 0) >= 2.0]
        random.Random(0).shuffle(rows)
        for r in rows[:n]:
            audio = load_audio(EVAL_AUDIO / r["audio_filepath"])[: int(max_s * 16000)]
            clips.append((Path(r["audio_filepath"]).name, audio, key(r["lang"])))
    if not clips:
        rng = np.random.RandomState(0)
        lang = sorted(langs)[0]
        t = np.arange(int(max_s * 16000)) / 16000
        for i in range(n):
            sig = 0.3 * np.sin(2 * np.pi * (150 + 50 * i + 200 * t) * t) + 0.05 * rng.randn(t.size)
            clips.append((f"synthetic{i}", sig.astype(np.float32), lang))
    return clips


def chunk_samples(asr, att: list[int]) -> int:
    """Samples per encoder step at `att` (first chunk aside): one request then advances the encoder once."""
    enc = asr.model.encoder
    enc.set_default_att_context_size(att)
    shift = enc.streaming_cfg.shift_size
    frames = int(shift[1] if isinstance(shift, (list, tuple)) else shift)
    return frames * int(asr.model.preprocessor.featurizer.hop_length)


def in_process(asr, clips, step: int, att: list[int], repeats: int) -> tuple[list[float], dict[str, str]]:
    """Per-chunk stream_step seconds over every clip (`repeats` passes), and each clip's final text."""
    lat, finals = [], {}
    for _ in range(repeats):
        for name, audio, lang in clips:
            state = asr.new_stream(lang, att)
            pieces = split(audio, step)
            for i, p in enumerate(pieces):
                t0 = time.perf_counter()
                text = asr.stream_step(state, p, last=i == len(pieces) - 1)
                lat.append(time.perf_counter() - t0)
            finals[name] = text
    return lat, finals


def in_process_batched(asr, clips, step: int, att: list[int], n: int) -> tuple[float, float]:
    """The server's own ceiling: `n` streams advanced together by `AsrModel.stream_step_batch` in this process
    (no Triton) -> (chunks/s, seconds per batched step). Streams are cut to the shortest clip so all n stay live.
    """
    streams = [clips[k % len(clips)] for k in range(n)]
    pieces = [split(audio, step) for _, audio, _ in streams]
    steps = min(len(p) for p in pieces)
    states = [asr.new_stream(lang, att) for _, _, lang in streams]
    t0 = time.perf_counter()
    for k in range(steps):
        asr.stream_step_batch(states, [p[k] for p in pieces], [k == steps - 1] * n)
    wall = time.perf_counter() - t0
    return n * steps / wall, wall / steps


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help=".nemo to serve (default: cached base model, else the tiny fixture)")
    p.add_argument("--d-model", type=int, help="instead of --model: a random model this wide (e.g. 256)")
    p.add_argument("--layers", type=int, default=8, help="with --d-model: encoder layers")
    p.add_argument("--att-context-size", default="[56,1]", help="deployment lookahead (default %(default)s)")
    p.add_argument("--chunks", type=int, default=10_000, help="soak requests (default %(default)s)")
    p.add_argument("--level-chunks", type=int, default=1600, help="chunks measured per concurrency level")
    p.add_argument("--streams", default="1,4,16", help="concurrency levels (default %(default)s)")
    p.add_argument("--soak-streams", type=int, default=4)
    p.add_argument("--malformed", type=float, default=0.05, help="fraction of malformed soak requests")
    p.add_argument("--clip-s", type=float, default=6.0, help="clips are cropped to this length")
    p.add_argument("--threads", type=int, default=1, help="torch threads, server and in-process alike")
    p.add_argument(
        "--queue-delay-us",
        type=int,
        default=ServingConfig.stream_queue_delay_us,
        help="sequence batcher max_queue_delay_microseconds of the exported model",
    )
    p.add_argument(
        "--client-procs",
        type=int,
        default=1,
        help="load-generator processes (streams are spread over them; >1 pays off only with spare cores)",
    )
    p.add_argument(
        "--rounds", type=int, default=3, help="paired rounds (in-process vs Triton, Triton vs gateway)"
    )
    p.add_argument(
        "--via",
        choices=("triton", "gateway"),
        default="triton",
        help="gateway: also measure the front door's added p50 per chunk vs direct Triton (1, 16 streams)",
    )
    p.add_argument("--gateway-ports", default="18280,18281", help="gateway gRPC,HTTP ports for --via gateway")
    p.add_argument("--pair-chunks", type=int, default=320, help="chunks per 16-stream pass of a paired round")
    p.add_argument("--no-soak", action="store_true", help="skip the soak (full-size runs)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="short run (~10 min at full size): 3 paired rounds of small passes, 200 chunks per level, "
        "1,000-chunk soak",
    )
    p.add_argument("--out", default=str(ROOT / "outputs" / "bench"))
    a = p.parse_args(argv)
    if a.quick:
        a.chunks, a.level_chunks, a.pair_chunks = (
            min(a.chunks, 1000),
            min(a.level_chunks, 200),
            min(a.pair_chunks, 128),
        )
        a.rounds = max(3, min(a.rounds, 3))
    return a


@dataclass
class Bench:
    """What the measured phases share: the arguments, the model in-process, the clips, the served model."""

    a: argparse.Namespace
    asr: object
    clips: list
    step: int
    att: list[int]
    expected: dict[str, str]  # each clip's in-process final text
    server: TritonServer
    work: Path
    levels: list[int]
    res: dict = field(default_factory=dict)
    lat_plot: dict[str, list[float]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.grpc_url


def main(argv: list[str] | None = None) -> int:
    a = _parse(argv)
    os.environ["ASR_THREADS"] = str(a.threads)  # AsrModel.load here and server_env() for the stubs
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(nemo_logging.ERROR)  # restore_from prints the whole config otherwise
    t_start = time.time()
    b = _setup(a, argv)
    ok = False
    try:
        phase_overhead(b)
        phase_one_stream(b)
        phase_batched_ceiling(b)
        phase_levels(b)
        phase_paired(b)
        phase_noisy_neighbour(b)
        if a.via == "gateway":
            phase_gateway(b)
        phase_soak(b)
        ok = True
    finally:
        b.server.stop()
        if ok:
            shutil.rmtree(b.work, ignore_errors=True)
        else:
            print(f"kept {b.work} for inspection (server log {b.server.log_file})", file=sys.stderr)
    b.res["targets"] = targets(b.res, b.levels)
    b.res["total_s"] = time.time() - t_start
    report(b)
    return 0


def _setup(a: argparse.Namespace, argv: list[str] | None) -> Bench:
    """The model in-process (its final texts are the reference), exported and served by tritonserver."""
    from components.common.asr_infer import AsrModel

    att = parse_att_context_size(a.att_context_size)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    nemo, source = pick_model(work, a.model, a.d_model, a.layers)
    asr = AsrModel.load(str(nemo))
    clips = load_clips(set(asr.prompt_dictionary), 6 if a.quick else 12, a.clip_s)
    step = chunk_samples(asr, att)
    chunk_ms = 1000.0 * step / 16000
    print(
        f"model {nemo} ({source}); att_context_size {att}; {chunk_ms:.0f} ms chunks; {len(clips)} clips "
        f"({sum(c[1].size for c in clips) / 16000:.0f} s audio); torch threads {a.threads}",
        flush=True,
    )

    in_process(asr, clips[:2], step, att, 1)  # warm-up
    _, expected = in_process(asr, clips, step, att, 1)

    repo = work / "triton_repo"
    export_model(
        nemo,
        repo,
        None,
        {"name": "bench-serve"},
        att,
        serving=ServingConfig(stream_queue_delay_us=a.queue_delay_us),
    )
    server = TritonServer(repo, models=[MODEL], state_dir=work / "state", startup_timeout_s=600)
    server.start()
    print(f"tritonserver ready in {server.start_seconds:.0f}s (log {server.log_file})", flush=True)
    res = {
        "command": " ".join(
            [Path(sys.executable).name, "tests/bench/bench_serve.py", *(argv or sys.argv[1:])]
        ),
        "started": time.strftime("%F %T"),
        "model": str(nemo),
        "model_source": source,
        "att_context_size": att,
        "chunk_ms": chunk_ms,
        "cpu_count": os.cpu_count(),
        "asr_threads": a.threads,
        "stream_queue_delay_us": a.queue_delay_us,
        "client_procs": a.client_procs,
        "load_avg_at_start": os.getloadavg(),
        "server_start_s": server.start_seconds,
        "levels": {},
    }
    levels = [int(s) for s in a.streams.split(",")]
    return Bench(a, asr, clips, step, att, expected, server, work, levels, res)


def phase_overhead(b: Bench) -> None:
    """Warm-up, then empty-chunk round trips: the serving path's own cost."""
    drive(b.url, b.clips[:2], b.step, b.expected, 1, 40)  # warm-up
    m0 = metrics(b.server)
    rt = round_trip(b.url, b.clips[0][2], 200)
    e = b.res["empty_chunk_round_trip"] = {**summary(rt), **metrics_delta(m0, metrics(b.server))}
    print(
        f"serving overhead (empty chunks, 1 stream): p50 {e['p50_ms']:.2f} ms, of which in the server "
        f"{e['server_request_ms']:.2f} ms (execute {e['server_compute_ms']:.2f})",
        flush=True,
    )


def phase_one_stream(b: Bench) -> None:
    """1 stream vs in-process: alternating passes over the same clips and chunks, so that the load of the
    (shared) machine drifts equally over both; P1 per round (issue 14 #6) = Triton p50 / in-process p50."""
    a = b.a
    base_lat, tri_lat, tri_wall, mismatches = [], [], 0.0, 0
    m0 = metrics(b.server)
    p1 = []
    for _ in range(a.rounds):
        lat, _ = in_process(b.asr, b.clips, b.step, b.att, 1)
        base_lat += lat
        p1_in = pct(lat, 50)
        lat, finals, wall = triton_sequential(b.url, b.clips, b.step)
        p1.append(pct(lat, 50) / p1_in)
        tri_lat += lat
        tri_wall += wall
        mismatches += sum(finals[n] != b.expected[n] for n in finals)
    base = b.res["in_process"] = summary(base_lat)
    b.res["p1_rounds"] = p1
    b.lat_plot["in-process"] = base_lat
    b.lat_plot["Triton, 1 stream"] = tri_lat
    s = summary(tri_lat)
    s.update(metrics_delta(m0, metrics(b.server)))
    s.update(
        streams=1,
        chunks_per_s=len(tri_lat) / tri_wall,
        wall_s=tri_wall,
        sequences=a.rounds * len(b.clips),
        text_mismatches=mismatches,
        errors=0,
    )
    b.res["levels"]["1 stream"] = s
    print(
        f"in-process stream_step: p50 {base['p50_ms']:.2f} ms  p95 {base['p95_ms']:.2f}  "
        f"p99 {base['p99_ms']:.2f}  ({base['n']} chunks, {a.rounds} passes alternating with Triton's)\n"
        f" 1 stream : p50 {s['p50_ms']:.1f} ms  p95 {s['p95_ms']:.1f}  p99 {s['p99_ms']:.1f}  "
        f"{s['chunks_per_s']:.1f} chunks/s; in server {s['server_request_ms']:.1f} ms (execute "
        f"{s['server_compute_ms']:.1f}); text mismatches {mismatches}/{s['sequences']}",
        flush=True,
    )


def phase_batched_ceiling(b: Bench) -> None:
    """In-process stream_step_batch, 1 and N streams: the server's ceiling without Triton."""
    if not hasattr(b.asr, "stream_step_batch"):
        return
    big = max(b.levels)
    one_cps = in_process_batched(b.asr, b.clips, b.step, b.att, 1)[0]
    many_cps = in_process_batched(b.asr, b.clips, b.step, b.att, big)[0]
    b.res["in_process_batched"] = {
        "1_stream_chunks_per_s": one_cps,
        f"{big}_streams_chunks_per_s": many_cps,
        "ratio": many_cps / one_cps,
    }
    print(
        f"in-process stream_step_batch (no Triton, the server's ceiling): 1 stream {one_cps:.0f} chunks/s, "
        f"{big} streams {many_cps:.0f} chunks/s ({many_cps / one_cps:.2f}x)",
        flush=True,
    )


def phase_levels(b: Bench) -> None:
    """Closed-loop streams at each concurrency level above 1: latency, throughput, batching, correctness."""
    for n in [n for n in b.levels if n != 1]:
        m0 = metrics(b.server)
        tally, wall, steady = drive(
            b.url, b.clips, b.step, b.expected, n, b.a.level_chunks, seed=n, procs=b.a.client_procs
        )
        s = summary(tally.latencies)
        s.update(metrics_delta(m0, metrics(b.server)))
        s.update(
            streams=n,
            chunks_per_s=steady,
            chunks_per_s_overall=tally.chunks / wall,
            wall_s=wall,
            sequences=tally.sequences,
            text_mismatches=len(tally.text_mismatches),
            errors=len(tally.valid_errors),
        )
        label = f"{n} stream{'s' if n > 1 else ''}"
        b.res["levels"][label] = s
        b.lat_plot[f"Triton, {label}"] = tally.latencies
        print(
            f"{n:>2} streams: p50 {s['p50_ms']:.1f} ms  p95 {s['p95_ms']:.1f}  p99 {s['p99_ms']:.1f}  "
            f"{s['chunks_per_s']:.1f} chunks/s, mean batch {s['mean_batch']:.1f}; in server "
            f"{s['server_request_ms']:.1f} ms (queue {s['server_queue_ms']:.1f}, execute "
            f"{s['server_compute_ms']:.1f})  "
            f"({tally.chunks} chunks, {tally.sequences} whole "
            f"sequences, {len(tally.text_mismatches)} text mismatches, {len(tally.valid_errors)} errors)",
            flush=True,
        )
        for m in (tally.text_mismatches + tally.valid_errors)[:3]:
            print(f"    {m}")


def phase_paired(b: Bench) -> None:
    """P1 and P2' (issue 14 #6), as alternating paired rounds: each round runs the in-process side and the
    Triton side back to back, so the box's load drift hits both sides of each ratio alike."""
    big, p1 = max(b.levels), b.res.pop("p1_rounds")
    p2 = []
    for r in range(b.a.rounds if hasattr(b.asr, "stream_step_batch") else 0):
        cps_in = in_process_batched(b.asr, b.clips, b.step, b.att, big)[0]
        _, cps_tr = triton_level(b.url, b.clips, b.step, b.expected, big, b.a.pair_chunks, 100 + r)
        p2.append(cps_tr / cps_in)
        print(f"paired round {r + 1}/{b.a.rounds}: P1 {p1[r]:.3f}  P2' {p2[-1]:.3f}", flush=True)
    b.res["paired"] = {"P1": paired(p1), "P2_prime": paired(p2)}


def phase_noisy_neighbour(b: Bench) -> None:
    """N-1 normal streams alone and beside one stream of the largest chunk the model accepts (issue 15 #13)."""
    big = max(b.levels)
    noisy = noisy_neighbour(
        b.url, b.clips, b.step, ServingConfig.max_chunk_s, big - 1, max(8, b.a.level_chunks // big)
    )
    b.res["noisy_neighbour"] = noisy
    print(
        f"noisy neighbour: {noisy['normal_streams']} normal streams p99 {noisy['quiet']['p99_ms']:.1f} ms alone, "
        f"{noisy['with_neighbour']['p99_ms']:.1f} ms beside one stream of {noisy['big_chunk_s']:g} s chunks "
        f"({noisy['p99_growth']:.2f}x)",
        flush=True,
    )


def phase_gateway(b: Bench) -> None:
    """The same closed-loop streams through the gateway vs straight to Triton, paired rounds: added p50."""
    from serving.gateway.process import GatewayProcess

    a, big = b.a, max(b.levels)
    gport, hport = (int(x) for x in a.gateway_ports.split(","))
    gw = GatewayProcess(
        b.url.removeprefix("grpc://"),
        b.work / "gateway.log",
        gport,
        hport,
        "bench-key",
        ["--max-streams-per-key", "64", "--offline-model", ""],
    ).start()
    try:
        added: dict[str, list[float]] = {}
        for n in (1, big):
            per = max(8, a.pair_chunks // n)
            for r in range(a.rounds):
                lat_tr, _ = triton_level(b.url, b.clips, b.step, b.expected, n, per * n, 200 + r)
                lat_gw, _ = gateway_level(f"127.0.0.1:{gport}", "bench-key", b.clips, b.step, n, per)
                added.setdefault(str(n), []).append(pct(lat_gw, 50) - pct(lat_tr, 50))
            print(
                f"gateway, {n} stream(s): added p50 per chunk {np.median(added[str(n)]):+.2f} ms "
                f"(rounds {', '.join(f'{x:+.2f}' for x in added[str(n)])})",
                flush=True,
            )
        b.res["gateway_added_p50_ms"] = {n: paired(v) for n, v in added.items()}
    finally:
        gw.stop()


def phase_soak(b: Bench) -> None:
    """N chunks over a few streams, some malformed: server RSS before/after, crashes, refusals, correctness."""
    a, server = b.a, b.server
    chunks = 0 if a.no_soak else a.chunks
    before_health = server_health(server)
    before = rss_kb(server.process.pid)
    pid = server.process.pid
    stubs_before = set(before) - {pid}
    tally, wall, _ = drive(b.url, b.clips, b.step, b.expected, a.soak_streams, chunks, a.malformed, seed=99)
    time.sleep(1.0)
    health = server_health(server)
    after = rss_kb(pid) if health["alive"] else {}
    crashes = (
        int(not health["alive"])
        + int(set(after) - {pid} != stubs_before)  # a python-backend stub died and was restarted
        + int(health["models"].get(MODEL) != "READY")
    )
    rb, ra = sum(before.values()), sum(after.values())
    sk = b.res["soak"] = {
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
    for m in (tally.text_mismatches + tally.valid_errors)[:3]:
        print(f"    {m}")


def report(b: Bench) -> None:
    """serve.json, serve.html (latency plot) and the targets table on stdout."""
    out = Path(b.a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve.json").write_text(json.dumps(b.res, indent=2) + "\n", encoding="utf-8")
    write_html(out / "serve.html", b.res, b.lat_plot)
    print("\n== bench-serve ==")
    for t in b.res["targets"]:
        print(
            f"{t['name']:<42} {t['value']:8.3f}   target {t['target']:<7} {'met' if t['met'] else 'NOT MET'}"
        )
    print(f"total {b.res['total_s']:.0f}s; wrote {out / 'serve.json'} and {out / 'serve.html'}")


if __name__ == "__main__":
    sys.exit(main())
