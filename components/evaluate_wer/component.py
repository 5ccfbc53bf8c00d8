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
    metrics: Output[Metrics],
    report: Output[HTML],
    evaluation: Output[Artifact],
    settings: str = "",
    att_context_size: str = "",
    model_name: str = "",
    mlflow_tracking_uri: str = "",
    pipeline_run_id: str = "",
    champion_alias: str = "champion",
) -> NamedTuple("Outputs", [("passed", bool), ("decision", str), ("mlflow_run_id", str)]):
    """Score base vs candidate and `model_name`'s current champion (streaming at att_context_size + offline at
    the largest lookahead; the candidate's WER-vs-latency curve), apply the gate policy (refused below the
    policy floor unless gate_floor_override_reason), log the report to MLflow and every number as KFP Metrics.

    `settings`: the step's record (components/evaluate_wer/settings.py) as `name=value` lines ('' = its
    defaults); its fields reach core.run_step by name. `att_context_size`, when given, is the preflight's
    resolution of the record's (the run's, else the recipe's) and replaces it. `target_langs`/`replay_langs`
    (finetune_asr's) and `model_name` (register_model's) are other steps' settings this step shares."""
    import json  # noqa: E401
    import shutil
    from collections import namedtuple

    from components.common.logs import configure
    from components.common.settings import step_kwargs
    from components.evaluate_wer.core import run_step, summary_metrics
    from components.evaluate_wer.settings import EvaluateSettings

    configure()  # this project's log lines as `[step] message` (components.common.logs)

    kwargs = step_kwargs(EvaluateSettings, settings, "evaluate_wer")
    if att_context_size:
        kwargs["att_context_size"] = att_context_size
    r = run_step(
        manifests.path,
        base_model_uri,
        candidate.path,
        target_langs,
        replay_langs,
        out_dir=evaluation.path,
        mlflow_tracking_uri=mlflow_tracking_uri,
        pipeline_run_id=pipeline_run_id,
        champion_model_uri=f"models:/{model_name}@{champion_alias}" if model_name and champion_alias else "",
        **kwargs,
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
