"""kfp wrappers: the preflight (settings + data vs the base checkpoint, no retry) and the fine-tune itself.

Both take the step's settings as one `settings` text (components.common.settings): the pipeline builds it
from its parameters, so a new knob needs no edit here.
"""

from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.common.kfp_base import component


@component
def preflight_finetune(
    manifests: Input[Dataset],
    base_model_uri: str,
    settings: str,
    att_context_size: str,
    report: Output[Artifact],
    work_root: str = "",
) -> NamedTuple("PreflightOutputs", [("att_context_size", str), ("offline_att_context_size", str)]):
    from components.common.errors import exit_on_deterministic
    from components.common.logs import configure
    from components.finetune_asr.core import preflight_step

    configure()  # this project's log lines as `[step] message` (components.common.logs)

    try:
        rep = preflight_step(manifests.path, base_model_uri, settings, att_context_size, report.path, work_root)
    except BaseException as e:  # noqa: BLE001 (a deterministic failure exits with its own code)
        exit_on_deterministic("preflight_finetune", e)
    return (str(rep.att_context_size or ""), str(rep.offline_att_context_size or ""))


@component
def finetune_asr(
    manifests: Input[Dataset],
    base_model_uri: str,
    settings: str,
    model: Output[Model],
    mlflow_tracking_uri: str = "",
    devices: int = 0,
    strategy: str = "",
    work_root: str = "",
    pipeline_run_id: str = "",
) -> NamedTuple("FinetuneOutputs", [("steps", int), ("final_loss", float), ("mlflow_run_id", str)]):
    from components.common.errors import exit_on_deterministic
    from components.common.logs import configure
    from components.finetune_asr.core import run_finetune_step

    configure()  # this project's log lines as `[step] message` (components.common.logs)

    try:
        res, run_id = run_finetune_step(
            manifests.path, base_model_uri, model.path, settings, mlflow_tracking_uri=mlflow_tracking_uri,
            devices=devices, strategy=strategy, work_root=work_root, pipeline_run_id=pipeline_run_id,
        )
    except BaseException as e:  # noqa: BLE001
        exit_on_deterministic("finetune_asr", e)
    model.metadata.update(
        {"steps": res.steps_done, "final_loss": res.final_loss, "sidecar": "model.json", "val_wer": res.val_wer}
    )
    return (res.steps_done, res.final_loss, run_id)
