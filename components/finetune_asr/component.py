"""kfp wrapper of core.run_finetune_step: manifests dir in, model dir (model.nemo + model.json) out."""

from typing import NamedTuple

from kfp.dsl import Dataset, Input, Model, Output

from components.common.kfp_base import component


@component
def finetune_asr(
    manifests: Input[Dataset],
    base_model_uri: str,
    target_langs: str,
    replay_langs: str,
    replay_per_lang: int,
    max_steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    model: Output[Model],
    config: str = "",
) -> NamedTuple("FinetuneOutputs", [("steps", int), ("final_loss", float), ("mlflow_run_id", str)]):
    from components.finetune_asr.core import run_finetune_step

    res, run_id = run_finetune_step(
        manifests.path,
        base_model_uri,
        model.path,
        target_langs,
        replay_langs,
        replay_per_lang,
        max_steps,
        lr,
        batch_size,
        seed,
        config,
    )
    model.metadata.update({"steps": res.steps_done, "final_loss": res.final_loss, "sidecar": "model.json"})
    return (res.steps_done, res.final_loss, run_id)
