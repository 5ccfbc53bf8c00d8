"""The one inference implementation: evaluate_wer scores with it and the Triton python backend serves with it.

Sharing it is what makes a served transcript token-identical to the one the gate approved. Two modes:

* offline (`AsrModel.transcribe`): batched `model.forward(..., prompt_indices=...)` + RNNT greedy decoding.
  `model.transcribe()` is avoided on purpose: it leaves submodules in train mode and cannot take a language
  per utterance (docs/SERVING.md).
* cache-aware streaming (`AsrModel.new_stream` / `AsrModel.stream_step`): audio arrives in pieces of any size
  (a server receives whatever the client sends). Mel frames are computed incrementally and are the same frames
  the preprocessor computes on the whole file; they are cut into encoder chunks exactly like NeMo's
  `CacheAwareStreamingAudioBuffer(pad_and_drop_preencoded=False)` and fed to `model.conformer_stream_step`.
  The result is token-identical to NeMo's own streaming simulation of the whole file (tests check this).

* batched streaming (`AsrModel.stream_step_batch`): several streams advanced by one piece each, their
  encoder chunks run together in one batch (per-stream caches stacked along the batch dimension, per-stream
  language prompts, per-stream RNNT hypotheses), as a Triton sequence batcher does. Token-identical to calling
  `stream_step` on each stream alone (tests check this).

The model object carries one global inference setting, the encoder's attention context (`att_context_size`);
every call sets it under one lock before it runs, so streams of different lookaheads can be interleaved. The
language prompt is applied here per batch row (NeMo's `conformer_stream_step` only knows one prompt per call,
set on the model by `set_inference_prompt`), so streams of different languages share a batch.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

# Feature normalisations that are the identity in NeMo's normalize_batch: only these can be computed
# incrementally (per_feature/all_features need statistics of the whole utterance).
_IDENTITY_NORMALIZE = {None, "", "NA", "na", "None", "none"}
# The mel projection of a few frames at a time must round exactly like the preprocessor's projection of the
# whole file. On x86 MKL, matmuls narrower than 12 columns take a differently rounded path (measured: 1e-6
# differences), so narrow pieces are zero-padded to this width and cut back.
_MIN_MEL_COLUMNS = 32


@dataclass
class StreamState:
    """Everything one stream carries between `stream_step` calls (one client sequence on the server)."""

    lang: str
    prompt_index: int
    att_context_size: list[int]
    # audio -> features
    n_samples: int = 0  # raw samples received so far
    last_raw: torch.Tensor | None = None  # last raw sample, for pre-emphasis of the next piece
    padded: torch.Tensor | None = None  # pre-emphasised, centre-padded samples from `padded_offset` on
    padded_offset: int = 0
    n_frames: int = 0  # mel frames computed so far (absolute count)
    feats: torch.Tensor | None = None  # [n_mels, k] frames from `feats_offset` on (older ones are dropped)
    feats_offset: int = 0
    # features -> encoder chunks
    buffer_idx: int = 0  # first frame of the next encoder chunk (CacheAwareStreamingAudioBuffer.buffer_idx)
    step: int = 0
    caches: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    hypotheses: list[Any] | None = None
    pred_out: list[Any] | None = None
    text: str = ""
    finished: bool = False
    chunks: list[int] = field(default_factory=list)  # feature frames of each chunk fed (diagnostics)


class AsrModel:
    """A restored NeMo prompt-RNNT model in eval mode plus the streaming/offline logic around it."""

    def __init__(self, model: Any, device: str):
        self.model = model
        self.device = torch.device(device)
        self._lock = threading.RLock()
        enc = model.encoder
        self._default_att = [int(v) for v in enc.att_context_size]
        self._att_all = [
            [int(v) for v in a] for a in getattr(enc, "att_context_size_all", [self._default_att])
        ]
        self._feat = model.preprocessor.featurizer
        self._stream_check: str | None = self._streaming_unsupported_reason()
        # Text maps the fine-tune trained with (e.g. el_final_sigma: ς -> σ for a tokenizer without ς), stored
        # in the .nemo's config; every transcript is restored to the user's spelling (components.common.text).
        self.text_maps: list[str] = [str(m) for m in (model.cfg.get("text_maps") or [])]

    def _restore(self, text: str, lang: str) -> str:
        if not self.text_maps:
            return text
        from components.common.text import restore_after_decoding

        return restore_after_decoding(text, lang, self.text_maps)

    # ---------------------------------------------------------------- loading and properties
    @classmethod
    def load(cls, path: str, device: str | None = None) -> AsrModel:
        """Restore a `.nemo` (any NeMo ASR class with a prompt; the class comes from the checkpoint)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model file not found: {path}")
        threads = os.environ.get("ASR_THREADS")
        if threads:
            torch.set_num_threads(int(threads))
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        from nemo.collections.asr.models import ASRModel

        model = ASRModel.restore_from(path, map_location=torch.device(device))
        model.eval()
        return cls(model, device)

    @property
    def sample_rate(self) -> int:
        return int(self.model.cfg.sample_rate)

    @property
    def prompt_dictionary(self) -> dict[str, int]:
        # read once: walking the OmegaConf dict costs ~3 ms (Nemotron has ~90 keys), once per new stream
        if getattr(self, "_prompts", None) is None:
            pd = self.model.cfg.model_defaults.get("prompt_dictionary") or {}
            self._prompts = {str(k): int(v) for k, v in pd.items()}
        return dict(self._prompts)

    @property
    def att_context_sizes(self) -> list[list[int]]:
        return [list(a) for a in self._att_all]

    @property
    def default_att_context_size(self) -> list[int]:
        return list(self._default_att)

    def latency_ms(self, att_context_size: list[int] | None = None) -> float:
        """Algorithmic latency of streaming at `att_context_size`: the audio one steady-state encoder chunk
        covers (NeMo's `streaming_cfg.shift_size`, in mel frames, times the hop), i.e. how long the first
        sample of a chunk waits for the chunk to be complete. For chunked-limited attention this is
        (right context + 1) x subsampling factor x hop: [56,3] -> 4 x 8 x 10 ms = 320 ms on Nemotron.
        Compute time comes on top of it.
        """
        att = self._check_att(att_context_size)
        with self._lock:
            self._use_att(att)
            shift = self.model.encoder.streaming_cfg.shift_size
            frames = int(shift[1] if isinstance(shift, (list, tuple)) else shift)
        return frames * int(self._feat.hop_length) * 1000.0 / self.sample_rate

    # ---------------------------------------------------------------- shared settings (under the lock)
    def _prompt_index(self, lang: str) -> int:
        pd = self.prompt_dictionary
        if lang not in pd:
            raise ValueError(
                f"unknown language '{lang}': not a key of the model's prompt_dictionary {sorted(pd)}"
            )
        return pd[lang]

    def _check_att(self, att_context_size: list[int] | None) -> list[int]:
        att = list(self._default_att if att_context_size is None else att_context_size)
        att = [int(v) for v in att]
        if att not in self._att_all:
            raise ValueError(
                f"att_context_size {att} is not supported by this model; supported: {self._att_all}"
            )
        return att

    def _use_att(self, att: list[int]) -> None:
        enc = self.model.encoder
        if [int(v) for v in enc.att_context_size] != att or enc.streaming_cfg is None:
            enc.set_default_att_context_size(att)  # also recomputes encoder.streaming_cfg

    def _streaming_unsupported_reason(self) -> str | None:
        f = self._feat
        if type(f).__name__ != "FilterbankFeatures":
            return f"preprocessor featurizer {type(f).__name__} is not FilterbankFeatures"
        if getattr(f, "exact_pad", False):
            return "preprocessor exact_pad=True"
        if getattr(f, "frame_splicing", 1) != 1:
            return "preprocessor frame_splicing != 1"
        if f.normalize not in _IDENTITY_NORMALIZE:
            return f"preprocessor normalize={f.normalize!r} needs whole-utterance statistics"
        if not hasattr(self.model, "conformer_stream_step") or not hasattr(
            self.model.encoder, "streaming_cfg"
        ):
            return "the encoder is not a cache-aware streaming encoder"
        return None

    # ---------------------------------------------------------------- offline
    def transcribe(
        self,
        audios: list[np.ndarray],
        langs: list[str],
        batch_size: int = 16,
        att_context_size: list[int] | None = None,
    ) -> list[str]:
        """Offline transcripts of 16 kHz mono float32 arrays, one language per utterance.

        The encoder runs with `att_context_size` (default: the model's default) so offline sees the same
        attention context as streaming at that lookahead.
        """
        if len(audios) != len(langs):
            raise ValueError(f"got {len(audios)} audios but {len(langs)} langs")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        idx = [self._prompt_index(lang) for lang in langs]
        att = self._check_att(att_context_size)
        arrays = [_as_mono_float32(a, i) for i, a in enumerate(audios)]
        out = [""] * len(arrays)
        # Longest first so each batch holds similar lengths (less padding); results go back in input order.
        order = sorted((i for i in range(len(arrays)) if arrays[i].size), key=lambda i: -arrays[i].size)
        with self._lock, torch.inference_mode():
            self._use_att(att)
            for start in range(0, len(order), batch_size):
                part = order[start : start + batch_size]
                lens = torch.tensor([arrays[i].size for i in part], dtype=torch.long, device=self.device)
                sig = torch.zeros(len(part), int(lens.max()), dtype=torch.float32, device=self.device)
                for row, i in enumerate(part):
                    sig[row, : arrays[i].size] = torch.from_numpy(arrays[i])
                prompts = torch.tensor([idx[i] for i in part], dtype=torch.long, device=self.device)
                enc, enc_len = self.model.forward(
                    input_signal=sig, input_signal_length=lens, prompt_indices=prompts
                )
                hyps = self.model.decoding.rnnt_decoder_predictions_tensor(
                    encoder_output=enc, encoded_lengths=enc_len, return_hypotheses=False
                )
                if isinstance(hyps, tuple):  # older NeMo returned (best, all)
                    hyps = hyps[0]
                for row, i in enumerate(part):
                    out[i] = self._restore(_text_of(hyps[row]), langs[i])
        return out

    # ---------------------------------------------------------------- streaming
    def new_stream(self, lang: str, att_context_size: list[int] | None = None) -> StreamState:
        """A fresh stream for one utterance/client sequence in `lang` at `att_context_size`."""
        if self._stream_check:
            raise NotImplementedError(f"streaming is not supported for this model: {self._stream_check}")
        att = self._check_att(att_context_size)
        state = StreamState(lang=lang, prompt_index=self._prompt_index(lang), att_context_size=att)
        with self._lock:
            self._use_att(att)
            state.caches = tuple(self.model.encoder.get_initial_cache_state(batch_size=1, device=self.device))
        return state

    def stream_step(self, state: StreamState, audio: np.ndarray, last: bool) -> str:
        """Feed the next piece of audio (any length, may be empty); returns the full text so far.

        With `last=True` the stream is flushed (the remaining frames are emitted and decoded) and closed.
        """
        if state.finished:
            raise ValueError("stream_step called on a finished stream (last=True was already sent)")
        piece = _as_mono_float32(audio, 0)
        with self._lock, torch.inference_mode():
            self._append_features(state, piece, last)
            self._use_att(state.att_context_size)
            for chunk, length, drop, keep_all in self._next_chunks(state, last):
                self._run_chunks([state], chunk, length, drop, keep_all)
        state.finished = last
        return state.text

    def stream_step_batch(
        self, states: list[StreamState], audios: list[np.ndarray], lasts: list[bool]
    ) -> list[str]:
        """Advance several streams by one piece of audio each; returns each stream's full text so far.

        `states[i]` receives `audios[i]` (any length, may be empty) with `lasts[i]` meaning the same as
        `stream_step`'s `last`. The result is token-identical to `[stream_step(s, a, l) for s, a, l in ...]`
        but the encoder and decoder run once per group of chunks instead of once per stream: a piece may yield
        zero, one or several encoder chunks per stream; the k-th chunks of all streams are grouped by shape
        (a stream's first chunk is narrower than its later ones; a final chunk is cut short) and by lookahead,
        and each group runs as one batch with per-stream caches, language prompts and RNNT hypotheses.
        Streams may differ in language, lookahead, length and progress. A state may appear only once per call.
        """
        n = len(states)
        if len(audios) != n or len(lasts) != n:
            raise ValueError(
                f"got {n} states, {len(audios)} audios and {len(lasts)} lasts: one of each per stream"
            )
        if len({id(s) for s in states}) != n:
            raise ValueError("a stream appears more than once in one stream_step_batch call")
        for i, st in enumerate(states):
            if st.finished:
                raise ValueError(
                    f"stream #{i}: stream_step_batch called on a finished stream (last=True was sent)"
                )
        pieces = [_as_mono_float32(a, i) for i, a in enumerate(audios)]
        with self._lock, torch.inference_mode():
            by_att: dict[tuple[int, ...], list[int]] = {}
            for i, (st, piece, last) in enumerate(zip(states, pieces, lasts, strict=True)):
                self._append_features(st, piece, bool(last))
                by_att.setdefault(tuple(st.att_context_size), []).append(i)
            for att, ix in by_att.items():
                self._use_att(list(att))
                # Cutting is per stream and only reads that stream's features, so all chunks can be cut first.
                queues = {i: list(self._next_chunks(states[i], bool(lasts[i]))) for i in ix}
                for k in range(max((len(q) for q in queues.values()), default=0)):
                    groups: dict[tuple, list[int]] = {}
                    for i in ix:
                        if k < len(queues[i]):
                            x, _, drop, keep_all = queues[i][k]
                            groups.setdefault((tuple(x.shape), drop, keep_all), []).append(i)
                    for (_, drop, keep_all), rows in groups.items():
                        chunk = torch.cat([queues[i][k][0] for i in rows], dim=0)
                        length = torch.cat([queues[i][k][1] for i in rows], dim=0)
                        self._run_chunks([states[i] for i in rows], chunk, length, drop, keep_all)
            for st, last in zip(states, lasts, strict=True):
                st.finished = bool(last)
        return [st.text for st in states]

    # Incremental features. The preprocessor on the whole file does: pre-emphasis x[n] - p*x[n-1], a centred
    # STFT (n_fft//2 zeros each side), |.|^power, mel matmul, log(+guard), masking of frames >= len//hop.
    # Frame t covers padded samples [t*hop, t*hop + n_fft), so it is final once those samples have arrived;
    # the last frames (which see the right zero padding) are emitted only on `last`.
    def _append_features(self, state: StreamState, piece: np.ndarray, last: bool) -> None:
        f = self._feat
        hop, n_fft = int(f.hop_length), int(f.n_fft)
        pad = n_fft // 2
        x = torch.from_numpy(piece).to(self.device)
        if x.numel():
            if f.preemph is not None:
                prev = state.last_raw
                if prev is None:
                    pre = torch.cat((x[:1], x[1:] - f.preemph * x[:-1]))
                else:
                    full = torch.cat((prev, x))
                    pre = full[1:] - f.preemph * full[:-1]
            else:
                pre = x
            state.last_raw = x[-1:].clone()
            state.n_samples += x.numel()
        else:
            pre = x
        if state.padded is None:
            state.padded = torch.zeros(pad, dtype=torch.float32, device=self.device)
            state.padded_offset = 0
        parts = [state.padded, pre]
        if last:
            parts.append(torch.zeros(pad, dtype=torch.float32, device=self.device))
        state.padded = torch.cat(parts)
        end = state.padded_offset + state.padded.numel()  # padded samples available (absolute)
        total = (end - n_fft) // hop + 1 if end >= n_fft else 0  # frames computable from them
        if last:
            # The STFT has one more frame (index len//hop), which the preprocessor masks and whose length it
            # excludes. NeMo's CacheAwareStreamingAudioBuffer feeds that masked frame to the encoder (it takes
            # the tensor width, not the returned length), which changes the last encoder frames (measured up
            # to 0.07 abs) and so the last tokens. We stop at the valid length, as offline does.
            total = min(total, state.n_samples // hop)
        if total > state.n_frames:
            first = state.n_frames
            seg = state.padded[
                first * hop - state.padded_offset : (total - 1) * hop + n_fft - state.padded_offset
            ]
            new = self._mel(seg.unsqueeze(0))[0]  # [n_mels, total - first]
            state.feats = new if state.feats is None else torch.cat((state.feats, new), dim=1)
            state.n_frames = total
            # keep only the samples the next frame needs
            keep_from = total * hop
            state.padded = state.padded[keep_from - state.padded_offset :]
            state.padded_offset = keep_from

    def _mel(self, x: torch.Tensor) -> torch.Tensor:
        """FilterbankFeatures.forward on pre-emphasised, already padded samples (same ops, same order)."""
        f = self._feat
        spec = torch.stft(
            x,
            n_fft=f.n_fft,
            hop_length=f.hop_length,
            win_length=f.win_length,
            center=False,
            window=f.window.to(dtype=torch.float, device=x.device),
            return_complex=True,
        )
        guard = 0 if not f.use_grads else 1e-5
        spec = torch.view_as_real(spec)
        spec = torch.sqrt(spec.pow(2).sum(-1) + guard)
        if f.mag_power != 1.0:
            spec = spec.pow(f.mag_power)
        n = spec.size(-1)
        if n < _MIN_MEL_COLUMNS:  # MKL takes another (differently rounded) path for narrow matrices
            spec = torch.nn.functional.pad(spec, (0, _MIN_MEL_COLUMNS - n))
        spec = torch.matmul(f.fb.to(spec.dtype), spec)[..., :n]
        if f.log:
            if f.log_zero_guard_type == "add":
                spec = torch.log(spec + f.log_zero_guard_value_fn(spec))
            else:
                spec = torch.log(torch.clamp(spec, min=f.log_zero_guard_value_fn(spec)))
        return spec.to(torch.float32)

    def _next_chunks(self, state: StreamState, last: bool):
        """Encoder chunks ready now, cut like CacheAwareStreamingAudioBuffer(pad_and_drop_preencoded=False).

        Before `last`, a chunk is cut only when all its frames exist (then it is never the final one: `last`
        always adds at least one frame). On `last`, the tail is cut as the buffer does with one deliberate
        difference: the buffer silently drops a final chunk shorter than the subsampling factor (up to 70 ms
        of audio at lookahead 0); we feed it, which makes streaming token-identical to offline at every
        lookahead (measured) instead of losing the end of the last word.
        """
        cfg = self.model.encoder.streaming_cfg

        def pick(v, first: bool) -> int:
            return int(v[0] if first else v[1]) if isinstance(v, (list, tuple)) else int(v)

        n_mels = int(self.model.encoder._feat_in)
        while state.buffer_idx < state.n_frames:
            first = state.buffer_idx == 0
            chunk_size = pick(cfg.chunk_size, first)
            shift = pick(cfg.shift_size, first)
            if not last and state.n_frames < state.buffer_idx + max(chunk_size, shift):
                return
            lo = state.buffer_idx - state.feats_offset
            chunk = state.feats[:, lo : lo + chunk_size]
            if first and isinstance(cfg.pre_encode_cache_size, (list, tuple)):
                cache = torch.zeros(n_mels, int(cfg.pre_encode_cache_size[0]), device=self.device)
                zeros = 0
            else:
                pre = pick(cfg.pre_encode_cache_size, False)
                start = max(state.buffer_idx - pre, 0)
                cache = state.feats[:, start - state.feats_offset : lo]
                zeros = pre - cache.size(-1)
            added = cache.size(-1)
            x = torch.cat((cache, chunk), dim=-1)
            if zeros > 0:
                x = torch.cat((torch.zeros(n_mels, zeros, device=self.device), x), dim=-1)
                added += zeros
            remaining = (state.n_frames - state.buffer_idx + added) if last else x.size(-1)
            length = min(max(remaining, 0), x.size(-1))
            state.buffer_idx += shift
            keep_all = last and state.buffer_idx >= state.n_frames
            drop = 0 if state.step == 0 else int(cfg.drop_extra_pre_encoded)
            state.step += 1
            state.chunks.append(int(chunk.size(-1)))
            # frames older than the pre-encode cache of the next chunk are never read again
            keep = max(state.buffer_idx - pick(cfg.pre_encode_cache_size, False), 0)
            if keep > state.feats_offset:
                state.feats = state.feats[:, keep - state.feats_offset :]
                state.feats_offset = keep
            yield x.unsqueeze(0), torch.tensor([length], dtype=torch.long, device=self.device), drop, keep_all

    def _run_chunks(
        self, states: list[StreamState], chunk: torch.Tensor, length: torch.Tensor, drop: int, keep_all: bool
    ) -> None:
        """One encoder + prompt + RNNT decoder step for a batch of streams (row i = states[i]).

        This is `conformer_stream_step` for RNNT, op for op, except that the language prompt is one per row
        (NeMo's takes a single model-wide prompt) and caches and hypotheses are gathered from and scattered
        back to the streams. Caches are [layers, B, ...] for the first two tensors and [B] for the lengths.
        """
        caches = [s.caches for s in states]
        c1 = torch.cat([c[0] for c in caches], dim=1) if len(states) > 1 else caches[0][0]
        c2 = torch.cat([c[1] for c in caches], dim=1) if len(states) > 1 else caches[0][1]
        c3 = torch.cat([c[2] for c in caches], dim=0) if len(states) > 1 else caches[0][2]
        enc, enc_len, c1, c2, c3 = self.model.encoder.cache_aware_stream_step(
            processed_signal=chunk,
            processed_signal_length=length,
            cache_last_channel=c1,
            cache_last_time=c2,
            cache_last_channel_len=c3,
            keep_all_outputs=keep_all,
            drop_extra_pre_encoded=drop,
        )
        enc = self._apply_prompts(enc, [s.prompt_index for s in states])
        partial = [s.hypotheses[0] if s.hypotheses else None for s in states]
        hyps = self.model.decoding.rnnt_decoder_predictions_tensor(
            encoder_output=enc,
            encoded_lengths=enc_len,
            return_hypotheses=True,
            # None (not [None, ...]) when no stream has history: what conformer_stream_step passes first
            partial_hypotheses=None if all(p is None for p in partial) else partial,
        )
        for row, s in enumerate(states):
            s.caches = (c1[:, row : row + 1], c2[:, row : row + 1], c3[row : row + 1])
            s.hypotheses = [hyps[row]]
            s.pred_out = [hyps[row].y_sequence]
            s.text = self._restore(_text_of(hyps[row]), s.lang)

    def _apply_prompts(self, encoded: torch.Tensor, prompt_indices: list[int]) -> torch.Tensor:
        """PromptStreamingMixin._apply_prompt_to_encoded (same ops) with one prompt index per batch row."""
        m = self.model
        if not getattr(m, "concat", False):
            return encoded
        encoded = encoded.transpose(1, 2)  # (B, D, T) -> (B, T, D)
        batch, steps, _ = encoded.shape
        prompt = torch.zeros(batch, steps, m.num_prompts, dtype=encoded.dtype, device=encoded.device)
        idx = torch.tensor(prompt_indices, dtype=torch.long, device=encoded.device)
        prompt.scatter_(2, idx.view(batch, 1, 1).expand(-1, steps, -1), 1.0)
        out_dtype = encoded.dtype
        encoded = m.prompt_kernel(torch.cat([encoded, prompt], dim=-1)).to(out_dtype)
        return encoded.transpose(1, 2)


def _text_of(hyp: Any) -> str:
    text = hyp.text if hasattr(hyp, "text") else hyp
    return text if isinstance(text, str) else ""


def _as_mono_float32(audio: Any, i: int) -> np.ndarray:
    a = np.asarray(audio)
    if a.ndim != 1:
        raise ValueError(f"audio #{i}: expected a 1-D mono array of 16 kHz samples, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"audio #{i}: expected float samples in [-1, 1], got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)
