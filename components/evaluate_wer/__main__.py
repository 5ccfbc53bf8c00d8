"""CLI: python -m components.evaluate_wer --base X.nemo --candidate Y.nemo --manifests DIR --out DIR ..."""

from __future__ import annotations

import argparse
import sys

from components.common.logs import add_verbosity_flags, configure_from
from components.common.settings import SettingsError, add_arguments, from_arguments, to_mapping
from components.evaluate_wer.core import run_step
from components.evaluate_wer.settings import EvaluateSettings


def build_parser() -> argparse.ArgumentParser:
    """The step's arguments (the same names as run_step's, dashed)."""
    p = argparse.ArgumentParser(
        prog="python -m components.evaluate_wer",
        description="Score base vs candidate (streaming + offline) on test.jsonl and apply the gate.",
        epilog="Exit status: 0 gate passed, 3 gate failed (outputs written), 1 error.",
    )
    p.add_argument(
        "--base", required=True, help="base model: .nemo path, dir with model.nemo, or models:/name@alias"
    )
    p.add_argument("--candidate", required=True, help="candidate model: .nemo path or dir with model.nemo")
    p.add_argument("--manifests", required=True, help="build_manifest output dir (reads test.jsonl)")
    p.add_argument(
        "--out", required=True, help="output dir: evaluation.json, decision.json, report.html, ..."
    )
    p.add_argument("--target-langs", required=True, help="comma-separated, e.g. bg-BG")
    p.add_argument("--replay-langs", default="", help="comma-separated, e.g. el-GR,es-ES")
    # the step's settings, one flag per field of its record (the pipeline's `evaluate_wer` section)
    add_arguments(
        p,
        EvaluateSettings,
        aliases={"gate_policy": ["--policy"], "gate_floor_override_reason": ["--floor-override-reason"]},
    )
    p.add_argument(
        "--champion",
        default="",
        help="current champion to compare with, e.g. models:/name@champion (unset alias: none)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-utts-per-lang", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--piece-s", type=float, default=0.16, help="streaming piece size in seconds (client chunk)"
    )
    p.add_argument("--streams", type=int, default=16, help="utterances streamed concurrently in one batch")
    p.add_argument(
        "--no-latency-curve",
        action="store_true",
        help="skip the candidate's WER-vs-latency curve over every supported att_context_size",
    )
    p.add_argument(
        "--mlflow-tracking-uri",
        default="",
        help="where to log the run (default: $MLFLOW_TRACKING_URI, else .mlflow/mlflow.db; 'off': skip)",
    )
    p.add_argument("--pipeline-run-id", default="", help="tag the MLflow run with this pipeline run id")
    add_verbosity_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    configure_from(a)
    try:
        record = to_mapping(from_arguments(EvaluateSettings, a))
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    r = run_step(
        a.manifests,
        a.base,
        a.candidate,
        a.target_langs,
        a.replay_langs,
        out_dir=a.out,
        batch_size=a.batch_size,
        max_utts_per_lang=a.max_utts_per_lang,
        seed=a.seed,
        piece_s=a.piece_s,
        n_streams=a.streams,
        latency_curve=not a.no_latency_curve,
        mlflow_tracking_uri=a.mlflow_tracking_uri,
        pipeline_run_id=a.pipeline_run_id,
        champion_model_uri=a.champion,
        **record,
    )
    print(f"evaluation: {r.evaluation_path}\nreport: {r.report_path}")
    if r.mlflow_run_id:
        print(f"mlflow run: {r.mlflow_run_id}")
    return 0 if r.passed else 3


if __name__ == "__main__":
    sys.exit(main())
