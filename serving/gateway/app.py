"""The front door: one asyncio process serving Riva ASR gRPC (grpc.aio) and the OpenAI audio API (aiohttp)
in front of Triton, which it reaches through tritonclient's asyncio gRPC client.

* Riva `RivaSpeechRecognition`: `Recognize` -> the offline model; `StreamingRecognize` -> the streaming model
  (one Triton sequence per client stream, audio re-cut into `chunk_s` requests, interim results when asked,
  the final result when the client half-closes).
* OpenAI: `POST /v1/audio/transcriptions` (multipart: file, model, language, response_format json | text |
  verbose_json) and `GET /v1/models`.
* Operations: `/healthz` (the process answers), `/readyz` (Triton's models READY), `/metrics` (Prometheus).
Every refusal is a `GatewayError`: a gRPC status with its message, or an HTTP status with an OpenAI-style
error body. Each response says which Triton version produced it (`x-model-version`, `x-model-role`: gRPC
metadata / HTTP headers; `model_version` in verbose_json).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import time
from dataclasses import dataclass

import grpc
import numpy as np
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from riva.client.proto import riva_asr_pb2 as rasr
from riva.client.proto import riva_asr_pb2_grpc as rasr_grpc
from riva.client.proto import riva_audio_pb2 as raudio

from serving.gateway.core import (
    MODEL_RATE,
    AudioBudget,
    CanaryRouter,
    GatewayConfig,
    GatewayError,
    KeyLimiter,
    authenticate,
    decode_audio,
    pcm16_to_float,
    resolve_language,
    triton_error,
)

log = logging.getLogger(__name__)

_BACKGROUND: set = set()  # clean-up tasks still running (kept referenced until done)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The gateway's Prometheus series (names in docs/SERVING.md; alerts in infra/k8s/monitoring)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "asr_gateway_requests",
            "Requests/streams by API, method and status code",
            ["api", "method", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "asr_gateway_request_seconds",
            "Whole request/stream wall time",
            ["api", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.chunk_latency = Histogram(
            "asr_gateway_chunk_seconds",
            "Round trip of one streaming chunk to Triton",
            ["role"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.active = Gauge("asr_gateway_active_streams", "Requests and streams in progress", registry=r)
        self.audio = Counter("asr_gateway_audio_seconds", "Audio transcribed (seconds)", ["api"], registry=r)
        self.rtf = Histogram(
            "asr_gateway_real_time_factor",
            "Processing time / audio duration per request",
            ["api"],
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=r,
        )
        self.sessions = Counter(
            "asr_gateway_sessions",
            "Sessions by the version that served them",
            ["role", "version"],
            registry=r,
        )


@dataclass
class Served:
    text: str
    version: str
    role: str
    audio_s: float


class TritonBackend:
    """The gateway's only way to Triton: offline infer, streaming sequences, readiness, model list."""

    def __init__(self, cfg: GatewayConfig, metrics: Metrics):
        import tritonclient.grpc.aio as tc

        self.tc = tc
        self.cfg = cfg
        self.client = tc.InferenceServerClient(cfg.triton_grpc)
        self.metrics = metrics
        self.router = CanaryRouter(cfg.champion_version, cfg.challenger_version, cfg.canary_share, cfg.seed)
        self._ids = random.Random(cfg.seed)

    def _inputs(self, name: str, audio: np.ndarray, lang: str | None):
        tc = self.tc
        a = np.ascontiguousarray(audio, dtype=np.float32)[None, :]
        inputs = [tc.InferInput(name, list(a.shape), "FP32")]
        inputs[0].set_data_from_numpy(a)
        if lang is not None:
            inputs.append(tc.InferInput("LANG", [1, 1], "BYTES"))
            inputs[1].set_data_from_numpy(np.array([[lang.encode()]], dtype=np.object_))
        return inputs

    async def _infer(self, model: str, version: str, inputs, **seq) -> tuple[str, str]:
        from tritonclient.utils import InferenceServerException

        try:
            res = await self.client.infer(model, inputs, model_version=version, **seq)
        except InferenceServerException as e:
            raise triton_error(e.message() or str(e)) from None
        except grpc.RpcError as e:  # Triton down or unreachable
            raise GatewayError("UNAVAILABLE", f"Triton at {self.cfg.triton_grpc}: {e}") from None
        text = res.as_numpy("TEXT").reshape(-1)[0]
        return (
            text.decode("utf-8") if isinstance(text, bytes) else str(text)
        ), res.get_response().model_version

    async def transcribe(self, audio: np.ndarray, lang: str) -> Served:
        if not self.cfg.offline_model:
            raise GatewayError(
                "UNAVAILABLE", "offline transcription is not served here (--offline-model is empty)"
            )
        version, role = self.router.pick()
        text, served = await self._infer(self.cfg.offline_model, version, self._inputs("AUDIO", audio, lang))
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
    """One client stream = one Triton sequence. Audio arrives in any sizes; it goes to Triton in `chunk_s`
    pieces (what a client of the streaming model sends), the rest with END when the client finishes."""

    def __init__(self, backend: TritonBackend, lang: str, version: str, role: str, seq_id: int):
        self.b, self.lang, self.version, self.role, self.seq_id = backend, lang, version, role, seq_id
        self.step = int(round(backend.cfg.chunk_s * MODEL_RATE))
        self.buf = np.zeros(0, np.float32)
        self.started = self.ended = False
        self.text = ""
        self.served_version = version
        self.samples = 0

    async def _send(self, audio: np.ndarray, end: bool) -> str:
        t0 = time.perf_counter()
        inputs = self.b._inputs("AUDIO_CHUNK", audio, None if self.started else self.lang)
        text, self.served_version = await self.b._infer(
            self.b.cfg.streaming_model,
            self.version,
            inputs,
            sequence_id=self.seq_id,
            sequence_start=not self.started,
            sequence_end=end,
        )
        if not self.started:
            self.b.metrics.sessions.labels(self.role, self.served_version).inc()
        self.started = True
        self.ended = end
        self.b.metrics.chunk_latency.labels(self.role).observe(time.perf_counter() - t0)
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

    async def abandon(self) -> None:
        """Free the Triton sequence of a stream that failed or was cancelled (best effort)."""
        if self.started and not self.ended:
            try:
                await self._send(np.zeros(0, np.float32), True)
            except GatewayError:
                pass


ENCODINGS = {v: k for k, v in raudio.AudioEncoding.items()}


class Gateway:
    """Shared state of both front ends: settings, keys, limits, the Triton backend, metrics."""

    def __init__(self, cfg: GatewayConfig, api_keys: dict[str, str]):
        self.cfg = cfg
        self.keys = api_keys
        self.limiter = KeyLimiter(cfg.max_streams_per_key)
        self.metrics = Metrics()
        self.triton = TritonBackend(cfg, self.metrics)

    def admit(self, headers) -> str:
        key_id = authenticate(self.keys, headers)
        self.limiter.acquire(key_id)
        self.metrics.active.inc()
        return key_id

    def apply_rollout(self, path: str) -> None:
        """Route by the rollout file `registry.rollout` writes (re-read by `watch_rollout` when it changes)."""
        cfg = GatewayConfig.from_rollout(path)
        r = self.triton.router
        if (r.champion, r.challenger, r.share) != (
            cfg.champion_version,
            cfg.challenger_version,
            cfg.canary_share,
        ):
            log.info(
                "rollout %s: champion %r, challenger %r, share %.3f",
                path,
                cfg.champion_version,
                cfg.challenger_version,
                cfg.canary_share,
            )
        r.champion, r.challenger, r.share = cfg.champion_version, cfg.challenger_version, cfg.canary_share
        self.cfg = dataclasses.replace(
            self.cfg, champion_version=r.champion, challenger_version=r.challenger, canary_share=r.share
        )
        self.triton.cfg = self.cfg

    async def watch_rollout(self, path: str, every_s: float = 1.0) -> None:
        seen = None
        while True:
            try:
                mtime = os.stat(path).st_mtime_ns
                if mtime != seen:
                    self.apply_rollout(path)
                    seen = mtime
            except (OSError, ValueError) as e:  # keep the last good routing; say why
                log.warning("rollout file %s: %s (routing unchanged)", path, e)
            await asyncio.sleep(every_s)

    def leave(self, key_id: str) -> None:
        self.limiter.release(key_id)
        self.metrics.active.dec()


# ---------------------------------------------------------------- Riva ASR gRPC


def _riva_config(cfg: rasr.RecognitionConfig, gw: Gateway) -> tuple[str, str, int]:
    enc = ENCODINGS.get(cfg.encoding, str(cfg.encoding))
    if cfg.audio_channel_count > 1:
        raise GatewayError("INVALID_ARGUMENT", f"audio_channel_count: {cfg.audio_channel_count} (mono only)")
    return resolve_language(cfg.language_code, gw.cfg.languages), enc, int(cfg.sample_rate_hertz)


def _strip_wav(data: bytes) -> tuple[bytes, int]:
    """A streamed WAV's first message may carry the RIFF header: -> (PCM bytes, its rate)."""
    import struct

    from components.common.audio import walk_riff

    rate = 0
    for cid, _size, body in walk_riff(lambda offset, n: data[offset : offset + n], len(data)):
        if cid == b"fmt ":
            fmt, channels, rate = struct.unpack("<HHI", data[body : body + 8])
            bits = struct.unpack("<H", data[body + 14 : body + 16])[0]
            if fmt != 1 or channels != 1 or bits != 16:
                raise GatewayError("INVALID_ARGUMENT", "audio_content: WAV must be 16-bit PCM mono")
        if cid == b"data":
            return data[body:], rate
    raise GatewayError("INVALID_ARGUMENT", "audio_content: RIFF header without a data chunk")


class RivaAsr(rasr_grpc.RivaSpeechRecognitionServicer):
    def __init__(self, gw: Gateway):
        self.gw = gw

    async def _refuse(self, context, method: str, e: GatewayError):
        self.gw.metrics.requests.labels("riva", method, e.code).inc()
        log.info("riva %s refused: %s %s", method, e.code, e.message)
        await context.abort(grpc.StatusCode[e.code], e.message)

    async def Recognize(self, request, context):  # noqa: N802 (the proto's name)
        gw, t0, key_id = self.gw, time.perf_counter(), None
        try:
            key_id = gw.admit(context.invocation_metadata())
            lang, enc, rate = _riva_config(request.config, gw)
            AudioBudget(gw.cfg).add_bytes(len(request.audio))
            audio, _ = decode_audio(request.audio, enc, rate)
            AudioBudget(gw.cfg).add_samples(audio.size)
            served = await gw.triton.transcribe(audio, lang)
        except GatewayError as e:
            await self._refuse(context, "Recognize", e)
        finally:
            if key_id is not None:
                gw.leave(key_id)
        self._done("Recognize", t0, served)
        context.set_trailing_metadata((("x-model-version", served.version), ("x-model-role", served.role)))
        alt = rasr.SpeechRecognitionAlternative(transcript=served.text, confidence=1.0, language_code=lang)
        return rasr.RecognizeResponse(
            results=[rasr.SpeechRecognitionResult(alternatives=[alt], audio_processed=served.audio_s)]
        )

    def _done(self, method: str, t0: float, served: Served) -> None:
        m, dt = self.gw.metrics, time.perf_counter() - t0
        m.requests.labels("riva", method, "OK").inc()
        m.latency.labels("riva", method).observe(dt)
        m.audio.labels("riva").inc(served.audio_s)
        if served.audio_s > 0:
            m.rtf.labels("riva").observe(dt / served.audio_s)

    async def StreamingRecognize(self, request_iterator, context):  # noqa: N802
        gw, t0, key_id, stream = self.gw, time.perf_counter(), None, None
        try:
            key_id = gw.admit(context.invocation_metadata())
            first = await anext(aiter(request_iterator), None)
            if first is None or not first.HasField("streaming_config"):
                raise GatewayError(
                    "INVALID_ARGUMENT", "streaming_config: the first message must carry the streaming config"
                )
            sc = first.streaming_config
            lang, enc, rate = _riva_config(sc.config, gw)
            if enc not in ("LINEAR_PCM", "ENCODING_UNSPECIFIED"):
                raise GatewayError(
                    "INVALID_ARGUMENT",
                    f"encoding: {enc} is not supported when streaming "
                    "(LINEAR_PCM 16-bit; FLAC for Recognize)",
                )
            stream = gw.triton.stream(lang)
            await context.send_initial_metadata((("x-model-role", stream.role),))
            budget, resampler, first_audio = AudioBudget(gw.cfg, stream=True), None, True
            async for req in request_iterator:
                data = req.audio_content
                if first_audio and data[:4] == b"RIFF":
                    data, wav_rate = _strip_wav(data)
                    if rate and wav_rate != rate:
                        raise GatewayError(
                            "INVALID_ARGUMENT",
                            f"sample_rate_hertz: {rate} Hz does not match the audio's own {wav_rate} Hz",
                        )
                    rate = rate or wav_rate
                if first_audio:
                    if not rate:
                        raise GatewayError("INVALID_ARGUMENT", "sample_rate_hertz: required for LINEAR_PCM")
                    from serving.gateway.core import resample

                    resample(np.zeros(1, np.float32), rate)  # refuses unsupported rates by name
                    if rate != MODEL_RATE:
                        import soxr

                        resampler = soxr.ResampleStream(rate, MODEL_RATE, 1, dtype="float32")
                    first_audio = False
                budget.add_bytes(len(data))
                audio = pcm16_to_float(data)
                if resampler is not None:
                    audio = resampler.resample_chunk(audio)
                budget.add_samples(audio.size)
                for text in await stream.feed(audio):
                    if sc.interim_results:  # one interim result per chunk_s of audio served
                        yield self._result(text, False, stream)
            if first_audio:
                raise GatewayError("INVALID_ARGUMENT", "audio_content: empty stream (no audio sent)")
            if resampler is not None:
                await stream.feed(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
            text = await stream.finish()
            context.set_trailing_metadata(
                (("x-model-version", stream.served_version), ("x-model-role", stream.role))
            )
            self._done(
                "StreamingRecognize",
                t0,
                Served(text, stream.served_version, stream.role, stream.samples / MODEL_RATE),
            )
            yield self._result(text, True, stream)
        except GatewayError as e:
            if stream is not None:
                await stream.abandon()
            await self._refuse(context, "StreamingRecognize", e)
        finally:
            if stream is not None and stream.started and not stream.ended:
                # the client went away mid-stream (cancelled): free its Triton sequence now, not after 60 s idle
                task = asyncio.ensure_future(stream.abandon())
                _BACKGROUND.add(task)
                task.add_done_callback(_BACKGROUND.discard)
            if key_id is not None:
                gw.leave(key_id)

    @staticmethod
    def _result(text: str, final: bool, stream: TritonStream):
        alt = rasr.SpeechRecognitionAlternative(transcript=text, confidence=1.0, language_code=stream.lang)
        res = rasr.StreamingRecognitionResult(
            alternatives=[alt],
            is_final=final,
            stability=1.0 if final else 0.5,
            audio_processed=stream.samples / MODEL_RATE,
        )
        return rasr.StreamingRecognizeResponse(results=[res])


# ---------------------------------------------------------------- OpenAI-compatible HTTP

OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


def _http_error(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"message": message, "type": OPENAI_TYPES.get(status, "error"), "code": code}}
    return web.json_response(body, status=status)


def http_app(gw: Gateway) -> web.Application:
    @web.middleware
    async def errors(request: web.Request, handler):
        try:
            return await handler(request)
        except GatewayError as e:
            gw.metrics.requests.labels("openai", request.path, e.code).inc()
            return _http_error(e.http_status, e.code, e.message)
        except web.HTTPRequestEntityTooLarge:
            gw.metrics.requests.labels("openai", request.path, "RESOURCE_EXHAUSTED").inc()
            return _http_error(
                413,
                "RESOURCE_EXHAUSTED",
                f"request body exceeds max_request_bytes {gw.cfg.max_request_bytes}",
            )

    async def transcriptions(request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        key_id = gw.admit(request.headers.items())
        try:
            form = await request.post()
            upload = form.get("file")
            if upload is None or not hasattr(upload, "file"):
                raise GatewayError(
                    "INVALID_ARGUMENT", "file: missing (multipart field 'file' with the audio)"
                )
            model = str(form.get("model", "") or "")
            served_models = {gw.cfg.offline_model, gw.cfg.streaming_model}
            if model and model not in served_models and model not in ("whisper-1", "nemotron-asr"):
                raise GatewayError("NOT_FOUND", f"model: {model!r} is not served (GET /v1/models)")
            fmt = str(form.get("response_format", "json") or "json")
            if fmt not in ("json", "text", "verbose_json"):
                raise GatewayError(
                    "INVALID_ARGUMENT",
                    f"response_format: {fmt!r} is not supported (json, text, verbose_json)",
                )
            lang = resolve_language(str(form.get("language", "") or ""), gw.cfg.languages)
            data = upload.file.read()
            AudioBudget(gw.cfg).add_bytes(len(data))
            audio, _ = decode_audio(data, "", 0, field_name="file")
            AudioBudget(gw.cfg).add_samples(audio.size)
            served = await gw.triton.transcribe(audio, lang)
        finally:
            gw.leave(key_id)
        dt = time.perf_counter() - t0
        m = gw.metrics
        m.requests.labels("openai", "transcriptions", "OK").inc()
        m.latency.labels("openai", "transcriptions").observe(dt)
        m.audio.labels("openai").inc(served.audio_s)
        m.rtf.labels("openai").observe(dt / max(served.audio_s, 1e-6))
        headers = {"x-model-version": served.version, "x-model-role": served.role}
        if fmt == "text":
            return web.Response(text=served.text, headers=headers)
        body = {"text": served.text}
        if fmt == "verbose_json":
            body |= {
                "task": "transcribe",
                "language": lang,
                "duration": served.audio_s,
                "model_version": served.version,
                "model_role": served.role,
                "segments": [{"id": 0, "start": 0.0, "end": served.audio_s, "text": served.text}],
            }
        return web.json_response(body, headers=headers)

    async def models(request: web.Request) -> web.Response:
        authenticate(gw.keys, request.headers.items())
        rows = await gw.triton.models()
        data = [
            {"id": m["name"], "object": "model", "owned_by": "triton", "version": m.get("version", "")}
            for m in rows
        ]
        return web.json_response({"object": "list", "data": data})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        ok, why = await gw.triton.ready()
        return web.Response(text=why + "\n", status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(gw.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application(middlewares=[errors], client_max_size=gw.cfg.max_request_bytes + 64 * 1024)
    app.add_routes(
        [
            web.post("/v1/audio/transcriptions", transcriptions),
            web.get("/v1/models", models),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics),
        ]
    )
    return app


async def serve(
    gw: Gateway,
    host: str,
    grpc_port: int,
    http_port: int,
    started: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    rollout_file: str = "",
) -> None:
    """Run both front ends until `stop` is set (or forever); follow `rollout_file` when given."""
    watcher = asyncio.create_task(gw.watch_rollout(rollout_file)) if rollout_file else None
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", gw.cfg.max_request_bytes + 65536)])
    rasr_grpc.add_RivaSpeechRecognitionServicer_to_server(RivaAsr(gw), server)
    server.add_insecure_port(f"{host}:{grpc_port}")
    await server.start()
    runner = web.AppRunner(http_app(gw), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, http_port).start()
    log.info(
        "gateway: riva grpc %s:%d, http %s:%d -> triton %s",
        host,
        grpc_port,
        host,
        http_port,
        gw.cfg.triton_grpc,
    )
    if started is not None:
        started.set()
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        if watcher is not None:
            watcher.cancel()
        await server.stop(grace=2)
        await runner.cleanup()
        await gw.triton.close()
