"""Triton python backend: cache-aware streaming ASR. Copied by export_triton into asr_streaming/<N>/model.py.

Triton's sequence batcher routes every request of a client stream (one correlation id) to this instance, in
order, with the control inputs START / END / READY / CORRID. The model keeps one `StreamState` (encoder caches,
RNNT decoder state, unconsumed samples) per CORRID: created on START (reading LANG), advanced by
`AsrModel.stream_step_batch` on every chunk, dropped on END or after `max_sequence_idle_us` without a request
(Triton frees the sequence slot on the same clock, but does not tell the model). The sequence batcher's `oldest`
strategy hands execute() requests of up to max_batch_size different sequences; the valid ones advance together
in one batched encoder + RNNT step (per-stream caches, prompts and hypotheses; token-identical to one stream at
a time). A bad request gets its own TritonError response; it never raises out of execute().
"""

import locale

# The backend stub starts Python without a UTF-8 locale; importing torch/NeMo then dies with an 'ascii'
# codec error. This must run before those imports (docs/SERVING.md).
try:
    locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
except locale.Error:
    pass

import time  # noqa: E402
from collections import OrderedDict  # noqa: E402

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from components.export_triton.backend_utils import config_param as _param  # noqa: E402
from components.export_triton.backend_utils import lang_tag_filter, model_settings  # noqa: E402

MODEL_RATE, MIN_RATE, MAX_RATE = 16000, 8000, 48000  # SAMPLE_RATE: other rates in range are resampled
_ENDED_MEMORY = 4096  # remember this many ended/expired ids, to say *why* a late chunk is refused


class _BadRequest(ValueError):
    pass


def _scalar(request, name: str, default=None):
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        if default is None:
            raise _BadRequest(f"missing control input {name} (send requests with a sequence id)")
        return default
    return t.as_numpy().reshape(-1)[0]


def _text_response(text: str):
    out = np.array([[text.encode("utf-8")]], dtype=np.object_)
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("TEXT", out)])


class TritonPythonModel:
    def initialize(self, args):
        from components.common.asr_infer import AsrModel

        self.model_config, nemo_path, meta, self.att_context_size, self.max_samples = model_settings(args)
        idle_us = self.model_config.get("sequence_batching", {}).get("max_sequence_idle_microseconds")
        self.idle_s = float(idle_us or _param(self.model_config, "max_sequence_idle_us", "60000000")) / 1e6
        t0 = time.time()
        self.asr = AsrModel.load(nemo_path)
        self.langs = set(self.asr.prompt_dictionary)
        self.tags = lang_tag_filter(self.model_config)
        # fail now on a bad att_context_size, and warm up (the first steps allocate and pick kernels: without
        # this the first client chunks would pay for it)
        lang = next(iter(sorted(self.langs)))
        warm = [self.asr.new_stream(lang, self.att_context_size) for _ in range(3)]
        self.asr.stream_step(warm[0], np.zeros(16000, np.float32), last=True)
        if hasattr(self.asr, "stream_step_batch"):
            self.asr.stream_step_batch(warm[1:], [np.zeros(8000, np.float32)] * 2, [False, True])
        self.max_chunk_s = float(_param(self.model_config, "max_chunk_s", "0.5"))
        self.max_stream_s = float(_param(self.model_config, "max_stream_s", "3600"))
        self.streams: dict[int, object] = {}  # CORRID -> StreamState
        self.rates: dict[int, int] = {}  # CORRID -> its SAMPLE_RATE
        self.resamplers: dict[int, object] = {}  # CORRID -> soxr.ResampleStream (rate != 16 kHz only)
        self.sent_s: dict[int, float] = {}  # CORRID -> audio seconds received (the per-stream budget)
        self.last_seen: dict[int, float] = {}
        self.ended: OrderedDict[int, str] = OrderedDict()  # CORRID -> why it is gone
        # several streams per encoder/decoder pass when asr_infer has the batched step (token-identical)
        self.batched = hasattr(self.asr, "stream_step_batch")
        pb_utils.Logger.log_info(
            f"asr_streaming v{args['model_version']} loaded {nemo_path} in {time.time() - t0:.1f}s "
            f"(sha256 {meta.get('sha256', '?')[:12]}, att_context_size {self.att_context_size}, "
            f"idle timeout {self.idle_s:.0f}s, batched steps {self.batched})"
        )

    def _forget(self, corrid: int, why: str) -> None:
        self.streams.pop(corrid, None)
        self.last_seen.pop(corrid, None)
        self.rates.pop(corrid, None)
        self.resamplers.pop(corrid, None)
        self.sent_s.pop(corrid, None)
        self.ended[corrid] = why
        self.ended.move_to_end(corrid)
        while len(self.ended) > _ENDED_MEMORY:
            self.ended.popitem(last=False)

    def _chunk(self, request) -> np.ndarray:
        t = pb_utils.get_input_tensor_by_name(request, "AUDIO_CHUNK")
        if t is None:
            raise _BadRequest("missing input AUDIO_CHUNK")
        a = t.as_numpy()
        if a.dtype != np.float32:
            raise _BadRequest(f"AUDIO_CHUNK: expected FP32 samples, got {a.dtype}")
        if a.ndim != 2 or a.shape[0] != 1:
            raise _BadRequest(f"AUDIO_CHUNK: expected shape [1, samples], got {list(a.shape)}")
        if a.shape[1] > self.max_samples:
            raise _BadRequest(f"AUDIO_CHUNK: {a.shape[1] / 16000:.1f} s is longer than max_audio_s")
        if a.shape[1] > self.max_chunk_s * MAX_RATE:
            raise _BadRequest(self._too_long(a.shape[1], MAX_RATE))
        if not np.isfinite(a).all():
            raise _BadRequest("AUDIO_CHUNK: contains NaN or Inf")
        return np.ascontiguousarray(a[0])

    def _too_long(self, n: int, rate: int) -> str:
        return (
            f"AUDIO_CHUNK: {n / rate:.2f} s is longer than max_chunk_s ({self.max_chunk_s:g} s): one chunk would "
            "hold every other stream for its encoder steps; send shorter chunks (the gateway cuts them)"
        )

    def _rate(self, request, corrid: int, start: bool) -> int:
        """SAMPLE_RATE of the stream: given on START (16 kHz when absent); later requests may repeat it."""
        t = pb_utils.get_input_tensor_by_name(request, "SAMPLE_RATE")
        rate = int(t.as_numpy().reshape(-1)[0]) if t is not None and t.as_numpy().size else None
        if start:
            rate = rate or MODEL_RATE
            if not MIN_RATE <= rate <= MAX_RATE:
                raise _BadRequest(
                    f"SAMPLE_RATE: {rate} Hz is not supported ({MIN_RATE}-{MAX_RATE} Hz, resampled to 16 kHz)"
                )
            return rate
        known = self.rates.get(corrid, MODEL_RATE)
        if rate is not None and rate != known:
            raise _BadRequest(f"SAMPLE_RATE: {rate} Hz differs from the stream's {known} Hz (set on START)")
        return known

    def _prepare(self, request, corrid: int) -> tuple[object, np.ndarray, bool]:
        """Validate one chunk of stream `corrid` -> (its StreamState, samples, END?); _BadRequest names the
        input and the reason. Nothing about the stream changes unless the request is valid (a START creates
        the stream)."""
        start = bool(int(_scalar(request, "START")))
        end = bool(int(_scalar(request, "END")))
        chunk = self._chunk(request)
        rate = self._rate(request, corrid, start)
        if chunk.size > self.max_chunk_s * rate:
            raise _BadRequest(self._too_long(chunk.size, rate))
        if not start and corrid in self.streams:
            sent = self.sent_s.get(corrid, 0.0) + chunk.size / rate
            if sent > self.max_stream_s:
                self._forget(
                    corrid,
                    f"ended: its audio exceeded the per-stream budget max_stream_s ({self.max_stream_s:g} s)",
                )
                raise _BadRequest(
                    f"sequence {corrid}: {sent:.1f} s of audio exceed max_stream_s ({self.max_stream_s:g} s); "
                    "the stream is ended: start a new one"
                )
        if start:
            t = pb_utils.get_input_tensor_by_name(request, "LANG")
            if t is None or t.as_numpy().size != 1:
                raise _BadRequest(f"sequence {corrid}: the START request must carry one LANG value")
            v = t.as_numpy().reshape(-1)[0]
            lang = v.decode("utf-8") if isinstance(v, bytes) else str(v)
            if lang not in self.langs:
                raise _BadRequest(f"LANG: unknown language {lang!r} (not in the model's prompt dictionary)")
            self.streams[corrid] = self.asr.new_stream(lang, self.att_context_size)
            self.ended.pop(corrid, None)
            self.rates[corrid] = rate
            self.sent_s[corrid] = 0.0
            self.resamplers.pop(corrid, None)
            if rate != MODEL_RATE:
                import soxr

                self.resamplers[corrid] = soxr.ResampleStream(rate, MODEL_RATE, 1, dtype="float32")
        state = self.streams.get(corrid)
        if state is None:
            why = self.ended.get(corrid, "never started (no START request)")
            raise _BadRequest(f"unknown sequence {corrid}: {why}")
        self.last_seen[corrid] = time.monotonic()
        self.sent_s[corrid] = self.sent_s.get(corrid, 0.0) + chunk.size / rate
        resampler = self.resamplers.get(corrid)
        if resampler is not None:
            chunk = np.ascontiguousarray(resampler.resample_chunk(chunk, last=end), dtype=np.float32)
        return state, chunk, end

    def _advance(self, batch: list[tuple[int, int, object, np.ndarray, bool]], responses: list) -> None:
        """Advance the streams of `batch` [(request index, corrid, state, samples, END)], one chunk each, with
        one `stream_step_batch` call (one encoder + decoder pass per group of chunks instead of per stream)."""
        if not batch:
            return
        if len(batch) == 1 or not self.batched:
            for i, corrid, state, chunk, end in batch:
                try:
                    responses[i] = self._finish(corrid, self.asr.stream_step(state, chunk, last=end), end)
                except Exception as e:  # the state may be half-advanced: end the stream, not serve garbage
                    responses[i] = self._failed(corrid, e)
            return
        try:
            texts = self.asr.stream_step_batch(
                [b[2] for b in batch], [b[3] for b in batch], [b[4] for b in batch]
            )
        except Exception as e:  # inputs were validated, so this is a model fault: every state may be touched
            for i, corrid, *_ in batch:
                responses[i] = self._failed(corrid, e)
            return
        for (i, corrid, _, _, end), text in zip(batch, texts, strict=True):
            responses[i] = self._finish(corrid, text, end)

    def _finish(self, corrid: int, text: str, end: bool):
        if end:
            self._forget(corrid, "already ended (END was sent)")
        return _text_response(self.tags(text))

    def _failed(self, corrid: int, e: Exception):
        self._forget(corrid, f"failed earlier ({type(e).__name__}: {e})")
        msg = f"sequence {corrid}: streaming step failed: {type(e).__name__}: {e}"
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(msg))

    def execute(self, requests):
        """The sequence batcher hands over up to max_batch_size requests, each of a different sequence: each is
        validated on its own (a bad one gets its error response), then all valid ones advance together."""
        responses: list = [None] * len(requests)
        batch: list = []
        for i, request in enumerate(requests):
            try:
                if not int(_scalar(request, "READY", 1)):
                    responses[i] = _text_response("")  # a padding slot, not a client request
                    continue
                corrid = int(_scalar(request, "CORRID"))
                if any(b[1] == corrid for b in batch):  # never two chunks of one stream in one step
                    self._advance(batch, responses)
                    batch = []
                batch.append((i, corrid, *self._prepare(request, corrid)))
            except _BadRequest as e:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))
            except Exception as e:  # never let one request take the model down
                msg = f"internal error: {type(e).__name__}: {e}"
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(msg))
        self._advance(batch, responses)
        now = time.monotonic()
        for corrid in [c for c, t in self.last_seen.items() if now - t > self.idle_s]:
            self._forget(corrid, f"expired after {self.idle_s:.0f}s without a request")
        return responses

    def finalize(self):
        self.streams.clear()
        self.asr = None
