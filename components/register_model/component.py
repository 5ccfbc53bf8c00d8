"""kfp wrappers: register every evaluated candidate; promote only what passed the gate."""

from typing import NamedTuple

from kfp.dsl import Artifact, Input, Markdown, Model, Output

from components.common.kfp_base import component


@component
def register_model(candidate: Input[Model], evaluation: Input[Artifact], model_name: str, data_md5: str,
                   base_model_uri: str, git_commit: str, mlflow_tracking_uri: str, pipeline_run_id: str,
                   model_card: Output[Markdown], evaluation_run_id: str = ""
                   ) -> NamedTuple("Outputs", [("version", str), ("gate_passed", bool)]):
    """Register the candidate; its model card is also this step's Markdown output (the Kubeflow UI shows it)."""
    import os

    from components.register_model.core import register_candidate

    r = register_candidate(candidate.path, os.path.join(evaluation.path, "evaluation.json"), model_name,
                           data_md5=data_md5, base_model_uri=base_model_uri, commit=git_commit,
                           pipeline_run_id=pipeline_run_id, evaluation_run_id=evaluation_run_id,
                           tracking_uri=mlflow_tracking_uri or None)
    with open(model_card.path, "w", encoding="utf-8") as f:
        f.write(r.model_card)
    print(f"registered {r.model_name} v{r.version} aliases={r.aliases} gate_passed={r.gate_passed}")
    return (r.version, r.gate_passed)


@component
def promote_model(model_name: str, version: str, mlflow_tracking_uri: str, pipeline_run_id: str = "") -> str:
    from components.register_model.core import promote

    v = promote(model_name, version, tracking_uri=mlflow_tracking_uri or None, run_id=pipeline_run_id)
    print(f"{model_name} v{v} is now champion")
    return v
