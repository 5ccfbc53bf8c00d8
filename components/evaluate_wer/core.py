"""evaluate_wer: score base vs candidate on the held-out split, offline and streaming, and apply the gate.

Streaming is scored through the same `AsrModel.stream_step` the Triton backend serves with, feeding audio in
server-sized pieces, at the `att_context_size` that will be deployed: the gate judges what users will get.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from components.common.asr_infer import AsrModel, load_audio
from components.common.io import atomic_write_text
from components.common.languages import parse_langs
from components.common.manifest import read_manifest
from components.common.wer import paired_bootstrap, score, utterance_scores
from components.evaluate_wer import gate as gate_mod
from components.evaluate_wer.report import format_table, render_html

MODES = ("streaming", "offline")
MODELS = ("base", "candidate")


@dataclass
class EvaluationResult:
    passed: bool
    decision: dict
    metrics: dict  # {model: {mode: {lang | "overall": Scores dict}}}
    delta_ci: dict  # {lang: BootstrapCI dict}
    evaluation_path: str
    decision_path: str
    report_path: str
    utterances_path: str
    timings_s: dict = field(default_factory=dict)


def _select(rows: list[dict], langs: list[str], max_per_lang: int | None, seed: int, where: str) -> list[dict]:
    by_lang: dict[str, list[dict]] = {}
    for r in rows:
        by_lang.setdefault(r["lang"], []).append(r)
    missing = [lg for lg in langs if lg not in by_lang]
    if missing:
        raise ValueError(f"{where}: no test utterances for language(s) {missing} (present: {sorted(by_lang)})")
    picked: list[dict] = []
    for lg in langs:
        items = sorted(by_lang[lg], key=lambda r: str(r.get("id", r["audio_filepath"])))
        if max_per_lang is not None and len(items) > max_per_lang:
            items = sorted(random.Random(f"{seed}:{lg}").sample(items, max_per_lang),
                           key=lambda r: str(r.get("id", r["audio_filepath"])))
        picked.extend(items)
    return picked


def transcribe_streaming(
    model: AsrModel, audio, lang: str, att_context_size: list[int] | None, piece_s: float
) -> str:
    """Stream one utterance in fixed pieces, as a client sends it to the server."""
    n = max(int(round(piece_s * model.sample_rate)), 1)
    state = model.new_stream(lang, att_context_size)
    text = ""
    for start in range(0, max(len(audio), 1), n):
        text = model.stream_step(state, audio[start : start + n], last=start + n >= len(audio))
    return text


def _run_model(path: str, audios: list, langs: list[str], att: list[int] | None, batch_size: int,
               piece_s: float) -> tuple[dict[str, list[str]], list[int], dict[str, float]]:
    model = AsrModel.load(path)
    unknown = sorted({lg for lg in langs if lg not in model.prompt_dictionary})
    if unknown:
        raise ValueError(f"{path}: language(s) {unknown} are not keys of the model's prompt_dictionary")
    att_used = list(att) if att is not None else model.default_att_context_size
    t0 = time.perf_counter()
    offline = model.transcribe(audios, langs, batch_size=batch_size, att_context_size=att_used)
    t1 = time.perf_counter()
    streaming = [transcribe_streaming(model, a, lg, att_used, piece_s) for a, lg in zip(audios, langs, strict=True)]
    t2 = time.perf_counter()
    del model
    return {"offline": offline, "streaming": streaming}, att_used, {"offline": t1 - t0, "streaming": t2 - t1}


def evaluate(
    base_model: str,
    candidate_model: str,
    manifest_dir: str,
    out_dir: str,
    target_langs: list[str],
    replay_langs: list[str],
    att_context_size: list[int] | None,
    policy: dict,
    batch_size: int = 16,
    max_utts_per_lang: int | None = None,
    seed: int = 0,
    piece_s: float = 0.16,
    n_resamples: int = 1000,
) -> EvaluationResult:
    """Score both models on `<manifest_dir>/test.jsonl` and write evaluation.json, decision.json,
    utterances.jsonl and report.html into `out_dir`."""
    gate_mod.validate_policy(policy)
    target_langs, replay_langs = parse_langs(target_langs), parse_langs(replay_langs)
    if not target_langs:
        raise ValueError("target_langs is empty: the gate needs at least one target language")
    langs = target_langs + [lg for lg in replay_langs if lg not in target_langs]
    for p in (base_model, candidate_model):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"model file not found: {p}")
    test_path = Path(manifest_dir) / "test.jsonl"
    if not test_path.is_file():
        raise FileNotFoundError(f"held-out manifest not found: {test_path}")
    rows = _select(read_manifest(test_path), langs, max_utts_per_lang, seed, str(test_path))
    audios = [load_audio(r["audio_filepath"]) for r in rows]
    utt_langs = [r["lang"] for r in rows]
    refs = [r["text"] for r in rows]

    hyps: dict[str, dict[str, list[str]]] = {}
    atts: dict[str, list[int]] = {}
    timings: dict[str, dict[str, float]] = {}
    for name, path in (("base", base_model), ("candidate", candidate_model)):
        hyps[name], atts[name], timings[name] = _run_model(path, audios, utt_langs, att_context_size,
                                                           batch_size, piece_s)
    if atts["base"] != atts["candidate"]:
        raise ValueError(f"base default att_context_size {atts['base']} differs from the candidate's "
                         f"{atts['candidate']}: pass att_context_size explicitly")

    metrics: dict = {m: {mode: {} for mode in MODES} for m in MODELS}
    per_utt: dict = {m: {} for m in MODELS}
    for m in MODELS:
        for mode in MODES:
            h = hyps[m][mode]
            per_utt[m][mode] = utterance_scores(refs, h, utt_langs)
            for lg in langs:
                ix = [i for i, x in enumerate(utt_langs) if x == lg]
                metrics[m][mode][lg] = score([refs[i] for i in ix], [h[i] for i in ix], [lg] * len(ix)).to_dict()
            metrics[m][mode]["overall"] = score(refs, h, utt_langs).to_dict()

    delta_ci: dict = {}
    for lg in langs:
        ix = [i for i, x in enumerate(utt_langs) if x == lg]
        b = per_utt["base"]["streaming"]
        c = per_utt["candidate"]["streaming"]
        ci = paired_bootstrap([b[i].errors for i in ix], [c[i].errors for i in ix],
                              [b[i].n_ref_words for i in ix], n_resamples=n_resamples, seed=seed)
        delta_ci[lg] = ci.__dict__.copy()

    summary = {
        "base_model": str(base_model),
        "candidate_model": str(candidate_model),
        "manifest": str(test_path),
        "att_context_size": atts["candidate"],
        "stream_piece_s": piece_s,
        "target_langs": target_langs,
        "replay_langs": replay_langs,
        "n_utts": len(rows),
        "metrics": metrics,
        "delta_ci": delta_ci,
        "timings_s": timings,
    }
    decision = gate_mod.decide(summary, policy)
    summary["decision"] = decision.to_dict()
    summary["policy"] = policy

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    utt_lines = []
    for i, r in enumerate(rows):
        rec = {"id": r.get("id", Path(r["audio_filepath"]).stem), "lang": r["lang"], "ref": r["text"],
               "duration": r.get("duration")}
        for m in MODELS:
            for mode in MODES:
                u = per_utt[m][mode][i]
                rec[f"{m}_{mode}"] = {"hyp": hyps[m][mode][i], "wer_raw": u.wer_raw, "wer_norm": u.wer_norm,
                                      "cer": u.cer, "errors": u.errors, "n_ref_words": u.n_ref_words}
        utt_lines.append(json.dumps(rec, ensure_ascii=False))
    paths = {k: out / f for k, f in (("evaluation", "evaluation.json"), ("decision", "decision.json"),
                                       ("utterances", "utterances.jsonl"), ("report", "report.html"))}
    atomic_write_text(paths["utterances"], "\n".join(utt_lines) + "\n")
    atomic_write_text(paths["report"], render_html(summary))
    atomic_write_text(paths["decision"], json.dumps(summary["decision"], indent=2, ensure_ascii=False))
    atomic_write_text(paths["evaluation"], json.dumps(summary, indent=2, ensure_ascii=False))
    print(format_table(summary), file=sys.stdout)
    return EvaluationResult(
        passed=decision.passed,
        decision=summary["decision"],
        metrics=metrics,
        delta_ci=delta_ci,
        evaluation_path=str(paths["evaluation"]),
        decision_path=str(paths["decision"]),
        report_path=str(paths["report"]),
        utterances_path=str(paths["utterances"]),
        timings_s=timings,
    )


def parse_att_context_size(value: str | list[int] | None) -> list[int] | None:
    """'[56,1]' / '56,1' / [56, 1] -> [56, 1]; '' or None -> None (the model's default)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            parsed = json.loads(value if value.strip().startswith("[") else f"[{value}]")
        except json.JSONDecodeError:
            raise ValueError(f"att_context_size: expected like [56,1], got {value!r}") from None
    else:
        parsed = value
    if not (isinstance(parsed, list) and len(parsed) == 2 and all(isinstance(v, int) for v in parsed)):
        raise ValueError(f"att_context_size: expected two integers like [56,1], got {value!r}")
    return parsed


def resolve_model(uri: str, dst_dir: str) -> str:
    """A local .nemo path, a directory holding model.nemo, or an MLflow `models:/name@alias` URI."""
    if uri.startswith("models:/") or uri.startswith("runs:/"):
        from registry.mlflow_adapter import resolve_model_uri  # lazy: MLflow only when a URI needs it

        return resolve_model_uri(uri, dst_dir)
    if os.path.isdir(uri):
        uri = os.path.join(uri, "model.nemo")
    if not os.path.isfile(uri):
        raise FileNotFoundError(f"model not found: {uri}")
    return uri


def run_step(
    manifests_dir: str,
    base_model_uri: str,
    candidate_dir: str,
    target_langs: str,
    replay_langs: str,
    att_context_size: str,
    gate_policy: str,
    out_dir: str,
    **kwargs,
) -> EvaluationResult:
    """The pipeline step with string parameters (what component.py and the CLI call)."""
    base = resolve_model(base_model_uri, os.path.join(out_dir, "_base_model"))
    cand = resolve_model(candidate_dir, os.path.join(out_dir, "_candidate_model"))
    return evaluate(
        base_model=base,
        candidate_model=cand,
        manifest_dir=manifests_dir,
        out_dir=out_dir,
        target_langs=parse_langs(target_langs),
        replay_langs=parse_langs(replay_langs),
        att_context_size=parse_att_context_size(att_context_size),
        policy=gate_mod.load_policy(gate_policy),
        **kwargs,
    )


def flat_metrics(result_metrics: dict, mode: str = "streaming") -> dict[str, float]:
    """{'candidate_streaming_wer_norm_bg-BG': 0.5, ...} for kfp Metrics / MLflow logging."""
    flat = {}
    for m, modes in result_metrics.items():
        for md, langs in modes.items():
            for lg, s in langs.items():
                for k in ("wer_norm", "wer_raw", "cer"):
                    flat[f"{m}_{md}_{k}_{lg}"] = float(s[k])
    return flat
