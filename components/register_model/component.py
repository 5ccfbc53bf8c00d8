"""kfp wrappers: register every evaluated candidate; promote only what passed the gate."""

from typing import NamedTuple

from kfp.dsl import Artifact, Input, Markdown, Model, Output

from components.common.kfp_base import component


@component
def register_model(
    candidate: Input[Model],
    evaluation: Input[Artifact],
    data_md5: str,
    base_model_uri: str,
    git_commit: str,
    mlflow_tracking_uri: str,
    pipeline_run_id: str,
    model_card: Output[Markdown],
    settings: str = "",
    data_rev: str = "",
    data_commit: str = "",
    base_model_resolved: str = "",
    base_model_sha256: str = "",
    parameters: str = "",
    evaluation_run_id: str = "",
) -> NamedTuple("Outputs", [("version", str), ("gate_passed", bool), ("sha256", str), ("champion", bool)]):
    """Register the candidate; its model card is also this step's Markdown output (the Kubeflow UI shows it).
    `settings`: the step's record (components/register_model/settings.py: `model_name`, ...) as `name=value`
    lines ('' = its defaults); its fields reach core.register_candidate by name. `data_md5`, `data_commit`
    (materialize_data), `base_model_resolved`, `base_model_sha256` and `git_commit` (resolve_base) are step
    outputs; `base_model_uri`, `data_rev` and `mlflow_tracking_uri` are the run's settings; `parameters` is
    every pipeline parameter as `name=value` lines. `champion`: the version already was champion (an unchanged
    re-run): promote_model then opens no registry."""
    from components.common.logs import configure

    configure()  # this project's log lines as `[step] message` (components.common.logs)
    import os

    from components.common.settings import step_kwargs
    from components.register_model.core import parse_parameters, register_candidate
    from components.register_model.settings import RegisterSettings

    if not data_md5 or not git_commit:
        raise ValueError(
            f"register_model: data_md5 {data_md5!r} / git_commit {git_commit!r}: lineage needs both"
        )
    params = parse_parameters(parameters)
    r = register_candidate(
        candidate.path,
        os.path.join(evaluation.path, "evaluation.json"),
        data_md5=data_md5,
        base_model_uri=base_model_uri,
        commit=git_commit,
        pipeline_run_id=pipeline_run_id,
        evaluation_run_id=evaluation_run_id,
        tracking_uri=mlflow_tracking_uri or None,
        run={
            "data_rev": data_rev,
            "data_commit": data_commit,
            "base_model_resolved": base_model_resolved,
            "base_model_sha256": base_model_sha256,
            "parameters": params,
            "environment": candidate.metadata.get("environment") or {},
        },
        **step_kwargs(RegisterSettings, settings, "register_model"),
    )
    with open(model_card.path, "w", encoding="utf-8") as f:
        f.write(r.model_card)
    print(f"registered {r.model_name} v{r.version} aliases={r.aliases} gate_passed={r.gate_passed}")
    return (r.version, r.gate_passed, r.sha256, r.champion)


@component
def promote_model(
    model_name: str,
    version: str,
    mlflow_tracking_uri: str,
    pipeline_run_id: str = "",
    already_champion: bool = False,
) -> str:
    from components.common.logs import configure

    configure()  # this project's log lines as `[step] message` (components.common.logs)
    from components.register_model.core import promote

    v = promote(
        model_name,
        version,
        tracking_uri=mlflow_tracking_uri or None,
        run_id=pipeline_run_id,
        already_champion=already_champion,
    )
    print(f"{model_name} v{v} is {'already' if already_champion else 'now'} champion")
    return v
