"""Clients for the two served models: offline (HTTP or gRPC) and streaming (gRPC sequence stream).

URLs: `http://host:port` uses HTTP, `grpc://host:port` or a bare `host:port` uses gRPC. Streaming is gRPC only:
each chunk is one request of a Triton sequence (sequence_id, sequence_start on the first, sequence_end on the
last) sent over one bidirectional gRPC stream, and every response carries the transcript so far.
"""

from __future__ import annotations

import queue
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
OFFLINE_MODEL = "asr_offline"
STREAMING_MODEL = "asr_streaming"


class ClientError(RuntimeError):
    """The server answered with an error (its message names the input and the reason)."""


def _split_url(url: str) -> tuple[str, str]:
    """-> (protocol, host:port)."""
    if url.startswith("http://"):
        return "http", url.removeprefix("http://").rstrip("/")
    if url.startswith("https://"):
        raise ValueError(f"{url}: https is not supported by this client; use http:// or grpc://")
    return "grpc", url.removeprefix("grpc://").rstrip("/")


def _check_audio(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio)
    if a.ndim != 1:
        raise ValueError(f"audio: expected 1-D mono samples at {SAMPLE_RATE} Hz, got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _text(result) -> str:
    v = result.as_numpy("TEXT").reshape(-1)[0]
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def transcribe_offline(
    url: str,
    audio: np.ndarray,
    lang: str,
    model: str = OFFLINE_MODEL,
    timeout_s: float = 120.0,
    version: str = "",
) -> str:
    """One utterance (16 kHz mono float32) -> its transcript, through `asr_offline` ("" = its latest version)."""
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    proto, addr = _split_url(url)
    a = _check_audio(audio)[None, :]
    lang_arr = np.array([[lang.encode("utf-8")]], dtype=np.object_)
    if proto == "http":
        import tritonclient.http as tc
    else:
        import tritonclient.grpc as tc
    if proto == "http":  # the HTTP client's per-call `timeout` is a server-side queue timeout in µs
        client = tc.InferenceServerClient(addr, connection_timeout=timeout_s, network_timeout=timeout_s)
    else:
        client = tc.InferenceServerClient(addr)
    try:
        inputs = [
            tc.InferInput("AUDIO", list(a.shape), np_to_triton_dtype(a.dtype)),
            tc.InferInput("LANG", [1, 1], "BYTES"),
        ]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(lang_arr)
        kw = {} if proto == "http" else {"client_timeout": timeout_s}
        try:
            result = client.infer(
                model, inputs, model_version=version, outputs=[tc.InferRequestedOutput("TEXT")], **kw
            )
        except InferenceServerException as e:
            raise ClientError(e.message()) from e
        return _text(result)
    finally:
        client.close()


def transcribe_streaming(
    url: str,
    audio: np.ndarray,
    lang: str,
    chunk_s: float = 0.16,
    sequence_id: int | None = None,
    realtime: bool = False,
    on_partial: Callable[[int, str], None] | None = None,
    model: str = STREAMING_MODEL,
    timeout_s: float = 120.0,
) -> str:
    """Stream `audio` in `chunk_s` pieces through `asr_streaming`; returns the final transcript.

    `on_partial(i, text)` sees the transcript so far after each chunk. With `realtime`, chunks are sent at the
    pace of the audio (a microphone), otherwise as fast as the server answers.
    """
    import tritonclient.grpc as tc

    proto, addr = _split_url(url)
    if proto != "grpc":
        raise ValueError(f"{url}: streaming needs the gRPC endpoint (grpc://host:port)")
    a = _check_audio(audio)
    step = max(int(round(chunk_s * SAMPLE_RATE)), 1)
    pieces = [a[i : i + step] for i in range(0, a.size, step)] or [a]
    seq = sequence_id if sequence_id is not None else random.randrange(1, 2**63)
    results: queue.Queue = queue.Queue()
    client = tc.InferenceServerClient(addr)
    try:
        client.start_stream(
            callback=lambda result, error: results.put((result, error)), stream_timeout=timeout_s
        )
        text = ""
        t0 = time.monotonic()
        for i, piece in enumerate(pieces):
            if realtime:
                time.sleep(max(0.0, t0 + i * step / SAMPLE_RATE - time.monotonic()))
            chunk = np.ascontiguousarray(piece[None, :])
            inputs = [tc.InferInput("AUDIO_CHUNK", list(chunk.shape), "FP32")]
            inputs[0].set_data_from_numpy(chunk)
            if i == 0:
                lang_in = tc.InferInput("LANG", [1, 1], "BYTES")
                lang_in.set_data_from_numpy(np.array([[lang.encode("utf-8")]], dtype=np.object_))
                inputs.append(lang_in)
            client.async_stream_infer(
                model,
                inputs,
                request_id=str(i),
                sequence_id=seq,
                sequence_start=i == 0,
                sequence_end=i == len(pieces) - 1,
            )
            if realtime or on_partial is not None:  # lock-step: one answer per chunk before the next
                text = _take(results, timeout_s, i, on_partial)
        if not (realtime or on_partial is not None):
            for i in range(len(pieces)):
                text = _take(results, timeout_s, i, None)
        return text
    finally:
        client.stop_stream()
        client.close()


def _take(results: queue.Queue, timeout_s: float, i: int, on_partial) -> str:
    try:
        result, error = results.get(timeout=timeout_s)
    except queue.Empty as e:
        raise ClientError(f"no response for chunk {i} within {timeout_s:.0f}s") from e
    if error is not None:
        msg = error.message() if hasattr(error, "message") else str(error)
        raise ClientError(f"chunk {i}: {msg}")
    text = _text(result)
    if on_partial is not None:
        on_partial(i, text)
    return text


def transcribe_files(
    url: str,
    files: list[str | Path],
    lang: str,
    streaming: bool = False,
    chunk_ms: float = 160.0,
    realtime: bool = False,
    show_partials: bool = True,
) -> list[str]:
    """CLI helper: transcribe each file and print `path<TAB>text` (streaming also prints partials)."""
    from components.common.audio import load_audio  # the one loader (soxr resampling, downmix, checks)

    texts = []
    for path in files:
        audio = load_audio(path)
        t0 = time.monotonic()
        if streaming:

            def show(i: int, text: str, _p=path) -> None:
                print(f"  [{_p} #{i}] {text}", flush=True)

            text = transcribe_streaming(
                url,
                audio,
                lang,
                chunk_ms / 1000.0,
                realtime=realtime,
                on_partial=show if show_partials else None,
            )
        else:
            text = transcribe_offline(url, audio, lang)
        dt = time.monotonic() - t0
        print(f"{path}\t{text}\t({audio.size / SAMPLE_RATE:.2f}s audio in {dt:.2f}s)", flush=True)
        texts.append(text)
    return texts
