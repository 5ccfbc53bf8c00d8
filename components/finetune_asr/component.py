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
    replay_manifest: str = "",
    replay_ratio: float = -1.0,
    scheduler: str = "",
    warmup_steps: int = -1,
    precision: str = "",
    batch_duration: float = 0.0,
    freeze: str = "none",
    train_att_context_size: str = "",
    devices: int = 0,
    strategy: str = "",
    checkpoint_every: int = 100,
    pipeline_run_id: str = "",
    work_root: str = "",
    max_unk_rate: float = 0.001,
    text_maps: str = "",
    replay_distill: float = 1.0,
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
        replay_manifest=replay_manifest,
        replay_ratio=replay_ratio,
        scheduler=scheduler,
        warmup_steps=warmup_steps,
        precision=precision,
        batch_duration=batch_duration,
        freeze=freeze,
        train_att_context_size=train_att_context_size,
        devices=devices,
        strategy=strategy,
        checkpoint_every=checkpoint_every,
        pipeline_run_id=pipeline_run_id,
        work_root=work_root,
        max_unk_rate=max_unk_rate,
        text_maps=text_maps,
        replay_distill=replay_distill,
    )
    model.metadata.update(
        {
            "steps": res.steps_done,
            "final_loss": res.final_loss,
            "sidecar": "model.json",
            "val_wer": res.val_wer,
        }
    )
    return (res.steps_done, res.final_loss, run_id)
