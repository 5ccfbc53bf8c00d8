"""kfp wrapper of evaluate_wer (logic in core.py): outputs the gate decision for dsl.If in the pipeline."""

from typing import NamedTuple

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.common.kfp_base import component


@component
def evaluate_wer(
    manifests: Input[Dataset],
    base_model_uri: str,
    candidate: Input[Model],
    target_langs: str,
    replay_langs: str,
    att_context_size: str,
    gate_policy: str,
    metrics: Output[Metrics],
    report: Output[HTML],
    evaluation: Output[Artifact],
    mlflow_tracking_uri: str = "",
    pipeline_run_id: str = "",
    model_name: str = "",
    champion_alias: str = "champion",
    offline_att_context_size: str = "",
    floor_override_reason: str = "",
) -> NamedTuple("Outputs", [("passed", bool), ("decision", str), ("mlflow_run_id", str)]):
    """Score base vs candidate and `model_name`'s current champion (streaming at att_context_size + offline at
    the largest lookahead; the candidate's WER-vs-latency curve), apply the gate policy (refused below the
    policy floor unless floor_override_reason), log the report to MLflow and every number as KFP Metrics."""
    import json  # noqa: E401
    import shutil
    from collections import namedtuple

    from components.common.logs import configure
    from components.evaluate_wer.core import run_step, summary_metrics

    configure()  # this project's log lines as `[step] message` (components.common.logs)

    r = run_step(
        manifests.path,
        base_model_uri,
        candidate.path,
        target_langs,
        replay_langs,
        att_context_size,
        gate_policy,
        out_dir=evaluation.path,
        mlflow_tracking_uri=mlflow_tracking_uri,
        pipeline_run_id=pipeline_run_id,
        champion_model_uri=f"models:/{model_name}@{champion_alias}" if model_name and champion_alias else "",
        offline_att_context_size=offline_att_context_size or None,
        floor_override_reason=floor_override_reason,
    )
    flat = summary_metrics(r)
    for k, v in flat.items():
        metrics.log_metric(k, v)
    with open(metrics.path, "w") as f:
        json.dump(flat, f, indent=2)
    shutil.copyfile(r.report_path, report.path)
    return namedtuple("Outputs", ["passed", "decision", "mlflow_run_id"])(
        r.passed, json.dumps(r.decision), r.mlflow_run_id
    )


@component
def release_gate(evaluation: Input[Artifact]) -> bool:
    """The gate as its own step: prints every rule and returns the decision the pipeline branches on.

    A separate single-output step (rather than dsl.If on evaluate_wer's named output) keeps the condition
    resolvable by kfp.local 2.17, whose local condition evaluator only resolves `<task>-Output` channels.
    """
    import os

    from components.common.evaluation import EvaluationSummary, strict_bool
    from components.common.logs import configure

    configure()  # this project's log lines as `[step] message` (components.common.logs)

    with open(os.path.join(evaluation.path, "evaluation.json"), encoding="utf-8") as f:
        decision = EvaluationSummary.from_json(f.read()).decision
    if decision is None:
        raise ValueError("evaluation.json: no decision (the gate has not decided)")
    passed = strict_bool(decision.passed, "evaluation.json: decision.passed")  # "false" is not a pass
    for rule in decision.rules:
        print(f"[{'pass' if rule.passed else 'FAIL'}] {rule.rule}: {rule.reason}")
    print(f"gate {'PASSED' if passed else 'FAILED'}")
    return passed
