"""Riva `RivaSpeechRecognition` over grpc.aio: `Recognize` -> the offline model; `StreamingRecognize` -> the
streaming model (one Triton sequence per client stream, interim results when asked, the final result when the
client half-closes). Refusals are gRPC statuses with the `GatewayError`'s message."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from typing import TYPE_CHECKING

import grpc
import numpy as np
from riva.client.proto import riva_asr_pb2 as rasr
from riva.client.proto import riva_asr_pb2_grpc as rasr_grpc
from riva.client.proto import riva_audio_pb2 as raudio

from serving.gateway.core import (
    MODEL_RATE,
    AudioBudget,
    GatewayConfig,
    GatewayError,
    decode_audio,
    pcm16_to_float,
    resample,
    resolve_language,
)
from serving.gateway.triton import Served, TritonStream

if TYPE_CHECKING:
    from serving.gateway.app import Gateway

log = logging.getLogger(__name__)

ENCODINGS = {v: k for k, v in raudio.AudioEncoding.items()}
_BACKGROUND: set = set()  # clean-up tasks still running (kept referenced until done)


def riva_config(cfg: rasr.RecognitionConfig, gw: Gateway) -> tuple[str, str, int]:
    """(LANG, encoding name, sample rate) of a RecognitionConfig, or INVALID_ARGUMENT naming the field."""
    enc = ENCODINGS.get(cfg.encoding, str(cfg.encoding))
    if cfg.audio_channel_count > 1:
        raise GatewayError("INVALID_ARGUMENT", f"audio_channel_count: {cfg.audio_channel_count} (mono only)")
    return resolve_language(cfg.language_code, gw.cfg.languages), enc, int(cfg.sample_rate_hertz)


def strip_wav(data: bytes) -> tuple[bytes, int]:
    """A streamed WAV's first message may carry the RIFF header: -> (PCM bytes, its rate)."""
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


class StreamAudio:
    """A stream's `audio_content` messages -> 16 kHz float32: the first may carry a WAV header (its rate must
    agree with the config's); other rates in range are resampled by one soxr stream; the budget is checked."""

    def __init__(self, cfg: GatewayConfig, rate: int):
        self.rate = rate
        self.budget = AudioBudget(cfg, stream=True)
        self.resampler = None
        self.started = False

    def _first(self, data: bytes) -> bytes:
        if data[:4] == b"RIFF":
            data, wav_rate = strip_wav(data)
            if self.rate and wav_rate != self.rate:
                raise GatewayError(
                    "INVALID_ARGUMENT",
                    f"sample_rate_hertz: {self.rate} Hz does not match the audio's own {wav_rate} Hz",
                )
            self.rate = self.rate or wav_rate
        if not self.rate:
            raise GatewayError("INVALID_ARGUMENT", "sample_rate_hertz: required for LINEAR_PCM")
        resample(np.zeros(1, np.float32), self.rate)  # refuses unsupported rates by name
        if self.rate != MODEL_RATE:
            import soxr

            self.resampler = soxr.ResampleStream(self.rate, MODEL_RATE, 1, dtype="float32")
        self.started = True
        return data

    def decode(self, data: bytes) -> np.ndarray:
        if not self.started:
            data = self._first(data)
        self.budget.add_bytes(len(data))
        audio = pcm16_to_float(data)
        if self.resampler is not None:
            audio = self.resampler.resample_chunk(audio)
        self.budget.add_samples(audio.size)
        return audio

    def flush(self) -> np.ndarray:
        """The resampler's last samples (none at 16 kHz); an empty stream is refused here."""
        if not self.started:
            raise GatewayError("INVALID_ARGUMENT", "audio_content: empty stream (no audio sent)")
        if self.resampler is None:
            return np.zeros(0, np.float32)
        return self.resampler.resample_chunk(np.zeros(0, np.float32), last=True)


def _streaming_encoding(enc: str) -> None:
    if enc not in ("LINEAR_PCM", "ENCODING_UNSPECIFIED"):
        raise GatewayError(
            "INVALID_ARGUMENT",
            f"encoding: {enc} is not supported when streaming (LINEAR_PCM 16-bit; FLAC for Recognize)",
        )


class RivaAsr(rasr_grpc.RivaSpeechRecognitionServicer):
    def __init__(self, gw: Gateway):
        self.gw = gw

    async def _refuse(self, context, method: str, e: GatewayError):
        self.gw.metrics.requests.labels("riva", method, e.code).inc()
        log.info("riva %s refused: %s %s", method, e.code, e.message)
        await context.abort(grpc.StatusCode[e.code], e.message)

    def _done(self, method: str, t0: float, served: Served) -> None:
        m, dt = self.gw.metrics, time.perf_counter() - t0
        m.requests.labels("riva", method, "OK").inc()
        m.latency.labels("riva", method).observe(dt)
        m.audio.labels("riva").inc(served.audio_s)
        if served.audio_s > 0:
            m.rtf.labels("riva").observe(dt / served.audio_s)

    async def Recognize(self, request, context):  # noqa: N802 (the proto's name)
        gw, t0, key_id = self.gw, time.perf_counter(), None
        try:
            key_id = gw.admit(context.invocation_metadata())
            lang, enc, rate = riva_config(request.config, gw)
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
            lang, enc, rate = riva_config(sc.config, gw)
            _streaming_encoding(enc)
            stream = gw.triton.stream(lang)
            await context.send_initial_metadata((("x-model-role", stream.role),))
            audio = StreamAudio(gw.cfg, rate)
            async for req in request_iterator:
                for text in await stream.feed(audio.decode(req.audio_content)):
                    if sc.interim_results:  # one interim result per chunk_s of audio served
                        yield self._result(text, False, stream)
            await stream.feed(audio.flush())
            text = await stream.finish()
            context.set_trailing_metadata(
                (("x-model-version", stream.served_version), ("x-model-role", stream.role))
            )
            served = Served(text, stream.served_version, stream.role, stream.samples / MODEL_RATE)
            self._done("StreamingRecognize", t0, served)
            yield self._result(text, True, stream)
        except GatewayError as e:
            if stream is not None:
                await stream.abandon()
            await self._refuse(context, "StreamingRecognize", e)
        finally:
            if stream is not None:
                # finished: end the Triton call; cancelled mid-stream: free its Triton sequence now, not after
                # 60 s idle. In the background: the client has its answer (or is gone)
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
