"""evaluate_wer's MLflow run: params, every scalar worth a chart (also the KFP Metrics artifact), the
latency curve stepped by milliseconds, and the report files as artifacts."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from components.common.evaluation import EvaluationSummary
from components.evaluate_wer.golden import GOLDEN_DIR

if TYPE_CHECKING:
    from components.evaluate_wer.core import EvaluationResult


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
