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
    base_model_sha256: str = "",
    mlflow_tracking_uri: str = "",
) -> NamedTuple("PreflightOutputs", [("att_context_size", str), ("offline_att_context_size", str)]):
    from components.common.logs import configure

    configure()  # this project's log lines as `[step] message` (components.common.logs)
    from components.common.errors import exit_on_deterministic
    from components.finetune_asr.core import preflight_step

    try:
        rep = preflight_step(
            manifests.path,
            base_model_uri,
            settings,
            att_context_size,
            report.path,
            work_root,
            mlflow_tracking_uri,
        )
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
    data_md5: str = "",
    base_model_sha256: str = "",
    code_version: str = "",
) -> NamedTuple("FinetuneOutputs", [("steps", int), ("final_loss", float), ("mlflow_run_id", str)]):
    """`data_md5`, `base_model_sha256` and `code_version` make the step's cache key exactly (data, base, every
    training setting, code): the pipeline caches this step, so an unchanged re-run trains nothing. They are
    recorded on the model artifact; the pipeline passes no run id here (it would change the key every run)."""
    from components.common.logs import configure

    configure()  # this project's log lines as `[step] message` (components.common.logs)
    from components.common.errors import exit_on_deterministic
    from components.common.version import environment
    from components.finetune_asr.core import run_finetune_step

    try:
        res, run_id = run_finetune_step(
            manifests.path,
            base_model_uri,
            model.path,
            settings,
            mlflow_tracking_uri=mlflow_tracking_uri,
            devices=devices,
            strategy=strategy,
            work_root=work_root,
            pipeline_run_id=pipeline_run_id,
        )
    except BaseException as e:  # noqa: BLE001
        exit_on_deterministic("finetune_asr", e)
    model.metadata.update(
        {
            "steps": res.steps_done,
            "final_loss": res.final_loss,
            "sidecar": "model.json",
            "val_wer": res.val_wer,
            "data_md5": data_md5,
            "base_model_sha256": base_model_sha256,
            "code_version": code_version,
            "environment": environment(),
        }  # where it trained (the lineage's; reproduce compares it)
    )
    return (res.steps_done, res.final_loss, run_id)
