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
7. `--via gateway`: the gateway's added p50 per chunk against direct Triton (target <= 1.5 ms or <= 5 % of the
   in-process step, whichever is larger). 1 stream: `--gateway-pairs` (24) paired sessions, each one clip straight
   to Triton and the same clip through the gateway (Riva StreamingRecognize, one interim result per chunk), back
   to back in ABBA order; N streams: paired rounds (`--rounds`) of N concurrent closed-loop clients on each side.
   Median and spread of the per-pair differences.

`--model X.nemo` serves any checkpoint (the lead's full-size run); `--quick --no-soak --streams 1,16` keeps a
full-size run short (3 pairs of short passes over 6 clips of 3 s).

Every completed sequence's final text is compared with the in-process text of the same clip (the load must not
cost correctness). Figures are printed and written to outputs/bench/serve.json and serve.html (latency plot).

Model: the cached demo base model (.cache/base_model/*/base.nemo) if present, else a tiny fixture model of the
same class (random weights, like the tests build). Run `--quick` for a smoke run (~3 min).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from components.export_triton.core import ServingConfig, export_model, parse_att_context_size  # noqa: E402
from serving.server import TritonServer  # noqa: E402
from tests.bench.serve.model import chunk_samples, in_process, load_clips, pick_model  # noqa: E402
from tests.bench.serve.phases import Run, measure  # noqa: E402
from tests.bench.serve.report import targets, write_reports  # noqa: E402
from tests.bench.serve.triton import MODEL  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    p.add_argument(
        "--gateway-ports", default="0,0", help="gateway gRPC,HTTP ports for --via gateway (0: a free port)"
    )
    p.add_argument("--pair-chunks", type=int, default=320, help="chunks per 16-stream pass of a paired round")
    p.add_argument(
        "--window",
        type=int,
        default=2,
        help="P2' Triton pass: chunks each stream keeps in flight (a real-time client sends audio as it "
        "arrives, without waiting for the transcript; 1 = closed loop, one chunk at a time)",
    )
    p.add_argument(
        "--gateway-pairs",
        type=int,
        default=24,
        help="--via gateway, 1 stream: paired sessions (one clip direct, the same clip via the gateway)",
    )
    p.add_argument(
        "--no-soak", action="store_true", help="shrink the soak to one clip per soak stream (full-size runs)"
    )
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
        a.rounds = max(3, a.rounds)  # 3 unless --rounds asks for more
    return a


def load_model(a: argparse.Namespace, work: Path):
    """The model picked by the flags, loaded in this process; its clips and chunk size at the deployment
    lookahead; each clip's in-process final text -> (nemo, source, asr, att, clips, step, expected)."""
    os.environ["ASR_THREADS"] = str(a.threads)  # AsrModel.load here and server_env() for the stubs
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(nemo_logging.ERROR)  # restore_from prints the whole config otherwise

    from components.common.asr_infer import AsrModel

    att = parse_att_context_size(a.att_context_size)
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
    return nemo, source, asr, att, clips, step, expected


def start_server(a: argparse.Namespace, nemo: Path, att: list[int], work: Path) -> TritonServer:
    """`nemo` exported to a Triton repository under `work` at `att`, and a tritonserver serving it."""
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
    return server


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    levels = [int(s) for s in a.streams.split(",")]
    t_start = time.time()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    nemo, source, asr, att, clips, step, expected = load_model(a, work)
    server = start_server(a, nemo, att, work)
    res: dict = {
        "command": " ".join(
            [Path(sys.executable).name, "tests/bench/bench_serve.py", *(argv or sys.argv[1:])]
        ),
        "started": time.strftime("%F %T"),
        "model": str(nemo),
        "model_source": source,
        "att_context_size": att,
        "chunk_ms": 1000.0 * step / 16000,
        "cpu_count": os.cpu_count(),
        "asr_threads": a.threads,
        "stream_queue_delay_us": a.queue_delay_us,
        "client_procs": a.client_procs,
        "load_avg_at_start": os.getloadavg(),
        "server_start_s": server.start_seconds,
        "levels": {},
    }
    run = Run(a, asr, clips, step, att, expected, levels, server, work, res)
    ok = False
    try:
        measure(run)
        ok = True
    finally:
        server.stop()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work} for inspection (server log {server.log_file})", file=sys.stderr)
    res["targets"] = targets(res, max(levels))
    res["total_s"] = time.time() - t_start
    write_reports(Path(a.out), res, run.lat_plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
