"""Triton python backend: cache-aware streaming ASR. Copied by export_triton into asr_streaming/<N>/model.py.

Triton's sequence batcher routes every request of a client stream (one correlation id) to this instance, in
order, with the control inputs START / END / READY / CORRID. The model keeps one `StreamState` (encoder caches,
RNNT decoder state, unconsumed samples) per CORRID: created on START (reading LANG), advanced by
`AsrModel.stream_step` on every chunk, dropped on END or after `max_sequence_idle_us` without a request (Triton
frees the sequence slot on the same clock, but does not tell the model). A bad request gets its own TritonError
response; it never raises out of execute().
"""

import locale

# The backend stub starts Python without a UTF-8 locale; importing torch/NeMo then dies with an 'ascii'
# codec error. This must run before those imports (../shared/DESIGN.md, Triton facts).
try:
    locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
except locale.Error:
    pass

import time  # noqa: E402
from collections import OrderedDict  # noqa: E402

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from components.export_triton.backend_utils import config_param as _param  # noqa: E402
from components.export_triton.backend_utils import model_settings  # noqa: E402

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
        self.asr.new_stream(next(iter(sorted(self.langs))), self.att_context_size)  # fail now on a bad att
        self.streams: dict[int, object] = {}  # CORRID -> StreamState
        self.last_seen: dict[int, float] = {}
        self.ended: OrderedDict[int, str] = OrderedDict()  # CORRID -> why it is gone
        pb_utils.Logger.log_info(
            f"asr_streaming v{args['model_version']} loaded {nemo_path} in {time.time() - t0:.1f}s "
            f"(sha256 {meta.get('sha256', '?')[:12]}, att_context_size {self.att_context_size}, "
            f"idle timeout {self.idle_s:.0f}s)"
        )

    def _forget(self, corrid: int, why: str) -> None:
        self.streams.pop(corrid, None)
        self.last_seen.pop(corrid, None)
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
        if not np.isfinite(a).all():
            raise _BadRequest("AUDIO_CHUNK: contains NaN or Inf")
        return np.ascontiguousarray(a[0])

    def _step(self, request) -> str:
        """One chunk of one stream -> the text so far (or _BadRequest naming the input and the reason)."""
        if not int(_scalar(request, "READY", 1)):
            return ""  # a padding slot, not a client request
        corrid = int(_scalar(request, "CORRID"))
        start = bool(int(_scalar(request, "START")))
        end = bool(int(_scalar(request, "END")))
        chunk = self._chunk(request)
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
        state = self.streams.get(corrid)
        if state is None:
            why = self.ended.get(corrid, "never started (no START request)")
            raise _BadRequest(f"unknown sequence {corrid}: {why}")
        self.last_seen[corrid] = time.monotonic()
        try:
            text = self.asr.stream_step(state, chunk, last=end)
        except Exception as e:  # the state may be half-advanced: end the stream rather than serve garbage
            self._forget(corrid, f"failed earlier ({type(e).__name__}: {e})")
            raise _BadRequest(f"sequence {corrid}: streaming step failed: {type(e).__name__}: {e}") from e
        if end:
            self._forget(corrid, "already ended (END was sent)")
        return text

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(_text_response(self._step(request)))
            except _BadRequest as e:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))))
            except Exception as e:  # never let one request take the model down
                msg = f"internal error: {type(e).__name__}: {e}"
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(msg)))
        now = time.monotonic()
        for corrid in [c for c, t in self.last_seen.items() if now - t > self.idle_s]:
            self._forget(corrid, f"expired after {self.idle_s:.0f}s without a request")
        return responses

    def finalize(self):
        self.streams.clear()
        self.asr = None
