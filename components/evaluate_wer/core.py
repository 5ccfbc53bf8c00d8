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

This module is the orchestration (`evaluate`, and `run_step`, the pipeline step); its parts live beside it:
transcribe.py (running a model offline and streaming), scoring.py (WER, bootstrap CIs, latency curve),
gate.py (the decision), report.py (table + HTML), golden.py (the parity set) and tracking.py (MLflow).
"""

from __future__ import annotations

import json
import logging
import os
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
from components.evaluate_wer import gate as gate_mod
from components.evaluate_wer import scoring
from components.evaluate_wer.golden import write_golden_set
from components.evaluate_wer.report import format_table, render_html
from components.evaluate_wer.scoring import MODES
from components.evaluate_wer.tracking import flat_metrics, log_to_mlflow, summary_metrics
from components.evaluate_wer.transcribe import (
    ModelRun,
    offline_att_context_size,
    run_model,
    transcribe_streaming,
    transcribe_streaming_batch,
)
from registry.resolve import resolve_model  # MLflow is imported only when a URI needs it

log = logging.getLogger(__name__)

__all__ = [  # what callers import from here (the parts' names re-exported for them)
    "EvaluationResult",
    "ModelRun",
    "evaluate",
    "flat_metrics",
    "log_to_mlflow",
    "offline_att_context_size",
    "parse_att_context_size",
    "run_step",
    "summary_metrics",
    "transcribe_streaming",
    "transcribe_streaming_batch",
]

SAMPLE_RATE = 16000  # load_audio(strict_rate=True) reads (and enforces) the manifest's 16 kHz


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
    rows = scoring.select_utterances(read_manifest(test_path), langs, max_utts_per_lang, seed, str(test_path))
    audios = [load_audio(r["audio_filepath"], strict_rate=True) for r in rows]
    utt_langs = [r["lang"] for r in rows]
    models = {
        "base": base_model,
        "candidate": candidate_model,
        **({"champion": champion_model} if champion_model else {}),
    }
    runs = {
        name: run_model(
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
        for name, path in models.items()
    }
    scoring.check_same_lookaheads(runs)
    record, per_utt = _summarise(
        models,
        test_path,
        rows,
        runs,
        float(sum(a.size for a in audios)) / SAMPLE_RATE,
        target_langs,
        replay_langs,
        policy,
        piece_s=piece_s,
        n_streams=n_streams,
        n_resamples=n_resamples,
        seed=seed,
        curve=latency_curve,
    )
    record.decision = gate_mod.decide(record, policy)
    record.policy, record.policy_floor = policy, PolicyFloor(**floor)
    return _publish(Path(out_dir), record, rows, per_utt, runs, audios)


def _publish(
    out: Path, record: EvaluationSummary, rows: list[dict], per_utt: dict, runs: dict, audios: list
) -> EvaluationResult:
    """Write the decided evaluation into `out`, print its table -> the step's result."""
    summary = record.to_dict()  # the report and the table read the JSON's shape
    hyps = {name: r.hyps for name, r in runs.items()}
    paths = _write_outputs(
        out, record, summary, rows, per_utt, hyps, audios, record.candidate_model, record.att_context_size
    )
    log.info("%s", format_table(summary))
    return EvaluationResult(
        passed=record.decision.passed,
        decision=summary["decision"],
        metrics=summary["metrics"],
        delta_ci=summary["delta_ci"],
        evaluation_path=str(paths["evaluation"]),
        decision_path=str(paths["decision"]),
        report_path=str(paths["report"]),
        utterances_path=str(paths["utterances"]),
        timings_s=summary["timings_s"],
        latency_curve=summary["latency_curve"],
        latency_curve_path=str(paths["latency_curve"]),
    )


def _summarise(
    models: dict[str, str],
    test_path: Path,
    rows: list[dict],
    runs: dict[str, ModelRun],
    audio_s: float,
    target_langs: list[str],
    replay_langs: list[str],
    policy: dict,
    *,
    piece_s: float,
    n_streams: int,
    n_resamples: int,
    seed: int,
    curve: bool,
) -> tuple[EvaluationSummary, dict]:
    """Score every run against the references -> (the evaluation summary record before the gate decides,
    per-utterance scores); `curve`: with the candidate's latency curve."""
    langs = target_langs + [lg for lg in replay_langs if lg not in target_langs]
    utt_langs, refs = [r["lang"] for r in rows], [r["text"] for r in rows]
    metrics, per_utt = scoring.score_models({n: r.hyps for n, r in runs.items()}, refs, utt_langs, langs)

    def deltas(ref: str) -> dict[str, DeltaCI]:
        cis = scoring.bootstrap_deltas(per_utt, ref, langs, utt_langs, policy, n_resamples, seed)
        return {lg: DeltaCI(**ci) for lg, ci in cis.items()}

    candidate = runs["candidate"]
    points = scoring.latency_curve(candidate, refs, utt_langs, langs) if curve else []
    champion = models.get("champion")
    record = EvaluationSummary(
        base_model=str(models["base"]),
        candidate_model=str(models["candidate"]),
        champion_model=str(champion) if champion else None,
        base_sha256=sha256_file(models["base"]),
        candidate_sha256=sha256_file(models["candidate"]),
        champion_sha256=sha256_file(champion) if champion else None,
        manifest=str(test_path),
        att_context_size=candidate.att_context_size,
        offline_att_context_size=candidate.offline_att_context_size,
        stream_piece_s=piece_s,
        target_langs=target_langs,
        replay_langs=replay_langs,
        n_utts=len(rows),
        audio_seconds=audio_s,
        stream_batch=n_streams,
        metrics=metrics,
        delta_ci=deltas("base"),
        champion_delta_ci=deltas("champion") if champion else None,
        latency_curve=[LatencyPoint(**p) for p in points],
        timings_s=scoring.timings_per_model(runs, audio_s),
    )
    return record, per_utt


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


def _write_outputs(
    out: Path,
    record,
    summary: dict,
    rows: list[dict],
    per_utt: dict,
    hyps: dict,
    audios: list,
    candidate_model: str,
    att: list[int],
) -> dict[str, Path]:
    """The golden set, utterances.jsonl, latency_curve.json, report.html, decision.json and evaluation.json
    (last: its presence means the evaluation finished) -> their paths by name."""
    out.mkdir(parents=True, exist_ok=True)
    # the golden set Triton must reproduce after each load (post-deploy parity: golden.py, sync_champion.py)
    candidate = AsrModel.load(candidate_model)
    utt_langs = [r["lang"] for r in rows]
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
    Each model is a .nemo, a folder holding one, or a `models:/` / `runs:/` URI (registry/resolve.py) resolved
    through the same tracking URI; URIs are downloaded to a temporary directory, never into `out_dir` (the
    evaluation artifact would otherwise carry a multi-GB checkpoint). `champion_model_uri` (e.g.
    `models:/<name>@champion`) is scored too when it resolves; an alias that is not set yet means no champion.
    """
    import tempfile

    if gate_floor_override_reason:  # the record's name of evaluate()'s floor_override_reason
        kwargs["floor_override_reason"] = gate_floor_override_reason
    tracking = mlflow_tracking_uri.strip()
    with tempfile.TemporaryDirectory(prefix="evaluate_wer_models_") as tmp:
        base = resolve_model(base_model_uri, os.path.join(tmp, "base"), tracking_uri=tracking)
        cand = resolve_model(candidate_dir, os.path.join(tmp, "candidate"), tracking_uri=tracking)
        champion = None
        if champion_model_uri.strip():
            try:
                champion = resolve_model(
                    champion_model_uri, os.path.join(tmp, "champion"), tracking_uri=tracking
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
