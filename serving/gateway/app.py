"""The front door: one asyncio process serving Riva ASR gRPC (grpc.aio, `serving.gateway.riva`) and the OpenAI
audio API (aiohttp, `serving.gateway.openai_http`) in front of Triton, which it reaches through tritonclient's
asyncio gRPC client (`serving.gateway.triton`).

* Riva `RivaSpeechRecognition`: `Recognize` -> the offline model; `StreamingRecognize` -> the streaming model
  (one Triton sequence per client stream, held on one Triton gRPC stream, audio re-cut into `chunk_s`
  requests, interim results when asked, the final result when the client half-closes).
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

import grpc
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from riva.client.proto import riva_asr_pb2_grpc as rasr_grpc

from serving.gateway.core import GatewayConfig, KeyLimiter, authenticate
from serving.gateway.openai_http import http_app
from serving.gateway.riva import RivaAsr
from serving.gateway.triton import TritonBackend

log = logging.getLogger(__name__)

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
