"""Triton python backend: offline (whole-utterance) ASR. Copied by export_triton into asr_offline/<N>/model.py.

All requests of one execute() (grouped by the dynamic batcher) become one batched `AsrModel.transcribe` call,
the same code evaluate_wer scored, so the served text is token-identical to the evaluated one. A bad request
gets its own TritonError response; it never raises out of execute() (that would fail the whole batch).
"""

import locale

# The backend stub starts Python without a UTF-8 locale; importing torch/NeMo then dies with an 'ascii'
# codec error. This must run before those imports (docs/SERVING.md).
try:
    locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
except locale.Error:
    pass

import time  # noqa: E402

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from components.export_triton.backend_utils import lang_tag_filter, model_settings  # noqa: E402


class _BadRequest(ValueError):
    pass


def _strings(tensor, name: str) -> list[str]:
    if tensor is None:
        raise _BadRequest(f"missing input {name}")
    out = []
    for v in tensor.as_numpy().reshape(-1):
        out.append(v.decode("utf-8") if isinstance(v, bytes) else str(v))
    return out


def _text_response(texts: list[str]):
    out = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("TEXT", out)])


class TritonPythonModel:
    def initialize(self, args):
        from components.common.asr_infer import AsrModel

        self.model_config, nemo_path, meta, self.att_context_size, self.max_samples = model_settings(args)
        t0 = time.time()
        self.asr = AsrModel.load(nemo_path)
        if self.asr.sample_rate != 16000:
            raise pb_utils.TritonModelException(
                f"{nemo_path}: model rate {self.asr.sample_rate} Hz, expected 16000"
            )
        self.langs = set(self.asr.prompt_dictionary)
        self.tags = lang_tag_filter(self.model_config)
        pb_utils.Logger.log_info(
            f"asr_offline v{args['model_version']} loaded {nemo_path} in {time.time() - t0:.1f}s "
            f"(sha256 {meta.get('sha256', '?')[:12]}, att_context_size {self.att_context_size})"
        )

    def _parse(self, request) -> tuple[list[np.ndarray], list[str]]:
        """One request -> its utterances and languages, or _BadRequest naming the input and the reason."""
        audio_t = pb_utils.get_input_tensor_by_name(request, "AUDIO")
        if audio_t is None:
            raise _BadRequest("missing input AUDIO")
        audio = audio_t.as_numpy()
        if audio.dtype != np.float32:
            raise _BadRequest(f"AUDIO: expected FP32 samples, got {audio.dtype}")
        if audio.ndim != 2:
            raise _BadRequest(f"AUDIO: expected shape [batch, samples], got {list(audio.shape)}")
        if audio.shape[1] == 0:
            raise _BadRequest("AUDIO: empty (0 samples)")
        if audio.shape[1] > self.max_samples:
            raise _BadRequest(f"AUDIO: {audio.shape[1] / 16000:.1f} s is longer than max_audio_s")
        if not np.isfinite(audio).all():
            raise _BadRequest("AUDIO: contains NaN or Inf")
        langs = _strings(pb_utils.get_input_tensor_by_name(request, "LANG"), "LANG")
        if len(langs) == 1 and audio.shape[0] > 1:
            langs = langs * audio.shape[0]
        if len(langs) != audio.shape[0]:
            raise _BadRequest(f"LANG: {len(langs)} values for {audio.shape[0]} utterances")
        for lang in langs:
            if lang not in self.langs:
                raise _BadRequest(f"LANG: unknown language {lang!r} (not in the model's prompt dictionary)")
        return [np.ascontiguousarray(row) for row in audio], langs

    def execute(self, requests):
        responses: list = [None] * len(requests)
        audios, langs, owners = [], [], []  # owners[i] = (request index, rows)
        for i, request in enumerate(requests):
            try:
                a, lg = self._parse(request)
            except _BadRequest as e:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))
                continue
            owners.append((i, len(a)))
            audios.extend(a)
            langs.extend(lg)
        if audios:
            try:
                texts = self._transcribe(audios, langs)
            except Exception:  # retry one by one so a request that breaks the model fails alone
                pos = 0
                for i, rows in owners:
                    try:
                        responses[i] = _text_response(
                            self._transcribe(audios[pos : pos + rows], langs[pos : pos + rows])
                        )
                    except Exception as e:
                        msg = f"transcription failed: {type(e).__name__}: {e}"
                        responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(msg))
                    pos += rows
            else:
                pos = 0
                for i, rows in owners:
                    responses[i] = _text_response(texts[pos : pos + rows])
                    pos += rows
        return responses

    def _transcribe(self, audios: list[np.ndarray], langs: list[str]) -> list[str]:
        texts = self.asr.transcribe(
            audios, langs, batch_size=len(audios), att_context_size=self.att_context_size
        )
        return [self.tags(t) for t in texts]

    def finalize(self):
        self.asr = None
