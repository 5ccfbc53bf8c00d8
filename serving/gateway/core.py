"""The gateway's pure logic: settings, API keys, per-key limits, canary routing, audio decoding, named errors.

No network and no asyncio here (tests/unit/test_gateway_core.py exercises it directly); `serving.gateway.app`
wires it to grpc.aio (Riva ASR) and aiohttp (OpenAI audio API) in one process.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MODEL_RATE = 16000  # the served models take 16 kHz mono fp32
MIN_RATE, MAX_RATE = 8000, 48000  # other rates in this range are resampled (soxr); outside it, refused


@dataclass
class GatewayConfig:
    """Everything the gateway is told at start (CLI flags / env; docs/SERVING.md "Gateway")."""

    triton_grpc: str = "127.0.0.1:8001"  #: host:port of Triton's gRPC endpoint
    offline_model: str = "asr_offline"  #: Triton model for Recognize and /v1/audio/transcriptions
    streaming_model: str = "asr_streaming"  #: Triton model for StreamingRecognize
    champion_version: str = ""  #: Triton version serving by default ("" = Triton's latest loaded)
    challenger_version: str = ""  #: version that gets the canary share ("" = no canary)
    canary_share: float = 0.0  #: share of NEW sessions routed to the challenger, 0..1
    api_keys_file: str = ""  #: file with one API key per line (a mounted Secret); env GATEWAY_API_KEYS too
    max_streams_per_key: int = (
        16  #: concurrent requests + streams one key may hold (RESOURCE_EXHAUSTED beyond)
    )
    max_request_bytes: int = 8 * 1024 * 1024  #: largest audio payload of one request / one stream message
    max_audio_s: float = 120.0  #: longest audio of one request (Recognize, /v1/audio/transcriptions)
    max_stream_s: float = 3600.0  #: the per-stream audio budget (StreamingRecognize)
    chunk_s: float = 0.16  #: audio per Triton streaming request (one encoder shift at [56,1])
    languages: tuple[str, ...] = ()  #: the model's locales; lets "en" map to "en-US" (empty: pass through)
    seed: int | None = None  #: canary RNG seed (tests); None = OS entropy

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.canary_share) <= 1.0:
            raise ValueError(f"canary_share: {self.canary_share} is not in [0, 1]")
        if self.canary_share > 0 and not self.challenger_version:
            raise ValueError("canary_share > 0 needs challenger_version (the Triton version to route to)")
        if self.max_streams_per_key < 1:
            raise ValueError(f"max_streams_per_key: {self.max_streams_per_key} must be >= 1")

    @classmethod
    def from_rollout(cls, path: str | os.PathLike, **kw) -> GatewayConfig:
        """Settings with the versions and share of a rollout file written by `registry.rollout`."""
        state = json.loads(Path(path).read_text())
        return cls(
            champion_version=str(state.get("champion_version") or ""),
            challenger_version=str(state.get("challenger_version") or ""),
            canary_share=float(state.get("canary_share") or 0.0),
            **kw,
        )


# gRPC status names; the HTTP side maps them to status codes (HTTP_STATUS) and OpenAI-style error types.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "INTERNAL": 500,
}


class GatewayError(Exception):
    """A refusal with a gRPC status name (`code`) and a message that names the field and the reason."""

    def __init__(self, code: str, message: str):
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown status {code}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]


def load_api_keys(path: str | os.PathLike | None, env_value: str | None = None) -> dict[str, str]:
    """API keys -> a short id for logs/metrics (the key's sha256 prefix; keys themselves are never logged).

    `path`: one key per line (blank lines and `#` comments skipped), e.g. a Kubernetes Secret mounted as a file;
    `env_value`: comma-separated keys. No key at all is an error: the gateway never runs open.
    """
    keys: list[str] = []
    if path:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"{p}: API key file not found")
        keys += [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if env_value:
        keys += [k.strip() for k in env_value.split(",") if k.strip()]
    if not keys:
        raise ValueError("no API keys: give --api-keys-file (one key per line) or GATEWAY_API_KEYS")
    return {k: hashlib.sha256(k.encode()).hexdigest()[:8] for k in keys}


def key_from_headers(headers: Iterable[tuple[str, str]]) -> str | None:
    """The API key from `authorization: Bearer KEY` (OpenAI SDK, NIM) or `api-key` / `x-api-key` metadata."""
    for name, value in headers:
        n = name.lower()
        if n == "authorization" and value.lower().startswith("bearer "):
            return value[7:].strip()
        if n in ("api-key", "x-api-key"):
            return value.strip()
    return None


def authenticate(keys: dict[str, str], headers: Iterable[tuple[str, str]]) -> str:
    """The caller's key id, or UNAUTHENTICATED naming what is missing."""
    key = key_from_headers(headers)
    if key is None:
        raise GatewayError(
            "UNAUTHENTICATED", "missing API key: send 'authorization: Bearer <key>' (or 'api-key: <key>')"
        )
    if key not in keys:
        raise GatewayError("UNAUTHENTICATED", "invalid API key")
    return keys[key]


class KeyLimiter:
    """At most `limit` concurrent requests + streams per key id (thread-safe; the gateway is one process)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.active: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key_id: str) -> None:
        with self._lock:
            n = self.active.get(key_id, 0)
            if n >= self.limit:
                raise GatewayError(
                    "RESOURCE_EXHAUSTED",
                    f"API key {key_id}: {n} requests/streams already active (max_streams_per_key {self.limit})",
                )
            self.active[key_id] = n + 1

    def release(self, key_id: str) -> None:
        with self._lock:
            self.active[key_id] = max(0, self.active.get(key_id, 1) - 1)


@dataclass
class CanaryRouter:
    """Picks the Triton version for each NEW session: `challenger` with probability `share`, else `champion`.

    A session keeps its version to the end (a stream's state lives in one version). "" means Triton's default.
    """

    champion: str = ""
    challenger: str = ""
    share: float = 0.0
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def pick(self) -> tuple[str, str]:
        """(Triton version, role) for a new session; role is 'challenger' or 'champion'."""
        if self.challenger and self.share > 0 and self._rng.random() < self.share:
            return self.challenger, "challenger"
        return self.champion, "champion"


def resolve_language(code: str, languages: tuple[str, ...]) -> str:
    """Riva/OpenAI language -> the model's LANG: exact locale, or a 2-letter code matching one locale
    ("es" -> "es-ES"). Without a language list the code passes through (Triton then refuses unknown ones)."""
    code = (code or "").strip()
    if not code:
        raise GatewayError("INVALID_ARGUMENT", "language_code: empty (give a locale such as en-US)")
    if not languages or code in languages:
        return code
    matches = [lang for lang in languages if lang.lower().split("-")[0] == code.lower()]
    if len(matches) == 1:
        return matches[0]
    raise GatewayError(
        "INVALID_ARGUMENT",
        f"language_code: unknown language {code!r} (the model knows {', '.join(sorted(languages))})",
    )


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    """`audio` at `rate` -> 16 kHz (soxr, the data stage's resampler); refuses rates outside 8-48 kHz."""
    if rate == MODEL_RATE:
        return audio
    if not MIN_RATE <= rate <= MAX_RATE:
        raise GatewayError(
            "INVALID_ARGUMENT",
            f"sample_rate_hertz: {rate} Hz is not supported (give {MIN_RATE}-{MAX_RATE} Hz; resampled to 16 kHz)",
        )
    import soxr

    return soxr.resample(audio, rate, MODEL_RATE).astype(np.float32)


def pcm16_to_float(data: bytes) -> np.ndarray:
    if len(data) % 2:
        raise GatewayError("INVALID_ARGUMENT", f"audio: LINEAR_PCM is 16-bit, got an odd {len(data)} bytes")
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0).copy()


def decode_audio(
    data: bytes, encoding: str = "", sample_rate: int = 0, field_name: str = "audio"
) -> tuple[np.ndarray, int]:
    """Request bytes -> (16 kHz mono float32, the input's rate). A container (WAV/FLAC/OGG: soundfile) carries
    its own rate, which must agree with a declared `sample_rate`; headerless bytes are LINEAR_PCM 16-bit
    little-endian mono at `sample_rate` (required). `encoding`: Riva's AudioEncoding name or "" (any)."""
    if not data:
        raise GatewayError("INVALID_ARGUMENT", f"{field_name}: empty (no audio bytes)")
    if encoding not in ("", "ENCODING_UNSPECIFIED", "LINEAR_PCM", "FLAC", "OGGOPUS"):
        raise GatewayError(
            "INVALID_ARGUMENT", f"encoding: {encoding} is not supported (LINEAR_PCM 16-bit or FLAC)"
        )
    if data[:4] in (b"RIFF", b"fLaC", b"OggS"):
        import soundfile as sf

        try:
            audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as e:
            raise GatewayError("INVALID_ARGUMENT", f"{field_name}: cannot decode ({e})") from None
        audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
        if sample_rate and sample_rate != rate:
            raise GatewayError(
                "INVALID_ARGUMENT",
                f"sample_rate_hertz: {sample_rate} Hz does not match the audio's own {rate} Hz",
            )
    else:
        if encoding in ("FLAC", "OGGOPUS"):
            raise GatewayError("INVALID_ARGUMENT", f"{field_name}: not a {encoding} stream (no header)")
        if not sample_rate:
            raise GatewayError(
                "INVALID_ARGUMENT", "sample_rate_hertz: required for headerless LINEAR_PCM audio"
            )
        audio, rate = pcm16_to_float(data), sample_rate
    if audio.size == 0:
        raise GatewayError("INVALID_ARGUMENT", f"{field_name}: empty (0 samples)")
    return np.ascontiguousarray(resample(audio, int(rate)), dtype=np.float32), int(rate)


class AudioBudget:
    """Bytes and seconds one request or stream may still send (max_request_bytes, max_audio_s)."""

    def __init__(self, cfg: GatewayConfig, stream: bool = False):
        self.max_bytes = cfg.max_request_bytes
        self.max_s, self.limit = (
            (cfg.max_stream_s, "max_stream_s") if stream else (cfg.max_audio_s, "max_audio_s")
        )
        self.stream = stream
        self.bytes = 0
        self.seconds = 0.0

    def add_bytes(self, n: int) -> None:
        """A request's bytes in all; a stream's per message (a stream is bounded by max_stream_s)."""
        self.bytes = n if self.stream else self.bytes + n
        if self.bytes > self.max_bytes:
            raise GatewayError(
                "RESOURCE_EXHAUSTED", f"audio: {self.bytes} bytes exceed max_request_bytes {self.max_bytes}"
            )

    def add_samples(self, n: int) -> None:
        self.seconds += n / MODEL_RATE
        if self.seconds > self.max_s:
            raise GatewayError(
                "RESOURCE_EXHAUSTED", f"audio: {self.seconds:.1f} s exceed {self.limit} {self.max_s:g}"
            )


def triton_error(message: str) -> GatewayError:
    """Triton's refusal of a request -> a named gateway error (model.py names input and reason)."""
    m = message
    if "max_audio_s" in m:
        return GatewayError("RESOURCE_EXHAUSTED", f"model refused the request: {m}")
    if "LANG" in m or "AUDIO" in m:
        return GatewayError("INVALID_ARGUMENT", f"model refused the request: {m}")
    return GatewayError("UNAVAILABLE", f"Triton: {m}")
