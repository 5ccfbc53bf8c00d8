"""The tritonserver side: its process tree and RSS, its Prometheus counters, its health, and one lock-step
client stream straight to it (the served twin of the in-process reference)."""

from __future__ import annotations

import queue
import random
import time
from pathlib import Path

import numpy as np

from serving.server import TritonServer, is_ready, repository_index
from tests.bench.serve.model import split

MODEL = "asr_streaming"


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
            inputs = request_inputs(tc, np.zeros(0, np.float32), lang if i == 0 else None)
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
                    request_inputs(tc, piece, lang if i == 0 else None),
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


def request_inputs(tc, chunk: np.ndarray, lang: str | None, dtype: str = "FP32"):
    c = chunk if chunk.ndim == 2 else chunk[None, :]
    inputs = [tc.InferInput("AUDIO_CHUNK", list(c.shape), dtype)]
    inputs[0].set_data_from_numpy(c)
    if lang is not None:
        inputs.append(tc.InferInput("LANG", [1, 1], "BYTES"))
        inputs[1].set_data_from_numpy(np.array([[lang.encode()]], dtype=np.object_))
    return inputs
