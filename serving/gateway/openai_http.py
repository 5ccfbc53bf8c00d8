"""OpenAI-compatible HTTP (aiohttp): `POST /v1/audio/transcriptions` (multipart: file, model, language,
response_format json | text | verbose_json), `GET /v1/models`, and the operations endpoints `/healthz`,
`/readyz` (Triton's models READY) and `/metrics` (Prometheus). Refusals are OpenAI-style error bodies with the
HTTP status of the `GatewayError`'s code."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.gateway.core import AudioBudget, GatewayError, authenticate, decode_audio, resolve_language

if TYPE_CHECKING:
    from serving.gateway.app import Gateway

OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}
RESPONSE_FORMATS = ("json", "text", "verbose_json")
# model names OpenAI clients send that mean "the offline model"
MODEL_ALIASES = ("whisper-1", "nemotron-asr")
GATEWAY = web.AppKey("gateway", object)


def _http_error(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"message": message, "type": OPENAI_TYPES.get(status, "error"), "code": code}}
    return web.json_response(body, status=status)


def _gw(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


@web.middleware
async def _errors(request: web.Request, handler):
    gw = _gw(request)
    try:
        return await handler(request)
    except GatewayError as e:
        gw.metrics.requests.labels("openai", request.path, e.code).inc()
        return _http_error(e.http_status, e.code, e.message)
    except web.HTTPRequestEntityTooLarge:
        gw.metrics.requests.labels("openai", request.path, "RESOURCE_EXHAUSTED").inc()
        return _http_error(
            413, "RESOURCE_EXHAUSTED", f"request body exceeds max_request_bytes {gw.cfg.max_request_bytes}"
        )


def _form_fields(gw: Gateway, form) -> tuple[bytes, str, str]:
    """(audio bytes, response_format, LANG) of a transcription form, or the named error."""
    upload = form.get("file")
    if upload is None or not hasattr(upload, "file"):
        raise GatewayError("INVALID_ARGUMENT", "file: missing (multipart field 'file' with the audio)")
    model = str(form.get("model", "") or "")
    if model and model not in (gw.cfg.offline_model, gw.cfg.streaming_model) and model not in MODEL_ALIASES:
        raise GatewayError("NOT_FOUND", f"model: {model!r} is not served (GET /v1/models)")
    fmt = str(form.get("response_format", "json") or "json")
    if fmt not in RESPONSE_FORMATS:
        raise GatewayError(
            "INVALID_ARGUMENT", f"response_format: {fmt!r} is not supported ({', '.join(RESPONSE_FORMATS)})"
        )
    lang = resolve_language(str(form.get("language", "") or ""), gw.cfg.languages)
    return upload.file.read(), fmt, lang


async def transcriptions(request: web.Request) -> web.Response:
    gw, t0 = _gw(request), time.perf_counter()
    key_id = gw.admit(request.headers.items())
    try:
        data, fmt, lang = _form_fields(gw, await request.post())
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
    gw = _gw(request)
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
    ok, why = await _gw(request).triton.ready()
    return web.Response(text=why + "\n", status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(_gw(request).metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def http_app(gw: Gateway) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=gw.cfg.max_request_bytes + 64 * 1024)
    app[GATEWAY] = gw
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
