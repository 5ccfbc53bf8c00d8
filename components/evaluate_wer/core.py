"""evaluate_wer: score base vs candidate (and the current champion) on the held-out split, offline and
streaming, and apply the gate.

Streaming is scored through the same `AsrModel` streaming code the Triton backend serves with, feeding audio
in client-sized pieces, at the `att_context_size` that will be deployed: the gate judges what users will get.
Like the server, it runs several utterances as concurrent streams stepped together in one batch
(`AsrModel.stream_step_batch`, token-identical to one stream at a time); offline is batched too.

Offline means offline: whole utterances at the model's most accurate supported lookahead (the largest right
context of its `att_context_size` list, or `offline_att_context_size`), which is what the `asr_offline` Triton
model serves. So `streaming_offline_gap` compares two different operating points.

When a champion is given (`models:/<name>@champion` in the pipeline), it is scored on the same utterances and
the gate's `champion_not_worse` rule judges the paired-bootstrap CI of candidate - champion; with no champion
it compares with the base. evaluation.json names every model by its sha256 (the gate record binds it).

Besides the gate's numbers it measures the candidate's WER at every `att_context_size` the model supports
(the WER-vs-latency curve users pick their operating point from) and logs the report to MLflow.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from components.common.asr_infer import AsrModel
from components.common.audio import load_audio
from components.common.evaluation import DeltaCI, EvaluationSummary, LatencyPoint, PolicyFloor
from components.common.io import atomic_write_text, sha256_file
from components.common.languages import parse_langs
from components.common.manifest import read_manifest
from components.common.settings import parse_att_context_size
from components.common.tracking import is_off
from components.common.wer import paired_bootstrap, score, utterance_scores
from components.evaluate_wer import gate as gate_mod
from components.evaluate_wer.golden import GOLDEN_DIR, write_golden_set
from components.evaluate_wer.report import format_table, render_html

log = logging.getLogger(__name__)

MODES = ("streaming", "offline")
SAMPLE_RATE = 16000  # load_audio(strict_rate=True) reads (and enforces) the manifest's 16 kHz
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
    latency_curve: list = field(default_factory=list)
    latency_curve_path: str = ""
    mlflow_run_id: str = ""


def _select(
    rows: list[dict], langs: list[str], max_per_lang: int | None, seed: int, where: str
) -> list[dict]:
    by_lang: dict[str, list[dict]] = {}
    for r in rows:
        by_lang.setdefault(r["lang"], []).append(r)
    missing = [lg for lg in langs if lg not in by_lang]
    if missing:
        raise ValueError(
            f"{where}: no test utterances for language(s) {missing} (present: {sorted(by_lang)})"
        )
    picked: list[dict] = []
    for lg in langs:
        items = sorted(by_lang[lg], key=lambda r: str(r.get("id", r["audio_filepath"])))
        if max_per_lang is not None and len(items) > max_per_lang:
            items = sorted(
                random.Random(f"{seed}:{lg}").sample(items, max_per_lang),
                key=lambda r: str(r.get("id", r["audio_filepath"])),
            )
        picked.extend(items)
    return picked


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


def _run_model(
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


def _latency_curve(run: ModelRun, refs: list[str], utt_langs: list[str], langs: list[str]) -> list[dict]:
    """The candidate's streaming scores at every supported lookahead, lowest latency first."""
    points = []
    for a in run.att_context_sizes:
        h = run.curve_hyps[str(a)]
        per_lang = {}
        for lg in langs:
            ix = [i for i, x in enumerate(utt_langs) if x == lg]
            per_lang[lg] = score([refs[i] for i in ix], [h[i] for i in ix], [lg] * len(ix)).to_dict()
        per_lang["overall"] = score(refs, h, utt_langs).to_dict()
        points.append(
            {
                "att_context_size": list(a),
                "latency_ms": run.latency_ms[str(a)],
                "deployed": list(a) == run.att_context_size,
                "metrics": {
                    lg: {k: s[k] for k in ("wer_norm", "wer_raw", "cer", "n_utts")}
                    for lg, s in per_lang.items()
                },
            }
        )
    return sorted(points, key=lambda p: (p["latency_ms"], p["att_context_size"]))


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
    n_streams: int = 16,
    latency_curve: bool = True,
    champion_model: str | None = None,
    offline_att_context_size: str | list[int] | None = None,
    floor_override_reason: str = "",
) -> EvaluationResult:
    """Score both models (and `champion_model`, when given) on `<manifest_dir>/test.jsonl` and write
    evaluation.json, decision.json, utterances.jsonl and report.html into `out_dir`.

    `n_streams` utterances are streamed concurrently (one batch per step, as the server does);
    `latency_curve` also streams the candidate at every other supported att_context_size. A policy below the
    policy floor is refused unless `floor_override_reason` is given (it is recorded).
    """
    gate_mod.validate_policy(policy)
    floor = gate_mod.enforce_floor(policy, override_reason=floor_override_reason)
    target_langs, replay_langs, langs, test_path = _check_inputs(
        target_langs, replay_langs, (base_model, candidate_model, champion_model), manifest_dir
    )
    rows = _select(read_manifest(test_path), langs, max_utts_per_lang, seed, str(test_path))
    audios = [load_audio(r["audio_filepath"], strict_rate=True) for r in rows]
    utt_langs = [r["lang"] for r in rows]
    refs = [r["text"] for r in rows]

    paths = {
        "base": base_model,
        "candidate": candidate_model,
        **({"champion": champion_model} if champion_model else {}),
    }
    models = tuple(paths)
    runs = {
        name: _run_model(
            path,
            audios,
            utt_langs,
            att_context_size,
            batch_size,
            piece_s,
            n_streams,
            curve=latency_curve and name == "candidate",
            offline_att=offline_att_context_size,
        )
        for name, path in paths.items()
    }
    hyps = {name: r.hyps for name, r in runs.items()}
    atts = {name: r.att_context_size for name, r in runs.items()}
    audio_s = float(sum(a.size for a in audios)) / SAMPLE_RATE
    timings = _timings(runs, audio_s)
    _same_lookaheads(runs)
    metrics, per_utt = _score_models(hyps, refs, utt_langs, langs)
    delta_ci = _delta_ci(per_utt, "base", langs, utt_langs, policy, n_resamples, seed)
    champion_delta_ci = (
        _delta_ci(per_utt, "champion", langs, utt_langs, policy, n_resamples, seed)
        if "champion" in models
        else None
    )

    record = _record(
        base_model,
        candidate_model,
        champion_model,
        test_path,
        runs,
        piece_s,
        target_langs,
        replay_langs,
        len(rows),
        audio_s,
        n_streams,
        metrics,
        delta_ci,
        champion_delta_ci,
        _latency_curve(runs["candidate"], refs, utt_langs, langs) if latency_curve else [],
        timings,
    )
    decision = gate_mod.decide(record, policy)
    record.decision, record.policy, record.policy_floor = decision, policy, PolicyFloor(**floor)
    summary = record.to_dict()  # the report and the table read the JSON's shape

    paths = _write_outputs(
        Path(out_dir),
        record,
        summary,
        rows,
        per_utt,
        hyps,
        audios,
        utt_langs,
        candidate_model,
        atts["candidate"],
    )
    log.info("%s", format_table(summary))
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
        latency_curve=summary["latency_curve"],
        latency_curve_path=str(paths["latency_curve"]),
    )


def _record(
    base_model,
    candidate_model,
    champion_model,
    test_path,
    runs,
    piece_s,
    target_langs,
    replay_langs,
    n_utts,
    audio_s,
    n_streams,
    metrics,
    delta_ci,
    champion_delta_ci,
    curve,
    timings,
) -> EvaluationSummary:
    """The evaluation summary record (components/common/evaluation.py) before the gate decides."""
    return EvaluationSummary(
        base_model=str(base_model),
        candidate_model=str(candidate_model),
        champion_model=str(champion_model) if champion_model else None,
        base_sha256=sha256_file(base_model),
        candidate_sha256=sha256_file(candidate_model),
        champion_sha256=sha256_file(champion_model) if champion_model else None,
        manifest=str(test_path),
        att_context_size=runs["candidate"].att_context_size,
        offline_att_context_size=runs["candidate"].offline_att_context_size,
        stream_piece_s=piece_s,
        target_langs=target_langs,
        replay_langs=replay_langs,
        n_utts=n_utts,
        audio_seconds=audio_s,
        stream_batch=n_streams,
        metrics=metrics,
        delta_ci={lg: DeltaCI(**ci) for lg, ci in delta_ci.items()},
        champion_delta_ci=(
            {lg: DeltaCI(**ci) for lg, ci in champion_delta_ci.items()}
            if champion_delta_ci is not None
            else None
        ),
        latency_curve=[LatencyPoint(**p) for p in curve],
        timings_s=timings,
    )


def _check_inputs(target_langs, replay_langs, models, manifest_dir):
    """-> (target langs, replay langs, all langs, test.jsonl path); named errors for what is missing."""
    target_langs, replay_langs = parse_langs(target_langs), parse_langs(replay_langs)
    if not target_langs:
        raise ValueError("target_langs is empty: the gate needs at least one target language")
    langs = target_langs + [lg for lg in replay_langs if lg not in target_langs]
    for p in [m for m in models if m]:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"model file not found: {p}")
    test_path = Path(manifest_dir) / "test.jsonl"
    if not test_path.is_file():
        raise FileNotFoundError(f"held-out manifest not found: {test_path}")
    return target_langs, replay_langs, langs, test_path


def _timings(runs: dict, audio_s: float) -> dict:
    """Seconds per model and mode, and the evaluation speed: seconds of audio per second of compute."""
    timings: dict = {name: dict(r.timings_s) for name, r in runs.items()}
    for name in runs:
        for mode in MODES:
            timings[name][f"{mode}_rtfx"] = audio_s / max(timings[name][mode], 1e-9)
    return timings


def _same_lookaheads(runs: dict) -> None:
    """Every model was scored at the candidate's streaming and offline lookaheads (else the deltas lie)."""
    atts = {name: r.att_context_size for name, r in runs.items()}
    for name in runs:
        if atts[name] != atts["candidate"]:
            raise ValueError(
                f"{name} default att_context_size {atts[name]} differs from the candidate's "
                f"{atts['candidate']}: pass att_context_size explicitly"
            )
        if runs[name].offline_att_context_size != runs["candidate"].offline_att_context_size:
            raise ValueError(
                f"{name} offline lookahead {runs[name].offline_att_context_size} differs from the "
                f"candidate's {runs['candidate'].offline_att_context_size}: pass "
                "offline_att_context_size explicitly"
            )


def _score_models(hyps: dict, refs: list[str], utt_langs: list[str], langs: list[str]) -> tuple[dict, dict]:
    """-> (metrics[model][mode][lang or "overall"], per-utterance scores[model][mode])."""
    metrics: dict = {m: {mode: {} for mode in MODES} for m in hyps}
    per_utt: dict = {m: {} for m in hyps}
    for m in hyps:
        for mode in MODES:
            h = hyps[m][mode]
            per_utt[m][mode] = utterance_scores(refs, h, utt_langs)
            for lg in langs:
                ix = [i for i, x in enumerate(utt_langs) if x == lg]
                metrics[m][mode][lg] = score(
                    [refs[i] for i in ix], [h[i] for i in ix], [lg] * len(ix)
                ).to_dict()
            metrics[m][mode]["overall"] = score(refs, h, utt_langs).to_dict()
    return metrics, per_utt


def _delta_ci(
    per_utt: dict, ref: str, langs: list[str], utt_langs: list[str], policy: dict, n_resamples: int, seed: int
) -> dict:
    """Per language: paired-bootstrap CI of candidate - `ref` on the same utterances and resampling. The CI is
    of the delta the gate judges: the policy's mode and metric (default streaming wer_norm)."""
    ci_mode, ci_metric = policy.get("mode", "streaming"), policy.get("metric", "wer_norm")
    err_field, den_field = {
        "wer_norm": ("errors", "n_ref_words"),
        "wer_raw": ("raw_errors", "raw_ref_words"),
        "cer": ("char_errors", "n_ref_chars"),
    }[ci_metric]
    out = {}
    for lg in langs:
        ix = [i for i, x in enumerate(utt_langs) if x == lg]
        r, c = per_utt[ref][ci_mode], per_utt["candidate"][ci_mode]
        ci = paired_bootstrap(
            [getattr(r[i], err_field) for i in ix],
            [getattr(c[i], err_field) for i in ix],
            [getattr(r[i], den_field) for i in ix],
            n_resamples=n_resamples,
            seed=seed,
        )
        out[lg] = {**ci.__dict__, "mode": ci_mode, "metric": ci_metric}
    return out


def _write_outputs(
    out: Path,
    record,
    summary: dict,
    rows: list[dict],
    per_utt: dict,
    hyps: dict,
    audios: list,
    utt_langs: list[str],
    candidate_model: str,
    att: list[int],
) -> dict[str, Path]:
    """The golden set, utterances.jsonl, latency_curve.json, report.html, decision.json and evaluation.json
    (last: its presence means the evaluation finished) -> their paths by name."""
    out.mkdir(parents=True, exist_ok=True)
    # the golden set Triton must reproduce after each load (post-deploy parity: golden.py, sync_champion.py)
    candidate = AsrModel.load(candidate_model)
    write_golden_set(
        out, audios, utt_langs, lambda a, lg: candidate.transcribe(a, lg, att_context_size=att), att
    )
    utt_lines = []
    for i, r in enumerate(rows):
        rec = {
            "id": r.get("id", Path(r["audio_filepath"]).stem),
            "lang": r["lang"],
            "ref": r["text"],
            "duration": r.get("duration"),
        }
        for m in hyps:
            for mode in MODES:
                u = per_utt[m][mode][i]
                rec[f"{m}_{mode}"] = {
                    "hyp": hyps[m][mode][i],
                    "wer_raw": u.wer_raw,
                    "wer_norm": u.wer_norm,
                    "cer": u.cer,
                    "errors": u.errors,
                    "n_ref_words": u.n_ref_words,
                }
        utt_lines.append(json.dumps(rec, ensure_ascii=False))
    paths = {
        k: out / f
        for k, f in (
            ("evaluation", "evaluation.json"),
            ("decision", "decision.json"),
            ("utterances", "utterances.jsonl"),
            ("report", "report.html"),
            ("latency_curve", "latency_curve.json"),
        )
    }
    atomic_write_text(paths["utterances"], "\n".join(utt_lines) + "\n")
    atomic_write_text(
        paths["latency_curve"], json.dumps(summary["latency_curve"], indent=2, ensure_ascii=False)
    )
    atomic_write_text(paths["report"], render_html(summary))
    atomic_write_text(paths["decision"], json.dumps(summary["decision"], indent=2, ensure_ascii=False))
    atomic_write_text(paths["evaluation"], record.to_json())
    return paths


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
    mlflow_tracking_uri: str = "",
    pipeline_run_id: str = "",
    champion_model_uri: str = "",
    gate_floor_override_reason: str = "",
    **kwargs,
) -> EvaluationResult:
    """The pipeline step with string parameters (what component.py and the CLI call); the component passes
    its settings record's fields by name (components/evaluate_wer/settings.py).

    After the outputs are written, the run is logged to MLflow (`mlflow_tracking_uri`, else
    $MLFLOW_TRACKING_URI, else the repo's sqlite store; "off" skips it) and tagged with `pipeline_run_id`.
    Models given as MLflow URIs are downloaded to a temporary directory, never into `out_dir` (the evaluation
    artifact would otherwise carry a multi-GB checkpoint). `champion_model_uri` (e.g.
    `models:/<name>@champion`) is scored too when it resolves; an alias that is not set yet means no champion.
    """
    import tempfile

    if gate_floor_override_reason:  # the record's name of evaluate()'s floor_override_reason
        kwargs["floor_override_reason"] = gate_floor_override_reason
    with tempfile.TemporaryDirectory(prefix="evaluate_wer_models_") as tmp:
        base = resolve_model(base_model_uri, os.path.join(tmp, "base"))
        cand = resolve_model(candidate_dir, os.path.join(tmp, "candidate"))
        champion = None
        if champion_model_uri.strip():
            try:
                from components.common.tracking import get_client
                from registry.mlflow_adapter import resolve_model_uri

                uri = mlflow_tracking_uri.strip()
                client = get_client(None if is_off(uri) else uri)
                champion = resolve_model_uri(
                    champion_model_uri.strip(), os.path.join(tmp, "champion"), client
                )
            except LookupError:  # first run: no champion yet, the gate compares with the base
                log.info("%s: not set; no champion to compare with", champion_model_uri)
        result = evaluate(
            base_model=base,
            candidate_model=cand,
            manifest_dir=manifests_dir,
            out_dir=out_dir,
            target_langs=parse_langs(target_langs),
            replay_langs=parse_langs(replay_langs),
            att_context_size=parse_att_context_size(att_context_size),
            policy=gate_mod.load_policy(gate_policy),
            champion_model=champion,
            **kwargs,
        )
    if not is_off(mlflow_tracking_uri):
        result.mlflow_run_id = log_to_mlflow(result, mlflow_tracking_uri.strip(), pipeline_run_id)
    return result


def flat_metrics(result_metrics: dict, mode: str = "streaming") -> dict[str, float]:
    """{'candidate_streaming_wer_norm_bg-BG': 0.5, ...}: every model x mode x language x metric."""
    flat = {}
    for m, modes in result_metrics.items():
        for md, langs in modes.items():
            for lg, s in langs.items():
                for k in ("wer_norm", "wer_raw", "cer"):
                    flat[f"{m}_{md}_{k}_{lg}"] = float(s[k])
    return flat


def summary_metrics(result: EvaluationResult) -> dict[str, float]:
    """Every scalar worth a chart, flat (for the KFP Metrics artifact and MLflow): per model x mode x
    language WER/CER, the delta and its 95% CI per language, the gate outcome, the candidate's WER at every
    lookahead (`candidate_streaming_att56-1_wer_norm_bg-BG`) and the evaluation's speed (RTFx)."""
    flat = flat_metrics(result.metrics)
    for lg, d in result.delta_ci.items():
        for k in ("delta", "low", "high"):
            flat[f"delta_wer_norm_{k}_{lg}"] = float(d[k])
    flat["gate_passed"] = 1.0 if result.passed else 0.0
    for p in result.latency_curve:
        tag = "att" + "-".join(str(v) for v in p["att_context_size"])
        flat[f"candidate_streaming_{tag}_latency_ms"] = float(p["latency_ms"])
        for lg, sc in p["metrics"].items():
            flat[f"candidate_streaming_{tag}_wer_norm_{lg}"] = float(sc["wer_norm"])
    for m, t in result.timings_s.items():
        for k, v in t.items():
            if k.endswith("_rtfx"):
                flat[f"{m}_{k}"] = float(v)
    return flat


def log_to_mlflow(result: EvaluationResult, tracking_uri: str = "", pipeline_run_id: str = "") -> str:
    """One MLflow run `evaluate_wer` (experiment $MLFLOW_EXPERIMENT_NAME or nemotron-asr): params, every
    scalar of `summary_metrics`, the latency curve as `latency_curve_wer_norm_<lang>` stepped by latency in ms
    (MLflow draws it as a curve), and the report files as artifacts under `evaluation/`. Returns the run id."""
    from mlflow.entities import Metric, Param

    from components.common.tracking import experiment_id as find_experiment
    from components.common.tracking import get_client

    client = get_client(tracking_uri or None)
    experiment_id = find_experiment(client)
    with open(result.evaluation_path, encoding="utf-8") as f:
        summary = EvaluationSummary.from_json(f.read())
    policy = summary.policy or {}
    tags = {"step": "evaluate_wer", "gate_passed": str(result.passed).lower()}
    if pipeline_run_id:
        tags["pipeline_run_id"] = pipeline_run_id
    run_id = client.create_run(experiment_id, run_name="evaluate_wer", tags=tags).info.run_id
    try:
        params = {
            "base_model": summary.base_model,
            "candidate_model": summary.candidate_model,
            "manifest": summary.manifest,
            "att_context_size": str(summary.att_context_size),
            "target_langs": ",".join(summary.target_langs),
            "replay_langs": ",".join(summary.replay_langs),
            "n_utts": str(summary.n_utts),
            "stream_piece_s": str(summary.stream_piece_s),
            "stream_batch": str(summary.stream_batch),
            "gate_mode": str(policy.get("mode", "streaming")),
            "gate_metric": str(policy.get("metric", "wer_norm")),
        }
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in summary_metrics(result).items()]
        for p in result.latency_curve:
            for lg, sc in p["metrics"].items():
                metrics.append(
                    Metric(
                        f"latency_curve_wer_norm_{lg}",
                        float(sc["wer_norm"]),
                        now,
                        int(round(p["latency_ms"])),
                    )
                )
        for i in range(0, len(metrics), 1000):
            client.log_batch(
                run_id,
                metrics=metrics[i : i + 1000],
                params=[Param(k, str(v)[:500]) for k, v in params.items()] if i == 0 else [],
            )
        for path in (
            result.evaluation_path,
            result.decision_path,
            result.report_path,
            result.utterances_path,
            result.latency_curve_path,
        ):
            if path and os.path.isfile(path):
                client.log_artifact(run_id, path, "evaluation")
        golden = Path(result.evaluation_path).parent / GOLDEN_DIR
        if golden.is_dir():
            client.log_artifacts(run_id, str(golden), f"evaluation/{GOLDEN_DIR}")
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id
