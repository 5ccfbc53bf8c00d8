"""kfp wrapper: export the registry's `alias` version of `model_name` into the Triton model repository."""

from typing import NamedTuple

from components.common.kfp_base import component


@component
def export_triton(
    model_name: str,
    settings: str = "",
    alias: str = "champion",
    att_context_size: str = "",
    mlflow_tracking_uri: str = "",
    offline_att_context_size: str = "",
    candidate_sha256: str = "",
) -> NamedTuple("Outputs", [("version", int), ("sha256", str)]):
    """`settings`: the step's record (components/export_triton/settings.py: `triton_repo`, ...) as `name=value`
    lines ('' = its defaults); its fields reach core.export_step by name. `model_name` (register_model's),
    `offline_att_context_size` (evaluate_wer's) and `mlflow_tracking_uri` (the run's) are other records'
    settings this step shares; `att_context_size` is the preflight's resolved lookahead. `candidate_sha256`
    (the pipeline's registered candidate, now champion): when the newest Triton version already serves it at
    these lookaheads, nothing is exported and MLflow is not even opened (an unchanged re-run)."""
    from components.common.logs import configure

    configure()  # this project's log lines as `[step] message` (components.common.logs)
    from components.common.settings import step_kwargs
    from components.export_triton.core import export_step
    from components.export_triton.settings import ExportSettings

    return export_step(
        model_name,
        alias=alias,
        att_context_size=att_context_size,
        offline_att_context_size=offline_att_context_size,
        mlflow_tracking_uri=mlflow_tracking_uri,
        candidate_sha256=candidate_sha256,
        **step_kwargs(ExportSettings, settings, "export_triton"),
    )
