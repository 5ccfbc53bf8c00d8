"""The closed-loop load generator: N concurrent client streams (threads, optionally over several processes),
malformed requests mixed in for the soak, per-chunk latency summaries and paired ratios, and the noisy-neighbour
pass."""

from __future__ import annotations

import queue
import random
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from tests.bench.serve.model import split
from tests.bench.serve.triton import MODEL, request_inputs, triton_sequential

MALFORMED_KINDS = ("dtype", "shape", "nan", "lang", "unknown_seq", "after_end")


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
            r, err, _ = self._send(request_inputs(tc, chunk.astype(np.float64), None, "FP64"), live_seq)
        elif kind == "shape" and live_seq:  # two rows in a sequence request
            r, err, _ = self._send(request_inputs(tc, np.zeros((2, self.step), np.float32), None), live_seq)
        elif kind == "nan" and live_seq:  # refused before the stream's state is touched
            bad = chunk.copy()
            bad[7] = np.nan
            r, err, _ = self._send(request_inputs(tc, bad, None), live_seq)
        elif kind == "after_end" and ended_seq:
            r, err, _ = self._send(request_inputs(tc, chunk, None), ended_seq)
        elif kind == "unknown_seq":
            r, err, _ = self._send(request_inputs(tc, chunk, None), self.rng.randrange(1, 2**62))
        else:  # "lang" (and the kinds above when there is no live/ended stream yet); START+END frees the slot
            kind = "lang"
            r, err, _ = self._send(
                request_inputs(tc, chunk, "xx-XX"), self.rng.randrange(1, 2**62), True, True
            )
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
                        (
                            i,
                            self._post(
                                request_inputs(tc, piece, lang if i == 0 else None), seq, i == 0, last
                            ),
                        )
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
                    request_inputs(tc, p, lang if i == 0 else None),
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
                    request_inputs(tc, piece, lang if i == 0 else None),
                    sequence_id=seq,
                    sequence_start=i == 0,
                )
                i += 1
            client.infer(
                MODEL, request_inputs(tc, np.zeros(0, np.float32), None), sequence_id=seq, sequence_end=True
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
