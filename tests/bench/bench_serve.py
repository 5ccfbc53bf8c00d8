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
import base64
import io
import json
import os
import queue
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from components.export_triton.core import ServingConfig, export_model, parse_att_context_size  # noqa: E402
from serving.server import TritonServer, is_ready, repository_index  # noqa: E402

EVAL_AUDIO = ROOT.parent / "shared" / "eval-audio"
MODEL = "asr_streaming"
MALFORMED_KINDS = ("dtype", "shape", "nan", "lang", "unknown_seq", "after_end")


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


def split(audio: np.ndarray, step: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(audio[i : i + step]) for i in range(0, audio.size, step)]


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


# ------------------------------------------------------------------------------------------- server process
def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (tritonserver + the python-backend stubs it spawned)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_kb(pid: int) -> dict[int, int]:
    """{pid: VmRSS kB} for the server and its descendants."""
    out = {}
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[p] = int(line.split()[1])
        except OSError:
            pass
    return out


_METRICS = (
    "nv_inference_count",  # requests
    "nv_inference_exec_count",  # model executions (batches)
    "nv_inference_request_duration_us",  # in the server, per request: queue + compute
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",  # execute() of the batch the request was in
)


def metrics(server: TritonServer) -> dict[str, float]:
    """Cumulative asr_streaming counters from Triton's Prometheus endpoint."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    got = dict.fromkeys(_METRICS, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        if name in got and f'model="{MODEL}"' in line:
            got[name] += float(line.rsplit(" ", 1)[1])
    return got


def metrics_delta(before: dict, after: dict) -> dict:
    """Mean batch size and the server-side split of one request's time (ms) between two snapshots."""
    d = {k: after[k] - before[k] for k in before}
    n, e = d["nv_inference_count"], d["nv_inference_exec_count"]
    return {
        "mean_batch": n / e if e else float("nan"),
        "server_request_ms": d["nv_inference_request_duration_us"] / n / 1000 if n else float("nan"),
        "server_queue_ms": d["nv_inference_queue_duration_us"] / n / 1000 if n else float("nan"),
        "server_compute_ms": d["nv_inference_compute_infer_duration_us"] / n / 1000 if n else float("nan"),
    }


def round_trip(url: str, lang: str, n: int) -> list[float]:
    """Seconds per lock-step request carrying an empty chunk: the serving path's own cost (gRPC, Triton, the
    python backend's IPC and model.py) with almost no model work."""
    import tritonclient.grpc as tc

    answers: queue.Queue = queue.Queue()
    client = tc.InferenceServerClient(url.removeprefix("grpc://"))
    client.start_stream(callback=lambda result, error: answers.put((error, time.perf_counter())))
    seq, out = random.randrange(1, 2**62), []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            inputs = _inputs(tc, np.zeros(0, np.float32), lang if i == 0 else None)
            client.async_stream_infer(
                MODEL, inputs, sequence_id=seq, sequence_start=i == 0, sequence_end=i == n - 1
            )
            error, t1 = answers.get(timeout=60)
            if error is not None:
                raise RuntimeError(f"empty chunk refused: {error}")
            out.append(t1 - t0)
    finally:
        client.stop_stream()
        client.close()
    return out


def triton_sequential(url: str, clips, step: int) -> tuple[list[float], dict[str, str], float]:
    """One client stream, clips one after the other, lock-step: the served twin of `in_process`
    -> (per-chunk seconds, final text per clip, wall seconds)."""
    import tritonclient.grpc as tc

    answers: queue.Queue = queue.Queue()
    client = tc.InferenceServerClient(url.removeprefix("grpc://"))
    client.start_stream(callback=lambda result, error: answers.put((result, error, time.perf_counter())))
    lat, finals = [], {}
    t_start = time.perf_counter()
    try:
        for name, audio, lang in clips:
            seq = random.randrange(1, 2**62)
            pieces = split(audio, step)
            for i, piece in enumerate(pieces):
                t0 = time.perf_counter()
                client.async_stream_infer(
                    MODEL,
                    _inputs(tc, piece, lang if i == 0 else None),
                    sequence_id=seq,
                    sequence_start=i == 0,
                    sequence_end=i == len(pieces) - 1,
                )
                result, error, t1 = answers.get(timeout=120)
                if error is not None:
                    raise RuntimeError(f"{name} chunk {i}: {error}")
                lat.append(t1 - t0)
            finals[name] = result.as_numpy("TEXT").reshape(-1)[0].decode()
    finally:
        client.stop_stream()
        client.close()
    return lat, finals, time.perf_counter() - t_start


def server_health(server: TritonServer) -> dict:
    alive = server.process is not None and server.process.poll() is None
    ready = alive and is_ready(server.http_url)
    states = {}
    if ready:
        states = {r["name"]: r.get("state") for r in repository_index(server.http_url) if r.get("name")}
    return {"alive": alive, "ready": ready, "models": states}


# ------------------------------------------------------------------------------------------- load generator
def _inputs(tc, chunk: np.ndarray, lang: str | None, dtype: str = "FP32"):
    c = chunk if chunk.ndim == 2 else chunk[None, :]
    inputs = [tc.InferInput("AUDIO_CHUNK", list(c.shape), dtype)]
    inputs[0].set_data_from_numpy(c)
    if lang is not None:
        inputs.append(tc.InferInput("LANG", [1, 1], "BYTES"))
        inputs[1].set_data_from_numpy(np.array([[lang.encode()]], dtype=np.object_))
    return inputs


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, valid chunks only
    answered_at: list[float] = field(default_factory=list)  # time.time() of each valid answer
    chunks: int = 0  # valid chunks answered
    sequences: int = 0  # sequences that ran a whole clip
    text_mismatches: list[str] = field(default_factory=list)
    valid_errors: list[str] = field(default_factory=list)  # a valid request that got an error
    malformed: dict[str, int] = field(default_factory=dict)  # kind -> refused as expected
    malformed_accepted: list[str] = field(default_factory=list)  # a malformed request that got a result

    def merge(self, o: Tally) -> None:
        self.latencies += o.latencies
        self.answered_at += o.answered_at
        self.chunks += o.chunks
        self.sequences += o.sequences
        self.text_mismatches += o.text_mismatches
        self.valid_errors += o.valid_errors
        self.malformed_accepted += o.malformed_accepted
        for k, v in o.malformed.items():
            self.malformed[k] = self.malformed.get(k, 0) + v


class Worker(threading.Thread):
    """One client stream: sends clips chunk by chunk. `window` 1: each chunk after the previous answer
    (lock-step). `window` w > 1: up to w chunks in flight, as a real-time client sends audio as it arrives
    without waiting for the transcript; the sequence batcher still runs one chunk per stream per step, in order."""

    def __init__(
        self, url, clips, step, expected, budget, seed, malformed_frac=0.0, timeout_s=120.0, window=1
    ):
        super().__init__(daemon=True)
        if window > 1 and malformed_frac:
            raise ValueError("window > 1 is for valid load only (malformed requests are sent lock-step)")
        self.window = window
        self.url, self.clips, self.step, self.expected = url, clips, step, expected
        self.budget, self.rng, self.malformed_frac, self.timeout_s = (
            budget,
            random.Random(seed),
            malformed_frac,
            timeout_s,
        )
        # every n-th request is malformed (exactly the asked fraction; the kind is drawn at random)
        self.malformed_every = round(1 / malformed_frac) if malformed_frac > 0 else 0
        self.tally = Tally()
        self.error: BaseException | None = None
        self._answers: queue.Queue = queue.Queue()

    def _send(self, inputs, seq, start=False, end=False):
        """-> (result or None, error message or None, seconds)."""
        t0 = self._post(inputs, seq, start, end)
        return self._answer(t0)

    def _post(self, inputs, seq, start=False, end=False) -> float:
        t0 = time.perf_counter()
        self.client.async_stream_infer(MODEL, inputs, sequence_id=seq, sequence_start=start, sequence_end=end)
        return t0

    def _answer(self, t0: float):
        """The next answer on this stream (answers come back in the order sent) -> (result, error, seconds)."""
        try:
            result, error, t1 = self._answers.get(timeout=self.timeout_s)
        except queue.Empty:
            raise TimeoutError(f"no answer within {self.timeout_s:.0f}s") from None
        msg = None if error is None else (error.message() if hasattr(error, "message") else str(error))
        return result, msg, t1 - t0

    def _tally(self, name: str, i: int, answer) -> str | None:
        """Count one answer; -> its transcript, None on an error."""
        r, err, dt = answer
        if err is not None:
            self.tally.valid_errors.append(f"{name} chunk {i}: {err}")
            return None
        self.tally.latencies.append(dt)
        self.tally.chunks += 1
        self.tally.answered_at.append(time.time())
        return r.as_numpy("TEXT").reshape(-1)[0].decode()

    def _malformed(self, live_seq: int | None, ended_seq: int | None, lang: str) -> None:
        tc = self.tc
        kind = self.rng.choice(MALFORMED_KINDS)
        chunk = np.zeros(self.step, np.float32)
        if kind == "dtype" and live_seq:  # Triton's own input check, on a live stream
            r, err, _ = self._send(_inputs(tc, chunk.astype(np.float64), None, "FP64"), live_seq)
        elif kind == "shape" and live_seq:  # two rows in a sequence request
            r, err, _ = self._send(_inputs(tc, np.zeros((2, self.step), np.float32), None), live_seq)
        elif kind == "nan" and live_seq:  # refused before the stream's state is touched
            bad = chunk.copy()
            bad[7] = np.nan
            r, err, _ = self._send(_inputs(tc, bad, None), live_seq)
        elif kind == "after_end" and ended_seq:
            r, err, _ = self._send(_inputs(tc, chunk, None), ended_seq)
        elif kind == "unknown_seq":
            r, err, _ = self._send(_inputs(tc, chunk, None), self.rng.randrange(1, 2**62))
        else:  # "lang" (and the kinds above when there is no live/ended stream yet); START+END frees the slot
            kind = "lang"
            r, err, _ = self._send(_inputs(tc, chunk, "xx-XX"), self.rng.randrange(1, 2**62), True, True)
        if err is None:
            self.tally.malformed_accepted.append(kind)
        else:
            self.tally.malformed[kind] = self.tally.malformed.get(kind, 0) + 1

    def run(self) -> None:
        import tritonclient.grpc as tc

        self.tc = tc
        self.client = tc.InferenceServerClient(self.url.removeprefix("grpc://"))
        self.client.start_stream(
            callback=lambda result, error: self._answers.put((result, error, time.perf_counter()))
        )
        sent, ended = 0, None
        try:
            while sent < self.budget:
                name, audio, lang = self.clips[self.rng.randrange(len(self.clips))]
                seq = self.rng.randrange(1, 2**62)
                pieces = split(audio, self.step)
                text, whole, in_flight = "", True, []
                for i, piece in enumerate(pieces):
                    if self.malformed_every and (sent + 1) % self.malformed_every == 0:
                        self._malformed(seq if i else None, ended, lang)
                        sent += 1
                    last = i == len(pieces) - 1 or sent + 1 >= self.budget
                    in_flight.append(
                        (i, self._post(_inputs(tc, piece, lang if i == 0 else None), seq, i == 0, last))
                    )
                    sent += 1
                    while in_flight and (len(in_flight) >= self.window or last):
                        k, t0 = in_flight.pop(0)
                        got = self._tally(name, k, self._answer(t0))
                        text = text if got is None else got
                    if last:
                        whole = i == len(pieces) - 1
                        break
                ended = seq
                if whole:
                    self.tally.sequences += 1
                    if text != self.expected[name]:
                        self.tally.text_mismatches.append(f"{name}: {text!r} != {self.expected[name]!r}")
        except BaseException as e:  # reported by the caller
            self.error = e
        finally:
            self.client.stop_stream()
            self.client.close()


def _run_workers(url, clips, step, expected, jobs, malformed_frac, start_at, window=1) -> list[tuple]:
    """In one client process: one thread per (budget, seed) job, all starting at wall-clock `start_at`;
    -> [(tally, error text or None)]."""
    workers = [
        Worker(url, clips, step, expected, per, seed, malformed_frac, window=window) for per, seed in jobs
    ]
    time.sleep(max(0.0, start_at - time.time()))
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return [(w.tally, None if w.error is None else f"{type(w.error).__name__}: {w.error}") for w in workers]


def drive(
    url, clips, step, expected, streams, total, malformed_frac=0.0, seed=0, procs=1, window=1
) -> tuple[Tally, float, float]:
    """`streams` concurrent client streams sharing `total` requests (each at least one whole clip), spread over
    `procs` client processes (Python threads of one process share one GIL: with many streams the load
    generator, not the server, would set the pace); -> (merged tally, wall seconds, steady chunks/s).

    Steady chunks/s counts only the window in which every stream was running (from the last stream's first
    answer to the first stream's last answer): ramp-up and the stragglers' tail are not "n concurrent streams".
    """
    per = max(-(-total // streams), max(-(-c[1].size // step) for c in clips))
    jobs = [(per, seed * 1000 + k) for k in range(streams)]
    procs = max(1, min(procs, streams))
    if procs == 1:
        results = _run_workers(url, clips, step, expected, jobs, malformed_frac, 0.0, window)
    else:
        import multiprocessing

        start_at = time.time() + 8.0  # spawned processes import numpy + tritonclient first
        with multiprocessing.get_context("spawn").Pool(procs) as pool:
            parts = pool.starmap(
                _run_workers,
                [
                    (url, clips, step, expected, jobs[k::procs], malformed_frac, start_at, window)
                    for k in range(procs)
                ],
            )
        results = [r for part in parts for r in part]
    tally = Tally()
    for t, err in results:
        if err is not None:
            raise RuntimeError(f"load worker failed: {err}")
        tally.merge(t)
    times = [r[0].answered_at for r in results if r[0].answered_at]
    wall = max(t[-1] for t in times) - min(t[0] for t in times)
    lo, hi = max(t[0] for t in times), min(t[-1] for t in times)
    inside = sum(lo < x <= hi for t in times for x in t)
    steady = inside / (hi - lo) if hi > lo and inside else tally.chunks / wall
    return tally, wall, steady


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q)) if values else float("nan")


def summary(lat: list[float]) -> dict:
    return {"n": len(lat), "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99)}


# ------------------------------------------------------------------------------------------- paired ratios
def paired(values: list[float]) -> dict:
    """Median and spread of per-round ratios (each round = one pass of each side, run back to back)."""
    v = sorted(values)
    return {"rounds": v, "median": float(np.median(v)), "min": v[0], "max": v[-1]} if v else {}


def triton_level(
    url, clips, step, expected, n: int, chunks: int, seed: int, window: int = 1
) -> tuple[list[float], float]:
    """(per-chunk seconds, chunks/s) of `n` concurrent streams straight to Triton, each keeping up to
    `window` chunks in flight (1: closed loop)."""
    if n == 1:
        lat, _, wall = triton_sequential(url, clips, step)
        return lat, len(lat) / wall
    tally, _, steady = drive(url, clips, step, expected, n, chunks, seed=seed, window=window)
    return tally.latencies, steady


def gateway_level(
    addr: str, key: str, clips, step: int, n: int, per_stream: int
) -> tuple[list[float], float]:
    """(per-chunk seconds, chunks/s) of `n` concurrent Riva StreamingRecognize clients through the gateway.
    Closed loop like the Triton clients: a stream sends its next 160 ms chunk when the interim result of the
    previous one arrives (the gateway answers one interim result per chunk). Like `drive`, each client runs
    whole clips, one session per clip (client k starts at clip k), until it has `per_stream` chunks and at
    least one whole clip: the same audio and the same session lengths as the Triton side."""
    import grpc
    from riva.client.proto import riva_asr_pb2 as rasr
    from riva.client.proto import riva_asr_pb2_grpc as rasr_grpc

    channel = grpc.insecure_channel(addr)
    stub = rasr_grpc.RivaSpeechRecognitionStub(channel)
    lats: list[list[float]] = [[] for _ in range(n)]
    stamps: list[list[float]] = [[] for _ in range(n)]

    def session(k: int, audio: np.ndarray, lang: str) -> None:
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
        pieces = [pcm[i : i + 2 * step] for i in range(0, len(pcm), 2 * step)]
        pieces = [p for p in pieces if len(p) == 2 * step]  # a trailing partial piece waits for the final
        got: queue.Queue = queue.Queue()
        cfg = rasr.StreamingRecognitionConfig(
            config=rasr.RecognitionConfig(encoding=1, sample_rate_hertz=16000, language_code=lang),
            interim_results=True,
        )

        def requests():
            yield rasr.StreamingRecognizeRequest(streaming_config=cfg)
            for p in pieces:
                t0 = time.perf_counter()
                yield rasr.StreamingRecognizeRequest(audio_content=p)
                t1 = got.get(timeout=120)
                lats[k].append(t1 - t0)
                stamps[k].append(t1)

        for resp in stub.StreamingRecognize(requests(), metadata=[("authorization", f"Bearer {key}")]):
            if not resp.results[0].is_final:
                got.put(time.perf_counter())

    def one(k: int) -> None:
        i = k
        while True:
            _, audio, lang = clips[i % len(clips)]
            session(k, audio, lang)
            i += n
            if len(lats[k]) >= per_stream:
                return

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    channel.close()
    lo, hi = max(s[0] for s in stamps), min(s[-1] for s in stamps)
    inside = sum(lo < x <= hi for s in stamps for x in s)
    total = sum(len(s) for s in stamps)
    cps = (
        inside / (hi - lo)
        if hi > lo and inside
        else total / (max(s[-1] for s in stamps) - min(s[0] for s in stamps))
    )
    return [x for lat in lats for x in lat], cps


class OneStream:
    """A lone closed-loop client that alternates with another one session (clip) at a time: `direct` = one
    tritonclient gRPC stream to Triton, else one Riva StreamingRecognize session per clip through the gateway.
    Both send the clip's full `step` pieces (a trailing partial one waits for the final) and time every piece
    after the first (the first carries START and LANG): the same requests on both sides."""

    def __init__(self, addr: str, step: int, key: str = "", direct: bool = True):
        import grpc

        self.step, self.key, self.direct = step, key, direct
        self.answers: queue.Queue = queue.Queue()
        if direct:
            import tritonclient.grpc as tc

            self.tc = tc
            self.client = tc.InferenceServerClient(addr.removeprefix("grpc://"))
            self.client.start_stream(
                callback=lambda result, error: self.answers.put((error, time.perf_counter()))
            )
        else:
            from riva.client.proto import riva_asr_pb2 as rasr
            from riva.client.proto import riva_asr_pb2_grpc as rasr_grpc

            self.rasr = rasr
            self.channel = grpc.insecure_channel(addr)
            self.stub = rasr_grpc.RivaSpeechRecognitionStub(self.channel)

    def session(self, audio: np.ndarray, lang: str) -> list[float]:
        pieces = [p for p in split(audio, self.step) if p.size == self.step]
        return self._direct(pieces, lang) if self.direct else self._gateway(pieces, lang)

    def _direct(self, pieces, lang) -> list[float]:
        seq, lat = random.randrange(1, 2**62), []
        for i, piece in enumerate(pieces):
            t0 = time.perf_counter()
            self.client.async_stream_infer(
                MODEL,
                _inputs(self.tc, piece, lang if i == 0 else None),
                sequence_id=seq,
                sequence_start=i == 0,
                sequence_end=i == len(pieces) - 1,
            )
            error, t1 = self.answers.get(timeout=120)
            if error is not None:
                raise RuntimeError(f"chunk {i}: {error}")
            if i:
                lat.append(t1 - t0)
        return lat

    def _gateway(self, pieces, lang) -> list[float]:
        rasr, lat = self.rasr, []
        cfg = rasr.StreamingRecognitionConfig(
            config=rasr.RecognitionConfig(encoding=1, sample_rate_hertz=16000, language_code=lang),
            interim_results=True,
        )
        pcm = [(np.clip(p, -1, 1) * 32767).astype("<i2").tobytes() for p in pieces]

        def requests():
            yield rasr.StreamingRecognizeRequest(streaming_config=cfg)
            for i, p in enumerate(pcm):
                t0 = time.perf_counter()
                yield rasr.StreamingRecognizeRequest(audio_content=p)
                t1 = self.answers.get(timeout=120)
                if i:
                    lat.append(t1 - t0)

        meta = [("authorization", f"Bearer {self.key}")]
        for resp in self.stub.StreamingRecognize(requests(), metadata=meta):
            if not resp.results[0].is_final:
                self.answers.put(time.perf_counter())
        return lat

    def close(self) -> None:
        if self.direct:
            self.client.stop_stream()
            self.client.close()
        else:
            self.channel.close()


def gateway_pairs_one_stream(url: str, gw_addr: str, key: str, clips, step: int, pairs: int) -> list[float]:
    """The gateway's added p50 at 1 stream as `pairs` paired sessions: each pair runs one clip straight to
    Triton and the same clip through the gateway, back to back, in alternating order (ABBA); -> per-pair
    (gateway p50 - Triton p50) in ms. Short pairs: the box's load drifts less within a pair than within a
    multi-second pass, which is what made single passes swing by several ms."""
    direct, gw = OneStream(url, step), OneStream(gw_addr, step, key, direct=False)
    added = []
    try:
        for k in range(pairs):
            _, audio, lang = clips[k % len(clips)]
            order = (direct, gw) if k % 2 == 0 else (gw, direct)
            p50 = {id(side): pct(side.session(audio, lang), 50) for side in order}
            added.append(p50[id(gw)] - p50[id(direct)])
    finally:
        direct.close()
        gw.close()
    return added


def noisy_neighbour(url: str, clips, step: int, big_s: float, n_normal: int, per_stream: int) -> dict:
    """`n_normal` streams send `step` chunks (closed loop) while one more sends `big_s`-second chunks, the
    largest the model accepts (max_chunk_s); -> the normal streams' latencies with and without the neighbour."""
    import tritonclient.grpc as tc

    def run(with_big: bool) -> list[float]:
        stop = threading.Event()
        lats: list[list[float]] = [[] for _ in range(n_normal)]

        def normal(k: int) -> None:
            client = tc.InferenceServerClient(url.removeprefix("grpc://"))
            _, audio, lang = clips[k % len(clips)]
            seq = random.randrange(1, 2**62)
            pieces = split(np.tile(audio, 1 + per_stream * step // audio.size), step)[:per_stream]
            for i, p in enumerate(pieces):
                t0 = time.perf_counter()
                client.infer(
                    MODEL,
                    _inputs(tc, p, lang if i == 0 else None),
                    sequence_id=seq,
                    sequence_start=i == 0,
                    sequence_end=i == len(pieces) - 1,
                )
                lats[k].append(time.perf_counter() - t0)
            client.close()

        def big() -> None:
            client = tc.InferenceServerClient(url.removeprefix("grpc://"))
            _, audio, lang = clips[0]
            n = int(big_s * 16000)
            long = np.tile(audio, 2 + n // audio.size)
            seq, i = random.randrange(1, 2**62), 0
            while not stop.is_set():
                piece = long[(i * n) % (long.size - n) :][:n]
                client.infer(
                    MODEL,
                    _inputs(tc, piece, lang if i == 0 else None),
                    sequence_id=seq,
                    sequence_start=i == 0,
                )
                i += 1
            client.infer(
                MODEL, _inputs(tc, np.zeros(0, np.float32), None), sequence_id=seq, sequence_end=True
            )
            client.close()

        threads = [threading.Thread(target=normal, args=(k,)) for k in range(n_normal)]
        bt = threading.Thread(target=big) if with_big else None
        if bt:
            bt.start()
            time.sleep(0.5)
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        if bt:
            bt.join()
        return [x for lat in lats for x in lat]

    quiet = run(False)
    noisy = run(True)
    q, nz = summary(quiet), summary(noisy)
    return {
        "big_chunk_s": big_s,
        "normal_streams": n_normal,
        "quiet": q,
        "with_neighbour": nz,
        "p99_growth": nz["p99_ms"] / q["p99_ms"],
    }


# ------------------------------------------------------------------------------------------- report
def write_html(path: Path, res: dict, lat: dict[str, list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in lat.items():
        v = np.sort(np.asarray(values) * 1000.0)
        if v.size:
            ax.plot(v, np.arange(1, v.size + 1) / v.size, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("per-chunk latency (ms, log)")
    ax.set_ylabel("fraction of chunks")
    ax.set_title(f"asr_streaming per-chunk latency ({res['chunk_ms']:.0f} ms chunks)")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    png = base64.b64encode(buf.getvalue()).decode()
    rows = "".join(
        f"<tr><td>{k}</td><td>{v['streams']}</td><td>{v['p50_ms']:.1f}</td><td>{v['p95_ms']:.1f}</td>"
        f"<td>{v['p99_ms']:.1f}</td><td>{v['chunks_per_s']:.1f}</td><td>{v['mean_batch']:.1f}</td></tr>"
        for k, v in res["levels"].items()
    )
    checks = "".join(
        f"<tr><td>{c['name']}</td><td>{c['value']:.3g}</td><td>{c['target']}</td>"
        f"<td>{'met' if c['met'] else 'NOT met'}</td></tr>"
        for c in res["targets"]
    )
    html = f"""<!doctype html><meta charset="utf-8"><title>bench-serve</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:2px 8px;text-align:right}}</style>
<h1>Triton streaming benchmark</h1>
<p>{res["model"]} ({res["model_source"]}), att_context_size {res["att_context_size"]}, {res["chunk_ms"]:.0f} ms chunks,
{res["cpu_count"]} CPUs, ASR_THREADS={res["asr_threads"]}, {res["started"]}. Command: <code>{res["command"]}</code></p>
<h2>Targets</h2><table><tr><th>figure</th><th>value</th><th>target</th><th></th></tr>{checks}</table>
<h2>Latency and throughput</h2>
<table><tr><th></th><th>streams</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>chunks/s</th><th>mean batch</th></tr>{rows}</table>
<img src="data:image/png;base64,{png}" alt="latency CDF">
<h2>Soak</h2><pre>{json.dumps(res["soak"], indent=2)}</pre>
"""
    path.write_text(html, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
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
        a.rounds = max(3, a.rounds)  # 3 unless --rounds asks for more
    os.environ["ASR_THREADS"] = str(a.threads)  # AsrModel.load here and server_env() for the stubs
    levels = [int(s) for s in a.streams.split(",")]

    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(nemo_logging.ERROR)  # restore_from prints the whole config otherwise

    from components.common.asr_infer import AsrModel

    att = parse_att_context_size(a.att_context_size)
    t_start = time.time()
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
    res: dict = {
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
    lat_plot: dict[str, list[float]] = {}
    ok = False
    try:
        drive(server.grpc_url, clips[:2], step, expected, 1, 40)  # warm-up
        m0 = metrics(server)
        rt = round_trip(server.grpc_url, clips[0][2], 200)
        res["empty_chunk_round_trip"] = {**summary(rt), **metrics_delta(m0, metrics(server))}
        e = res["empty_chunk_round_trip"]
        print(
            f"serving overhead (empty chunks, 1 stream): p50 {e['p50_ms']:.2f} ms, of which in the server "
            f"{e['server_request_ms']:.2f} ms (execute {e['server_compute_ms']:.2f})",
            flush=True,
        )
        # 1 stream vs in-process: alternating passes over the same clips and chunks, so that the load of the
        # (shared) machine drifts equally over both
        base_lat, tri_lat, tri_wall, mismatches = [], [], 0.0, 0
        m0 = metrics(server)
        p1 = []  # P1 per round (issue 14 #6): this round's Triton p50 / this round's in-process p50
        for _ in range(a.rounds):
            lat, _ = in_process(asr, clips, step, att, 1)
            base_lat += lat
            p1_in = pct(lat, 50)
            lat, finals, wall = triton_sequential(server.grpc_url, clips, step)
            p1.append(pct(lat, 50) / p1_in)
            tri_lat += lat
            tri_wall += wall
            mismatches += sum(finals[n] != expected[n] for n in finals)
        base = res["in_process"] = summary(base_lat)
        lat_plot["in-process"] = base_lat
        lat_plot["Triton, 1 stream"] = tri_lat
        s = summary(tri_lat)
        s.update(metrics_delta(m0, metrics(server)))
        s.update(
            streams=1,
            chunks_per_s=len(tri_lat) / tri_wall,
            wall_s=tri_wall,
            sequences=a.rounds * len(clips),
            text_mismatches=mismatches,
            errors=0,
        )
        res["levels"]["1 stream"] = s
        print(
            f"in-process stream_step: p50 {base['p50_ms']:.2f} ms  p95 {base['p95_ms']:.2f}  "
            f"p99 {base['p99_ms']:.2f}  ({base['n']} chunks, {a.rounds} passes alternating with Triton's)\n"
            f" 1 stream : p50 {s['p50_ms']:.1f} ms  p95 {s['p95_ms']:.1f}  p99 {s['p99_ms']:.1f}  "
            f"{s['chunks_per_s']:.1f} chunks/s; in server {s['server_request_ms']:.1f} ms (execute "
            f"{s['server_compute_ms']:.1f}); text mismatches {mismatches}/{s['sequences']}",
            flush=True,
        )
        if hasattr(asr, "stream_step_batch"):
            one_cps = in_process_batched(asr, clips, step, att, 1)[0]
            many_cps = in_process_batched(asr, clips, step, att, max(levels))[0]
            res["in_process_batched"] = {
                "1_stream_chunks_per_s": one_cps,
                f"{max(levels)}_streams_chunks_per_s": many_cps,
                "ratio": many_cps / one_cps,
            }
            print(
                f"in-process stream_step_batch (no Triton, the server's ceiling): 1 stream {one_cps:.0f} chunks/s, "
                f"{max(levels)} streams {many_cps:.0f} chunks/s ({many_cps / one_cps:.2f}x)",
                flush=True,
            )
        for n in [n for n in levels if n != 1]:
            m0 = metrics(server)
            tally, wall, steady = drive(
                server.grpc_url, clips, step, expected, n, a.level_chunks, seed=n, procs=a.client_procs
            )
            s = summary(tally.latencies)
            s.update(metrics_delta(m0, metrics(server)))
            s.update(
                streams=n,
                chunks_per_s=steady,
                chunks_per_s_overall=tally.chunks / wall,
                wall_s=wall,
                sequences=tally.sequences,
                text_mismatches=len(tally.text_mismatches),
                errors=len(tally.valid_errors),
            )
            res["levels"][f"{n} stream{'s' if n > 1 else ''}"] = s
            lat_plot[f"Triton, {n} stream{'s' if n > 1 else ''}"] = tally.latencies
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

        # P1 and P2' (issue 14 #6), as alternating paired rounds: each round runs the in-process side and the
        # Triton side back to back, so the box's load drift hits both sides of each ratio alike
        big = max(levels)
        p2 = []
        for r in range(a.rounds if hasattr(asr, "stream_step_batch") else 0):
            cps_in = in_process_batched(asr, clips, step, att, big)[0]
            _, cps_tr = triton_level(
                server.grpc_url, clips, step, expected, big, a.pair_chunks, 100 + r, a.window
            )
            p2.append(cps_tr / cps_in)
            print(f"paired round {r + 1}/{a.rounds}: P1 {p1[r]:.3f}  P2' {p2[-1]:.3f}", flush=True)
        res["paired"] = {"P1": paired(p1), "P2_prime": paired(p2), "P2_prime_window": a.window}
        noisy = noisy_neighbour(
            server.grpc_url, clips, step, ServingConfig.max_chunk_s, big - 1, max(8, a.level_chunks // big)
        )
        res["noisy_neighbour"] = noisy
        print(
            f"noisy neighbour: {noisy['normal_streams']} normal streams p99 {noisy['quiet']['p99_ms']:.1f} ms alone, "
            f"{noisy['with_neighbour']['p99_ms']:.1f} ms beside one stream of {noisy['big_chunk_s']:g} s chunks "
            f"({noisy['p99_growth']:.2f}x)",
            flush=True,
        )
        if a.via == "gateway":
            gport, hport = (int(x) for x in a.gateway_ports.split(","))
            from serving.gateway.process import GatewayProcess

            gw = GatewayProcess(
                server.grpc_url.removeprefix("grpc://"),
                work / "gateway.log",
                gport,
                hport,
                "bench-key",
                ["--max-streams-per-key", "64", "--offline-model", ""],
            ).start()
            try:
                added: dict[str, list[float]] = {
                    "1": gateway_pairs_one_stream(
                        server.grpc_url,
                        gw.grpc_addr,
                        "bench-key",
                        clips,
                        step,
                        max(a.rounds, a.gateway_pairs),
                    )
                }
                print(
                    f"gateway, 1 stream: added p50 per chunk {np.median(added['1']):+.2f} ms, median of "
                    f"{len(added['1'])} paired sessions [{min(added['1']):+.2f} .. {max(added['1']):+.2f}]",
                    flush=True,
                )
                for n in (big,) if big > 1 else ():
                    per = max(8, a.pair_chunks // n)
                    for r in range(a.rounds):  # ABBA: odd rounds run the gateway first
                        sides = ["triton", "gateway"] if r % 2 == 0 else ["gateway", "triton"]
                        side_lat = {}
                        for side in sides:
                            if side == "triton":
                                side_lat[side], _ = triton_level(
                                    server.grpc_url, clips, step, expected, n, per * n, 200 + r
                                )
                            else:
                                side_lat[side], _ = gateway_level(
                                    gw.grpc_addr, "bench-key", clips, step, n, per
                                )
                        added.setdefault(str(n), []).append(
                            pct(side_lat["gateway"], 50) - pct(side_lat["triton"], 50)
                        )
                    print(
                        f"gateway, {n} stream(s): added p50 per chunk {np.median(added[str(n)]):+.2f} ms "
                        f"(rounds {', '.join(f'{x:+.2f}' for x in added[str(n)])})",
                        flush=True,
                    )
                res["gateway_added_p50_ms"] = {n: paired(v) for n, v in added.items()}
            finally:
                gw.stop()

        # soak
        if a.no_soak:
            a.chunks = 0
        before_health = server_health(server)
        before = rss_kb(server.process.pid)
        pid = server.process.pid
        stubs_before = set(before) - {pid}
        tally, wall, _ = drive(
            server.grpc_url, clips, step, expected, a.soak_streams, a.chunks, a.malformed, seed=99
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
        res["soak"] = {
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
        sk = res["soak"]
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
        ok = True
    finally:
        server.stop()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work} for inspection (server log {server.log_file})", file=sys.stderr)

    one, many = res["levels"].get("1 stream"), res["levels"].get(f"{max(levels)} streams")
    targets = []
    if one:
        targets.append(
            {
                "name": "Triton p50 / in-process p50 (1 stream)",
                "value": one["p50_ms"] / base["p50_ms"],
                "target": "<= 1.25",
            }
        )
    if one and many:
        targets.append(
            {
                "name": f"{max(levels)}-stream / 1-stream chunks/s",
                "value": many["chunks_per_s"] / one["chunks_per_s"],
                "target": ">= 4",
            }
        )
    if res.get("paired", {}).get("P1"):
        targets.append(
            {
                "name": "P1: Triton p50 / in-process p50, 1 stream (median of pairs)",
                "value": res["paired"]["P1"]["median"],
                "target": "<= 1.10",
            }
        )
    if res.get("paired", {}).get("P2_prime"):
        targets.append(
            {
                "name": f"P2': Triton / stream_step_batch chunks/s, {max(levels)} streams (median)",
                "value": res["paired"]["P2_prime"]["median"],
                "target": ">= 0.85",
            }
        )
    if res.get("noisy_neighbour"):
        targets.append(
            {
                "name": "noisy neighbour: others' p99 growth",
                "value": res["noisy_neighbour"]["p99_growth"],
                "target": "<= 2",
            }
        )
    for n, v in res.get("gateway_added_p50_ms", {}).items():
        limit = max(1.5, 0.05 * base["p50_ms"])
        targets.append(
            {
                "name": f"gateway added p50, {n} stream(s) (ms, median)",
                "value": v["median"],
                "target": f"<= {limit:.2f}",
            }
        )
    targets.append({"name": "soak RSS growth", "value": res["soak"]["rss_growth"], "target": "< 0.10"})
    targets.append({"name": "soak crashes", "value": res["soak"]["crashes"], "target": "== 0"})
    for t in targets:
        op, thr = t["target"].split()
        t["met"] = {
            "<=": t["value"] <= float(thr),
            ">=": t["value"] >= float(thr),
            "<": t["value"] < float(thr),
            "==": t["value"] == float(thr),
        }[op]
    res["targets"] = targets
    res["total_s"] = time.time() - t_start

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    write_html(out / "serve.html", res, lat_plot)
    print("\n== bench-serve ==")
    for t in targets:
        print(
            f"{t['name']:<42} {t['value']:8.3f}   target {t['target']:<7} {'met' if t['met'] else 'NOT MET'}"
        )
    print(f"total {res['total_s']:.0f}s; wrote {out / 'serve.json'} and {out / 'serve.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
