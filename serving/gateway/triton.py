"""The gateway's only way to Triton (tritonclient's asyncio gRPC client): offline `infer`, streaming sequences,
readiness and the model list.

A client stream holds ONE Triton gRPC stream (`ModelStreamInfer`) for its whole sequence, like a direct Triton
client does, instead of a unary `infer` (a new HTTP/2 call) per 160 ms chunk (docs/SERVING.md, "Gateway
overhead").
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import numpy as np

from serving.gateway.core import MODEL_RATE, CanaryRouter, GatewayConfig, GatewayError, triton_error

if TYPE_CHECKING:
    from serving.gateway.app import Metrics

CLOSE_TIMEOUT_S = 10.0  #: how long a finished stream's Triton call may take to end after the half-close


@dataclass
class Served:
    text: str
    version: str
    role: str
    audio_s: float


def _unavailable(cfg: GatewayConfig, e: Exception) -> GatewayError:
    return GatewayError("UNAVAILABLE", f"Triton at {cfg.triton_grpc}: {e}")


class TritonBackend:
    """Offline infer, streaming sequences, readiness and the model list of one Triton server."""

    def __init__(self, cfg: GatewayConfig, metrics: Metrics):
        import tritonclient.grpc.aio as tc

        self.tc = tc
        self.cfg = cfg
        self.client = tc.InferenceServerClient(cfg.triton_grpc)
        self.metrics = metrics
        self.router = CanaryRouter(cfg.champion_version, cfg.challenger_version, cfg.canary_share, cfg.seed)
        self._ids = random.Random(cfg.seed)

    def inputs(self, name: str, audio: np.ndarray, lang: str | None):
        tc = self.tc
        a = np.ascontiguousarray(audio, dtype=np.float32)[None, :]
        inputs = [tc.InferInput(name, list(a.shape), "FP32")]
        inputs[0].set_data_from_numpy(a)
        if lang is not None:
            inputs.append(tc.InferInput("LANG", [1, 1], "BYTES"))
            inputs[1].set_data_from_numpy(np.array([[lang.encode()]], dtype=np.object_))
        return inputs

    @staticmethod
    def text_and_version(res) -> tuple[str, str]:
        text = res.as_numpy("TEXT").reshape(-1)[0]
        text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
        return text, res.get_response().model_version

    async def infer(self, model: str, version: str, inputs, **seq) -> tuple[str, str]:
        """One unary request -> (text, the version that answered)."""
        from tritonclient.utils import InferenceServerException

        try:
            res = await self.client.infer(model, inputs, model_version=version, **seq)
        except InferenceServerException as e:
            raise triton_error(e.message() or str(e)) from None
        except grpc.RpcError as e:  # Triton down or unreachable
            raise _unavailable(self.cfg, e) from None
        return self.text_and_version(res)

    async def transcribe(self, audio: np.ndarray, lang: str) -> Served:
        if not self.cfg.offline_model:
            raise GatewayError(
                "UNAVAILABLE", "offline transcription is not served here (--offline-model is empty)"
            )
        version, role = self.router.pick()
        text, served = await self.infer(self.cfg.offline_model, version, self.inputs("AUDIO", audio, lang))
        self.metrics.sessions.labels(role, served).inc()
        return Served(text, served, role, audio.size / MODEL_RATE)

    def stream(self, lang: str) -> TritonStream:
        version, role = self.router.pick()
        return TritonStream(self, lang, version, role, self._ids.getrandbits(62) + 1)

    async def ready(self) -> tuple[bool, str]:
        from tritonclient.utils import InferenceServerException

        models = [m for m in (self.cfg.offline_model, self.cfg.streaming_model) if m]  # "" = not served
        wanted = [
            (m, v)
            for m in models
            for v in dict.fromkeys((self.cfg.champion_version, self.cfg.challenger_version))
        ]
        try:
            for m, v in wanted:
                if not await self.client.is_model_ready(m, v):
                    return False, f"{m} version {v or 'latest'} is not READY"
        except (InferenceServerException, grpc.RpcError) as e:
            return False, f"Triton at {self.cfg.triton_grpc} unreachable: {e}"
        return True, "ready"

    async def models(self) -> list[dict]:
        index = await self.client.get_model_repository_index(as_json=True)
        return [m for m in index.get("models", []) if m.get("state") == "READY"]

    async def close(self) -> None:
        await self.client.close()


class TritonStream:
    """One client stream = one Triton sequence, sent over one Triton gRPC stream. Audio arrives in any sizes;
    it goes to Triton in `chunk_s` pieces (what a client of the streaming model sends), the rest with END when
    the client finishes. Lock-step: one request in flight, so each answer belongs to the request before it."""

    def __init__(self, backend: TritonBackend, lang: str, version: str, role: str, seq_id: int):
        self.b, self.lang, self.version, self.role, self.seq_id = backend, lang, version, role, seq_id
        self.step = int(round(backend.cfg.chunk_s * MODEL_RATE))
        self.buf = np.zeros(0, np.float32)
        self.started = self.ended = False
        self.text = ""
        self.served_version = version
        self.samples = 0
        self._chunk_latency = backend.metrics.chunk_latency.labels(role)
        self._requests: asyncio.Queue | None = None
        self._responses = None  # tritonclient's response iterator of the open ModelStreamInfer call

    def _open(self) -> None:
        requests: asyncio.Queue = asyncio.Queue()

        async def outgoing():
            while (item := await requests.get()) is not None:
                yield item

        self._requests = requests
        self._responses = self.b.client.stream_infer(outgoing())

    async def _send(self, audio: np.ndarray, end: bool) -> str:
        t0 = time.perf_counter()
        if self._responses is None:
            self._open()
        self._requests.put_nowait(
            {
                "model_name": self.b.cfg.streaming_model,
                "model_version": self.version,
                "inputs": self.b.inputs("AUDIO_CHUNK", audio, None if self.started else self.lang),
                "sequence_id": self.seq_id,
                "sequence_start": not self.started,
                "sequence_end": end,
            }
        )
        try:
            result, error = await anext(self._responses)
        except StopAsyncIteration:
            await self.close()
            raise _unavailable(self.b.cfg, RuntimeError("the stream ended without an answer")) from None
        except grpc.RpcError as e:  # Triton down, or the stream broke: the next request opens a new one
            await self.close()
            raise _unavailable(self.b.cfg, e) from None
        if error is not None:
            raise triton_error(error.message() or str(error))
        text, self.served_version = self.b.text_and_version(result)
        if not self.started:
            self.b.metrics.sessions.labels(self.role, self.served_version).inc()
        self.started = True
        self.ended = end
        self._chunk_latency.observe(time.perf_counter() - t0)
        self.text = text
        return text

    async def feed(self, audio: np.ndarray) -> list[str]:
        """Queue samples; send every full chunk; the partial texts Triton returned."""
        self.samples += audio.size
        self.buf = np.concatenate([self.buf, audio]) if self.buf.size else audio
        out = []
        while self.buf.size >= self.step:
            piece, self.buf = self.buf[: self.step], self.buf[self.step :]
            out.append(await self._send(piece, False))
        return out

    async def finish(self) -> str:
        rest, self.buf = self.buf, np.zeros(0, np.float32)
        return await self._send(rest, True)

    async def close(self) -> None:
        """Half-close the Triton stream and let its call end (Triton closes its side when the requests stop)."""
        responses, self._responses = self._responses, None
        if responses is None:
            return
        self._requests.put_nowait(None)  # ends the request iterator tritonclient consumes
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                async for _ in responses:
                    pass
        except (grpc.RpcError, TimeoutError):
            responses.cancel()

    async def abandon(self) -> None:
        """Free the Triton sequence of a stream that failed or was cancelled (best effort), then close."""
        try:
            if self.started and not self.ended:
                await self._send(np.zeros(0, np.float32), True)
        except GatewayError:
            pass
        finally:
            await self.close()
