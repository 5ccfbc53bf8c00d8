"""How evaluate_wer runs one model over the test utterances: offline in batches, and streaming through the
same `AsrModel` streaming code the Triton backend serves with, several utterances as concurrent streams
stepped together in one batch (token-identical to one stream at a time)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from components.common.asr_infer import AsrModel
from components.common.settings import parse_att_context_size


def transcribe_streaming(
    model: AsrModel, audio, lang: str, att_context_size: list[int] | None, piece_s: float
) -> str:
    """Stream one utterance alone in fixed pieces, as a client sends it to the server (reference path)."""
    n = max(int(round(piece_s * model.sample_rate)), 1)
    state = model.new_stream(lang, att_context_size)
    text = ""
    for start in range(0, max(len(audio), 1), n):
        text = model.stream_step(state, audio[start : start + n], last=start + n >= len(audio))
    return text


def transcribe_streaming_batch(
    model: AsrModel,
    audios: list,
    langs: list[str],
    att_context_size: list[int] | None,
    piece_s: float,
    n_streams: int = 16,
) -> list[str]:
    """Stream utterances as up to `n_streams` concurrent client streams, one piece each per step.

    Each step sends the next `piece_s` of every live stream through one `stream_step_batch` call, as the
    server's sequence batcher does; a stream that ends is replaced by the next utterance. The transcripts are
    token-identical to `transcribe_streaming` on each utterance alone.
    """
    if len(audios) != len(langs):
        raise ValueError(f"got {len(audios)} audios but {len(langs)} langs")
    if n_streams < 1:
        raise ValueError(f"n_streams must be >= 1, got {n_streams}")
    n = max(int(round(piece_s * model.sample_rate)), 1)
    out = [""] * len(audios)
    todo = deque(range(len(audios)))
    live: list[list] = []  # [utterance index, state, samples sent]
    while todo or live:
        while todo and len(live) < n_streams:
            i = todo.popleft()
            live.append([i, model.new_stream(langs[i], att_context_size), 0])
        pieces = [audios[i][pos : pos + n] for i, _, pos in live]
        lasts = [pos + n >= len(audios[i]) for i, _, pos in live]
        texts = model.stream_step_batch([st for _, st, _ in live], pieces, lasts)
        still = []
        for item, text, last in zip(live, texts, lasts, strict=True):
            if last:
                out[item[0]] = text
            else:
                item[2] += n
                still.append(item)
        live = still
    return out


@dataclass
class ModelRun:
    """One model's transcripts and what they cost."""

    hyps: dict[str, list[str]]  # {"offline"|"streaming": transcripts in utterance order}
    att_context_size: list[int]
    timings_s: dict[str, float]
    att_context_sizes: list[list[int]]  # every lookahead the model supports
    latency_ms: dict[str, float]  # {str(att): algorithmic latency}
    curve_hyps: dict[str, list[str]] = field(default_factory=dict)  # {str(att): streaming transcripts}
    offline_att_context_size: list[int] = field(default_factory=list)


def offline_att_context_size(supported: list[list[int]], value: str | list[int] | None = None) -> list[int]:
    """The lookahead offline transcription runs at: `value` when given (it must be one the model supports),
    else the most accurate supported one, i.e. the largest right context (then the largest left context)."""
    sizes = [list(a) for a in supported]
    if not sizes:
        raise ValueError("the model lists no att_context_size")
    wanted = parse_att_context_size(value) if not isinstance(value, list) else value
    if wanted is not None:
        if wanted not in sizes:
            raise ValueError(
                f"offline_att_context_size {wanted} is not supported by the model (supported: {sizes})"
            )
        return list(wanted)
    return max(sizes, key=lambda a: (a[1], a[0]))


def run_model(
    path: str,
    audios: list,
    langs: list[str],
    att: list[int] | None,
    batch_size: int,
    piece_s: float,
    n_streams: int = 16,
    curve: bool = False,
    offline_att: str | list[int] | None = None,
) -> ModelRun:
    """Load the `.nemo` at `path` and transcribe every utterance offline and streaming (and, with `curve`,
    streaming at every other supported lookahead), timing each."""
    model = AsrModel.load(path)
    unknown = sorted({lg for lg in langs if lg not in model.prompt_dictionary})
    if unknown:
        raise ValueError(f"{path}: language(s) {unknown} are not keys of the model's prompt_dictionary")
    att_used = list(att) if att is not None else model.default_att_context_size
    off_att = offline_att_context_size(model.att_context_sizes, offline_att)
    t0 = time.perf_counter()
    offline = model.transcribe(audios, langs, batch_size=batch_size, att_context_size=off_att)
    t1 = time.perf_counter()
    streaming = transcribe_streaming_batch(model, audios, langs, att_used, piece_s, n_streams)
    t2 = time.perf_counter()
    timings = {"offline": t1 - t0, "streaming": t2 - t1}
    run = ModelRun(
        hyps={"offline": offline, "streaming": streaming},
        att_context_size=att_used,
        timings_s=timings,
        att_context_sizes=model.att_context_sizes,
        latency_ms={str(a): model.latency_ms(a) for a in model.att_context_sizes},
        offline_att_context_size=off_att,
    )
    if curve:
        for a in model.att_context_sizes:
            run.curve_hyps[str(a)] = (
                streaming
                if a == att_used
                else transcribe_streaming_batch(model, audios, langs, a, piece_s, n_streams)
            )
        timings["latency_curve"] = time.perf_counter() - t2
    del model
    return run
