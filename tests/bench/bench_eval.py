"""Evaluation speed, by measurement (a script, not a test: it prints ratios and asserts nothing about time).

1. Offline: RTFx (seconds of audio per second of compute) of the evaluator's offline path
   (`AsrModel.transcribe`, batched `forward(prompt_indices=...)` + greedy RNNT) divided by NeMo's own
   `model.transcribe()` on the same model, the same utterances (in memory, one `target_lang` per call since
   NeMo takes one per call) and the same batch size. Target: >= 1.0.
2. Streaming: 16 utterances streamed concurrently through `AsrModel.stream_step_batch` (what evaluate_wer and
   the server do) divided by the same 16 streamed one at a time through `AsrModel.stream_step`, at the
   deployment att_context_size, in the same client-sized pieces. Both must give the same text (checked).

Model and data: the cached trained base model (.cache/base_model/*/base.nemo) and its held-out manifest
(.cache/base_model/manifests/test.jsonl) when present (`make demo` creates them), else the tiny fixture model of
tests/unit/test_asr_infer.py with synthetic audio.

    python tests/bench/bench_eval.py [--model X.nemo --manifest test.jsonl] [--threads 1] [--repeats 2]

Writes outputs/bench/eval.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _best(fn, repeats: int) -> tuple[float, object]:
    """Best wall time of `repeats` runs after one warm-up run, and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def _data(args) -> tuple[str, list[np.ndarray], list[str], str]:
    from components.common.audio import load_audio
    from components.common.manifest import read_manifest

    cached = sorted(ROOT.glob(".cache/base_model/*/base.nemo"))
    manifest = Path(args.manifest) if args.manifest else ROOT / ".cache/base_model/manifests/test.jsonl"
    model = args.model or (str(cached[0]) if cached else "")
    if model and manifest.is_file():
        rows = read_manifest(manifest)
        by_lang: dict[str, list[dict]] = {}
        for r in rows:
            by_lang.setdefault(r["lang"], []).append(r)
        per_lang = max(args.max_utts // max(len(by_lang), 1), 1)
        rows = [r for lg in sorted(by_lang) for r in by_lang[lg][:per_lang]]
        return (
            model,
            [load_audio(r["audio_filepath"]) for r in rows],
            [r["lang"] for r in rows],
            str(manifest),
        )
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from test_asr_infer import _audio, build_tiny_model

    model = args.model or str(build_tiny_model(Path(tempfile.gettempdir()) / "bench_eval_tiny_model"))
    rng = np.random.default_rng(0)
    langs = ["el-GR", "bg-BG", "es-ES"]
    audios = [_audio(int(rng.integers(16000, 48000)), seed) for seed in range(args.max_utts)]
    return model, audios, [langs[i % 3] for i in range(len(audios))], "synthetic (tiny fixture model)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help=".nemo (default: cached base model, else the tiny fixture)")
    p.add_argument("--manifest", help="test.jsonl (default: the cached base model's)")
    p.add_argument("--att-context-size", default="[56,1]", help="streaming lookahead (pipelines/params.yaml)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per measurement (best is kept)")
    p.add_argument("--max-utts", type=int, default=96, help="offline utterances (spread over the languages)")
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--piece-s", type=float, default=0.16, help="client piece size for streaming")
    p.add_argument("--out", default=str(ROOT / "outputs" / "bench"))
    a = p.parse_args(argv)
    os.environ["ASR_THREADS"] = str(a.threads)

    import torch

    torch.set_num_threads(a.threads)
    import logging

    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.ERROR)  # transcribe() logs per call; the numbers below are the output

    from components.common.asr_infer import AsrModel
    from components.evaluate_wer.core import (
        parse_att_context_size,
        transcribe_streaming,
        transcribe_streaming_batch,
    )

    model_path, audios, langs, source = _data(a)
    att = parse_att_context_size(a.att_context_size)
    asr = AsrModel.load(model_path, device="cpu")
    audio_s = sum(x.size for x in audios) / asr.sample_rate
    print(
        f"model: {model_path}\ndata: {source}: {len(audios)} utterances, {audio_s:.1f} s audio; "
        f"threads={a.threads}, batch={a.batch_size}, att_context_size={att}"
    )

    # ---- offline: evaluator vs NeMo transcribe() (same model object, same encoder context, same batch size)
    default_att = asr.default_att_context_size
    groups: dict[str, list[int]] = {}
    for i, lg in enumerate(langs):
        groups.setdefault(lg, []).append(i)

    def ours():
        return asr.transcribe(audios, langs, batch_size=a.batch_size, att_context_size=default_att)

    def nemo():
        out = [""] * len(audios)
        with asr._lock:
            asr._use_att(default_att)
            for lg, ix in groups.items():
                hyps = asr.model.transcribe(
                    [audios[i] for i in ix], batch_size=a.batch_size, target_lang=lg, verbose=False
                )
                asr.model.eval()  # transcribe() leaves submodules in train mode (reference/nemo-on-cpu.md §7.3)
                for i, h in zip(ix, hyps, strict=True):
                    out[i] = h.text if hasattr(h, "text") else str(h)
        return out

    t_ours, text_ours = _best(ours, a.repeats)
    t_nemo, text_nemo = _best(nemo, a.repeats)
    same = sum(x == y for x, y in zip(text_ours, text_nemo, strict=True))
    rtfx_ours, rtfx_nemo = audio_s / t_ours, audio_s / t_nemo
    print(
        f"offline  evaluator RTFx {rtfx_ours:8.1f} ({t_ours:.2f} s) | NeMo transcribe() RTFx {rtfx_nemo:8.1f} "
        f"({t_nemo:.2f} s) | ratio {rtfx_ours / rtfx_nemo:.2f}x (target >= 1.0) | same text {same}/{len(audios)}"
    )

    # ---- streaming: 16 concurrent streams in one batch vs one at a time
    n = min(a.streams, len(audios))
    s_audios, s_langs = audios[:: max(len(audios) // n, 1)][:n], langs[:: max(len(audios) // n, 1)][:n]
    s_audio_s = sum(x.size for x in s_audios) / asr.sample_rate

    def one_by_one():
        return [
            transcribe_streaming(asr, x, lg, att, a.piece_s) for x, lg in zip(s_audios, s_langs, strict=True)
        ]

    def batched():
        return transcribe_streaming_batch(asr, s_audios, s_langs, att, a.piece_s, n_streams=n)

    t_single, text_single = _best(one_by_one, a.repeats)
    t_batch, text_batch = _best(batched, a.repeats)
    identical = text_single == text_batch
    print(
        f"stream   {n} streams batched RTFx {s_audio_s / t_batch:8.1f} ({t_batch:.2f} s) | one at a time RTFx "
        f"{s_audio_s / t_single:8.1f} ({t_single:.2f} s) | ratio {t_single / t_batch:.2f}x | "
        f"token-identical {identical}"
    )

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "model": model_path,
        "data": source,
        "threads": a.threads,
        "batch_size": a.batch_size,
        "att_context_size": att,
        "n_utts": len(audios),
        "audio_s": audio_s,
        "offline": {
            "evaluator_s": t_ours,
            "nemo_transcribe_s": t_nemo,
            "evaluator_rtfx": rtfx_ours,
            "nemo_transcribe_rtfx": rtfx_nemo,
            "ratio": rtfx_ours / rtfx_nemo,
            "same_text": same,
        },
        "streaming": {
            "n_streams": n,
            "audio_s": s_audio_s,
            "batched_s": t_batch,
            "one_at_a_time_s": t_single,
            "ratio": t_single / t_batch,
            "token_identical": identical,
            "piece_s": a.piece_s,
        },
    }
    (out / "eval.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    if not identical:
        print("ERROR: batched streaming differs from one stream at a time", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
