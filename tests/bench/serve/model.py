"""The model under test, the audio clips, and the in-process reference the served figures are divided by."""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
BENCH = Path(__file__).resolve().parents[1]  # tests/bench
EVAL_AUDIO = ROOT.parent / "shared" / "eval-audio"


def pick_model(
    work: Path, explicit: str | None, d_model: int | None = None, layers: int = 8
) -> tuple[Path, str]:
    if explicit:
        return Path(explicit), "given"
    if d_model:  # the demo model is 0.39 M parameters: per-step costs that don't scale with size dominate it
        sys.path.insert(0, str(BENCH))
        from bench_runtime import build_scaled_model

        return build_scaled_model(
            work, d_model, layers
        ), f"random weights, d_model {d_model} x {layers} layers"
    cached = sorted((ROOT / ".cache" / "base_model").glob("*/base.nemo"))
    if cached:
        return cached[-1], "cached demo base model"
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from test_asr_infer import build_tiny_model  # the fixture model the unit tests use

    return build_tiny_model(work / "tiny"), "tiny fixture model (random weights)"


def load_clips(langs: set[str], n: int, max_s: float) -> list[tuple[str, np.ndarray, str]]:
    """(name, 16 kHz mono float32, lang): real recordings cropped to max_s, else synthetic signals."""
    from components.common.audio import load_audio

    def key(lang: str) -> str | None:
        for k in (lang, lang.split("-")[0]):
            if k in langs:
                return k
        return None

    clips = []
    manifest = EVAL_AUDIO / "manifest.jsonl"
    if manifest.is_file():
        rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if key(r["lang"]) and r.get("duration", 0) >= 2.0]
        random.Random(0).shuffle(rows)
        for r in rows[:n]:
            audio = load_audio(EVAL_AUDIO / r["audio_filepath"])[: int(max_s * 16000)]
            clips.append((Path(r["audio_filepath"]).name, audio, key(r["lang"])))
    if not clips:
        rng = np.random.RandomState(0)
        lang = sorted(langs)[0]
        t = np.arange(int(max_s * 16000)) / 16000
        for i in range(n):
            sig = 0.3 * np.sin(2 * np.pi * (150 + 50 * i + 200 * t) * t) + 0.05 * rng.randn(t.size)
            clips.append((f"synthetic{i}", sig.astype(np.float32), lang))
    return clips


def split(audio: np.ndarray, step: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(audio[i : i + step]) for i in range(0, audio.size, step)]


def chunk_samples(asr, att: list[int]) -> int:
    """Samples per encoder step at `att` (first chunk aside): one request then advances the encoder once."""
    enc = asr.model.encoder
    enc.set_default_att_context_size(att)
    shift = enc.streaming_cfg.shift_size
    frames = int(shift[1] if isinstance(shift, (list, tuple)) else shift)
    return frames * int(asr.model.preprocessor.featurizer.hop_length)


def in_process(asr, clips, step: int, att: list[int], repeats: int) -> tuple[list[float], dict[str, str]]:
    """Per-chunk stream_step seconds over every clip (`repeats` passes), and each clip's final text."""
    lat, finals = [], {}
    for _ in range(repeats):
        for name, audio, lang in clips:
            state = asr.new_stream(lang, att)
            pieces = split(audio, step)
            for i, p in enumerate(pieces):
                t0 = time.perf_counter()
                text = asr.stream_step(state, p, last=i == len(pieces) - 1)
                lat.append(time.perf_counter() - t0)
            finals[name] = text
    return lat, finals


def in_process_batched(asr, clips, step: int, att: list[int], n: int) -> tuple[float, float]:
    """The server's own ceiling: `n` streams advanced together by `AsrModel.stream_step_batch` in this process
    (no Triton) -> (chunks/s, seconds per batched step). Streams are cut to the shortest clip so all n stay live.
    """
    streams = [clips[k % len(clips)] for k in range(n)]
    pieces = [split(audio, step) for _, audio, _ in streams]
    steps = min(len(p) for p in pieces)
    states = [asr.new_stream(lang, att) for _, _, lang in streams]
    t0 = time.perf_counter()
    for k in range(steps):
        asr.stream_step_batch(states, [p[k] for p in pieces], [k == steps - 1] * n)
    wall = time.perf_counter() - t0
    return n * steps / wall, wall / steps
